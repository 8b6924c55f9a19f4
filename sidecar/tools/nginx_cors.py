"""CORS for browser clients, answered by nginx from the policy's `cors:`.

The maps turn the request's Origin into the values of the CORS response
headers; `security_headers.conf` adds them to every response (an empty value
adds nothing, so without `cors:` or for another origin no CORS header is sent).
A preflight (OPTIONS with Access-Control-Request-Method) is answered in the
/v1/ location before anything else runs: 204 with the allowed methods and
headers for an allowed origin, 403 in JSON for any other.
"""

from __future__ import annotations

import re

from sidecar.policy.compiled import Policy

METHODS = "GET, POST, DELETE, OPTIONS"   # DELETE: a stored response (/v1/responses/{id})
# Added to every response; the values come from the maps below.
HEADERS = (("Access-Control-Allow-Origin", "$hir_cors_origin"),
           ("Access-Control-Allow-Credentials", "$hir_cors_credentials"),
           ("Access-Control-Expose-Headers", "$hir_cors_expose"),
           ("Access-Control-Allow-Methods", "$hir_cors_methods"),
           ("Access-Control-Allow-Headers", "$hir_cors_headers"),
           ("Access-Control-Max-Age", "$hir_cors_max_age"),
           ("Vary", "$hir_cors_vary"))
REFUSED = ('{"error":{"message":"this origin may not call the router from a browser",'
           '"type":"invalid_request_error","param":null,"code":"cors_origin_not_allowed"}}')


def _q(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def maps(policy: Policy) -> list[str]:
    cors = policy.cors
    out = ["# CORS (policy `cors:`): empty values add no header."]
    if cors is None:
        out += [f"map $scheme {var} {{ default \"\"; }}" for _, var in HEADERS]
        out.append('map $scheme $hir_cors_preflight { default ""; }')
        return out
    if cors.origins == ("*",):
        out.append('map $http_origin $hir_cors_origin { default "*"; "" ""; }')
    else:
        # Case-sensitive regexes: nginx matches plain map keys ignoring case, and a
        # browser compares the echoed origin with its own byte for byte.
        out.append("map $http_origin $hir_cors_origin {")
        out.append('    default "";')
        out += [f"    {_q('~^' + re.escape(origin) + '$')} $http_origin;" for origin in cors.origins]
        out.append("}")
    out += ["# A preflight: OPTIONS with Access-Control-Request-Method; refused if the origin is not allowed.",
            'map "$request_method|$http_access_control_request_method|$hir_cors_origin" $hir_cors_preflight {',
            '    default "";', '    "~^OPTIONS\\|[^|]+\\|$" refused;', '    "~^OPTIONS\\|[^|]+\\|." 1;', "}",
            f'map $hir_cors_preflight $hir_cors_methods {{ 1 "{METHODS}"; default ""; }}',
            f'map $hir_cors_preflight $hir_cors_headers {{ 1 {_q(", ".join(cors.headers))}; default ""; }}',
            f'map $hir_cors_preflight $hir_cors_max_age {{ 1 "{cors.max_age}"; default ""; }}',
            f'map $hir_cors_origin $hir_cors_expose {{ "" ""; default {_q(", ".join(cors.expose))}; }}',
            'map $hir_cors_origin $hir_cors_credentials { "" ""; default '
            f'{_q("true" if cors.credentials else "")}; }}',
            # A listed origin is echoed, so caches must key on Origin; "*" needs no Vary.
            f'map $scheme $hir_cors_vary {{ default {_q("" if cors.origins == ("*",) else "Origin")}; }}']
    return out


def preflight(indent: str) -> list[str]:
    """The /v1/ location's first lines: answer a preflight at the edge."""
    return [f"{indent}if ($hir_cors_preflight = 1) {{ return 204; }}",
            f"{indent}if ($hir_cors_preflight = refused) {{ return 403 '{REFUSED}'; }}"]
