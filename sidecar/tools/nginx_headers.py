"""What crosses the edge in headers, rendered for nginx from one list each.

- Every response: the security header set, the request id, the constitutional
  hash and the policy version (`security_headers_conf`).
- To an endpoint: only what the protocol needs, the request id and the
  policy's `pass_headers.request` (`endpoint_request_headers`); nginx's
  `proxy_pass_request_headers off` drops the rest.
- From an endpoint: lua mode keeps only `RESPONSE_ALLOWED` plus the policy's
  `pass_headers.response` (a header filter in nginx/hir.lua). Stock nginx has no
  allow-list for upstream headers, so there every header the router sets itself
  and the known-dangerous ones are hidden (`HIDDEN_FROM_ENDPOINTS`) instead.
"""

from __future__ import annotations

from sidecar.edge.feedback import DEFAULT_COOLDOWN_S
from sidecar.tools import nginx_cors, nginx_errors

HSTS = "max-age=63072000; includeSubDomains"
SECURITY = (
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-store"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Cross-Origin-Embedder-Policy", "require-corp"),
    ("Strict-Transport-Security", "$hir_hsts"),
    ("X-Request-Id", "$hir_request_id"),
    ("X-Constitutional-Hash", "$hir_constitutional_hash"),
    ("X-Policy-Version", "$hir_policy_version"),
)
# The router's own per-hop headers (set by add_header in the forwarding locations).
ROUTE = ("X-Route-Endpoint", "X-Route-Tier", "X-Route-Model", "X-Route-Hop", "X-Route-Failover",
         "RateLimit-Policy", "RateLimit")
# Upstream response headers a client may see without the policy naming them:
# framing and the one hint a client needs to back off.
RESPONSE_ALLOWED = ("content-type", "content-length", "content-encoding", "transfer-encoding",
                    "connection", "keep-alive", "retry-after")
# Headers that disclose the server software, framework or tracing behind an
# endpoint: the OWASP Secure Headers Project's list of headers to remove
# (ci/headers_remove.json, updated 2024-07-19; its "Server" nginx hides already).
DISCLOSING = (
    "Host-Header", "K-Proxy-Request", "Liferay-Portal", "OracleCommerceCloud-Version", "Pega-Host",
    "Powered-By", "Product", "SourceMap", "X-AspNet-Version", "X-AspNetMvc-Version",
    "X-Atmosphere-error", "X-Atmosphere-first-request", "X-Atmosphere-tracking-id",
    "X-B3-ParentSpanId", "X-B3-Sampled", "X-B3-SpanId", "X-B3-TraceId", "X-BEServer",
    "X-CF-Powered-By", "X-CMS", "X-CalculatedBETarget", "X-Cocoon-Version", "X-Content-Encoded-By",
    "X-DiagInfo", "X-Envoy-Attempt-Count", "X-Envoy-External-Address", "X-Envoy-Internal",
    "X-Envoy-Original-Dst-Host", "X-Envoy-Upstream-Service-Time", "X-FEServer", "X-Framework",
    "X-Generated-By", "X-Generator", "X-Jitsi-Release", "X-Kubernetes-PF-FlowSchema-UI",
    "X-Kubernetes-PF-PriorityLevel-UID", "X-LiteSpeed-Cache", "X-LiteSpeed-Purge", "X-LiteSpeed-Tag",
    "X-LiteSpeed-Vary", "X-Litespeed-Cache-Control", "X-Mod-Pagespeed", "X-Nextjs-Cache",
    "X-Nextjs-Matched-Path", "X-Nextjs-Page", "X-Nextjs-Redirect", "X-OWA-Version",
    "X-Old-Content-Length", "X-OneAgent-JS-Injection", "X-Page-Speed", "X-Php-Version",
    "X-Powered-By", "X-Powered-By-Plesk", "X-Powered-CMS", "X-Redirect-By", "X-Server-Powered-By",
    "X-SourceFiles", "X-SourceMap", "X-Turbo-Charged-By", "X-Umbraco-Version", "X-Varnish-Backend",
    "X-Varnish-Server", "X-dtAgentId", "X-dtHealthCheck", "X-dtInjectedServlet", "X-ruxit-JS-Agent",
)
_HIDDEN = tuple(name for name, _ in SECURITY) + ROUTE + (
    "X-Route-Decision", "X-Route-Auth", "X-Route-Path", "X-Route-Fallback", "X-Route-Fallback2",
    "X-Route-Rule", "X-Route-Tenant", "X-Route-Features", "X-Route-Shadow", "X-Route-Shadow-Auth", "X-Route-Model-At", "X-Route-Strip-Usage",
    "X-Route-Cache-Key", "X-Route-Cache-Refresh", "X-Cache-Status",
    "Set-Cookie", "Access-Control-Allow-Origin", "Access-Control-Allow-Credentials",
    "Access-Control-Allow-Methods", "Access-Control-Allow-Headers", "Access-Control-Expose-Headers",
    "Access-Control-Max-Age", "X-Powered-By", "X-AspNet-Version", "X-AspNetMvc-Version",
    "X-Runtime", "X-Version", "X-Backend-Server", "X-Served-By", "Via", "Server-Timing",
    "Alt-Svc", "NEL", "Report-To", "Reporting-Endpoints", "Permissions-Policy", "Clear-Site-Data",
    "X-XSS-Protection", "X-Permitted-Cross-Domain-Policies", "Expect-CT", "Public-Key-Pins",
    "Timing-Allow-Origin", "Refresh", "Link", "WWW-Authenticate", "Proxy-Authenticate",
    "Location", "Content-Location",   # the router never redirects a client elsewhere
    "Accept-Ranges", "Content-Range",  # an answer is never served in byte ranges (max_ranges 0)
    "CF-Ray", "CF-Cache-Status", "Openai-Organization", "Openai-Processing-Ms", "Openai-Version",
    "X-Groq-Id", "X-Groq-Region", "X-Openrouter-Provider", "X-Mock-Internal",
    "X-Ratelimit-Limit-Requests", "X-Ratelimit-Limit-Tokens", "X-Ratelimit-Remaining-Requests",
    "X-Ratelimit-Remaining-Tokens", "X-Ratelimit-Reset-Requests", "X-Ratelimit-Reset-Tokens",
    # The operator's provider account: its ids and its rate-limit state (OpenAI,
    # Anthropic, Azure, Envoy-fronted servers). Lua mode's allow-list drops them all.
    "Openai-Project", "Request-Id", "Anthropic-Organization-Id",
    *(f"Anthropic-Ratelimit-{kind}-{what}" for kind in ("Requests", "Tokens", "Input-Tokens",
                                                        "Output-Tokens")
      for what in ("Limit", "Remaining", "Reset")),
    "X-Envoy-Upstream-Service-Time", "Apim-Request-Id", "X-Ms-Region", "X-Ms-Client-Request-Id",
    "X-Ms-Rai-Invoked", "Azureml-Model-Session",
)
HIDDEN_FROM_ENDPOINTS = tuple(dict.fromkeys(_HIDDEN + DISCLOSING, None))   # each name once


def security_headers_conf() -> str:
    """add_header lines for every response; included wherever a location has
    add_header of its own (add_header does not inherit into such a location)."""
    lines = ["# Rendered by sidecar.tools.nginx_headers: the secure-headers set for a JSON API",
             "# (OWASP), the request id, the hash and the policy version, on every response."]
    lines += [f'add_header {name} "{value}" always;' for name, value in SECURITY]
    lines.append("# CORS: values from the policy's maps; empty (no header) without `cors:`.")
    lines += [f'add_header {name} "{value}" always;' for name, value in nginx_cors.HEADERS]
    return "\n".join(lines) + "\n"


def endpoint_request_headers(policy, indent: str) -> list[str]:
    """What a provider receives besides Host, Authorization and the body's own
    Content-Length (set per hop / by nginx)."""
    lines = [f"{indent}proxy_pass_request_headers off;",
             f"{indent}proxy_set_header Content-Type $hir_forward_content_type;",
             f"{indent}proxy_set_header Accept $http_accept;",
             # The router reads usage from the answer (and may cache it), so it asks for
             # the bytes uncoded: with no Accept-Encoding at all, RFC 9110 lets a server
             # answer in any coding, and a gzipped answer's usage would go uncounted.
             f"{indent}proxy_set_header Accept-Encoding identity;",
             f"{indent}proxy_set_header X-Request-Id $hir_request_id;",
             # Anthropic Messages needs its version header (and betas) end to end.
             f"{indent}proxy_set_header anthropic-version $http_anthropic_version;",
             f"{indent}proxy_set_header anthropic-beta $http_anthropic_beta;"]
    lines += [f"{indent}proxy_set_header {name} $http_{name.replace('-', '_')};"
              for name in policy.pass_request_headers]
    return lines


def hide_from_endpoints(indent: str) -> list[str]:
    return [f"{indent}proxy_hide_header {name};" for name in HIDDEN_FROM_ENDPOINTS]


def _raw_response(status: int, reason: str) -> str:
    """A whole HTTP/1.1 response as one nginx string, for the two cases where nginx
    writes bytes without framing of its own (see raw_response_maps)."""
    payload = nginx_errors.body(status)
    head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json",
            f"Content-Length: {len(payload)}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in SECURITY if name != "Strict-Transport-Security"]
    return "\\r\\n".join(head) + "\\r\\n$hir_hsts_line\\r\\n" + payload.replace('"', '\\"')


def raw_response_maps() -> list[str]:
    """$hir_unframed_response: what lua mode writes instead of an endpoint's bytes
    that are not HTTP (nginx would relay them raw, as HTTP/0.9). $hir_http09_response:
    the answer to an HTTP/0.9 request, framed as HTTP/1.1 so it carries a status
    and the headers (HTTP/0.9 itself has neither)."""
    return [f'map $https $hir_hsts {{ on "{HSTS}"; default ""; }}',
            # A client's own X-Request-Id is kept when it is a safe token, so it can
            # quote it; anything else gets nginx's random one.
            'map $http_x_request_id $hir_request_id { "~^[A-Za-z0-9._:-]{8,128}$" $http_x_request_id; '
            'default $request_id; }',
            f'map $https $hir_hsts_line {{ on "Strict-Transport-Security: {HSTS}\\r\\n"; default ""; }}',
            'map $server_protocol $hir_http09 { "" 1; default 0; }',
            # A provider is told the media type the router read, not the client's
            # parameters: the sidecar took "application/json; charset=utf-16" as the
            # UTF-8 JSON it routed on, and a provider that honoured the charset would
            # read other text (a request without a body keeps having no type).
            'map $content_type $hir_forward_content_type { "" ""; default "application/json"; }',
            # The Retry-After a client gets when the endpoints rate-limited it: the
            # endpoint's when it is one (seconds, or an HTTP date), else the seconds the
            # router itself keeps a 429-ing endpoint out of rotation. Never a provider's
            # "nan" or other text a client's SDK would have to survive.
            'map $upstream_http_retry_after $hir_client_retry_after { '
            '"~^[0-9]{1,9}([.][0-9]{1,6})?$" $upstream_http_retry_after; '
            '"~^[A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT$" '
            f'$upstream_http_retry_after; default {DEFAULT_COOLDOWN_S:g}; }}',
            f'map $scheme $hir_unframed_response {{ default "{_raw_response(502, "Bad Gateway")}"; }}',
            f"map $scheme $hir_timeout_body {{ default '{nginx_errors.body(408)}'; }}",
            f'map $scheme $hir_http09_response {{ default '
            f'"{_raw_response(505, "HTTP Version Not Supported")}"; }}']


def response_allow_list(policy) -> str:
    """The comma-separated names lua mode keeps (it parses this once per value)."""
    return ",".join(RESPONSE_ALLOWED + policy.pass_response_headers)
