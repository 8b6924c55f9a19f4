"""The forwarding locations: one per hop of a decision (the chosen endpoint,
then its fallbacks), per tier (each has its own first-byte deadline), buffered
and streaming, and what failing open checks. Every hop sends only the allowed
request headers and hides the router's own response headers from the endpoint
(sidecar.tools.nginx_headers). `opts` is the renderer's NginxOptions.

Where a failed hop goes next depends on the next endpoint's tier and on whether
the failed endpoint fails over on that status, so each `error_page` target is a
map variable (`next_hop_maps`, rendered into upstreams.conf): nginx evaluates a
named-location target at run time."""

from __future__ import annotations

from pathlib import Path

from sidecar.edge import feedback
from sidecar.policy.compiled import REDIRECTS, SERVER_ERRORS, Policy
from sidecar.tools import nginx_cache, nginx_headers


NGINX_DIR = Path(__file__).resolve().parents[2] / "nginx"
# The hops of one request: the decision's endpoint, then its fallbacks.
HOPS = (("", "route_endpoint", "route_auth"),
        ("_fb1", "route_fallback", "route_fallback_auth"),
        ("_fb2", "route_fallback2", "route_fallback2_auth"))
FLAVOURS = (("buffered", False), ("stream", True))
# Where a request ends when its chain cannot go on, by the failed hop's status.
# An endpoint's own 3xx and 5xx never reach the client: the body may be a CDN's HTML
# page or name the provider's internals. 522 and 524 are Cloudflare's timeouts.
TIMEOUTS = frozenset({504, 522, 524})
STOP = {401: "@upstream_credentials_refused", 403: "@upstream_credentials_refused",
        429: "@endpoint_429",
        **{status: "@upstream_timeout" if status in TIMEOUTS else "@upstream_failed"
           for status in sorted(REDIRECTS | SERVER_ERRORS)}}
DEFAULT_READ_TIMEOUT_MS = 300_000


def location_name(flavour: str, tier: str, hop: int) -> str:
    return f"@{flavour}_{tier}" + (f"_fb{hop}" if hop else "")


def hop_locations(policy: Policy, opts) -> list[str]:
    lines = []
    for flavour, streaming in FLAVOURS:
        for tier in policy.tiers:
            for hop in range(len(HOPS)):
                lines += hop_location(policy, tier, flavour, hop, opts, streaming)
    return lines


def failover_groups(policy: Policy) -> list[tuple[tuple[int, ...], str, tuple[str, ...]]]:
    """The statuses in STOP grouped by where a chain that cannot go on ends and by
    which endpoints do not fail over on them: (statuses, stop, staying). A group
    shares one map and one error_page line, so the 33 statuses cost a few maps."""
    groups: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    for status, stop in STOP.items():
        staying = tuple(e.name for e in policy.endpoints if status not in e.failover_on)
        groups.setdefault((stop, staying), []).append(status)
    return [(tuple(statuses), stop, staying) for (stop, staying), statuses in groups.items()]


def next_hop_maps(policy: Policy) -> list[str]:
    """For hops 0 and 1, per flavour and group of failover statuses: the location of
    the next hop (by the next endpoint's tier), or the answer that ends the chain
    when there is no next hop or the failed endpoint does not fail over on them."""
    out = []
    for hop in range(len(HOPS) - 1):
        this, after = HOPS[hop][1], HOPS[hop + 1][1]
        for flavour, _ in FLAVOURS:
            for statuses, stop, staying in failover_groups(policy):
                out.append(f'map "${this}|${after}" $hir_next{hop}_{flavour}_{statuses[0]} {{')
                out.append(f"    default {stop};")
                if staying:
                    out.append(f'    "~^({"|".join(staying)})\\|" {stop};')
                for e in policy.endpoints:
                    out.append(f'    "~\\|{e.name}$" {location_name(flavour, e.tier.name, hop + 1)};')
                out.append("}")
    return out


def hop_location(policy: Policy, tier, flavour: str, hop: int, opts, streaming: bool) -> list[str]:
    suffix, source, auth = HOPS[hop]
    lines = [f"        location {location_name(flavour, tier.name, hop)} {{"]
    if hop == 0 and opts.mode == "stock":
        # Copy the decision out of the sidecar's response before the next proxy_pass
        # replaces $upstream_http_*.
        for var, header in (("route_endpoint", "endpoint"), ("route_auth", "auth"),
                            ("route_path", "path"), ("route_fallback", "fallback"),
                            ("route_fallback_auth", "fallback_auth"),
                            ("route_fallback2", "fallback2"),
                            ("route_fallback2_auth", "fallback2_auth"),
                            ("route_ratelimit", "ratelimit"),
                            ("route_ratelimit_policy", "ratelimit_policy"),
                            ("route_rule", "rule"), ("route_tenant", "tenant"),
                            ("route_features", "features"), ("route_shadow", "shadow"),
                            ("route_shadow_auth", "shadow_auth"),
                            ("route_cache_key", "cache_key"), ("route_cache_refresh", "cache_refresh")):
            lines.append(f"            set ${var} $upstream_http_x_route_{header};")
    if hop > 0:
        # The failed hop's Retry-After (its endpoint's cooldown), before proxy_pass replaces it.
        lines.append(f"            set $route_retry_after{hop} $upstream_http_retry_after;")
    # Which hop served, for the feedback log (the last hop location that ran wins).
    lines += [f"            set $route_hop {hop};", f"            set $route_served ${source};",
              f"            set $route_served_tier $hop{suffix}_tier;",
              f"            set $route_max_stream_s {tier.max_stream_s};"]
    if streaming:
        lines.append("            set $route_stream 1;")
    if hop > 0 and opts.mode == "lua":
        lines.append(f"            rewrite_by_lua_block {{ require('hir').splice_fallback({hop}) }}")
    if hop == 0 and policy.shadow is not None:
        lines.append("            mirror /_hir/shadow;  # the sampled share also goes to the shadow endpoint")
    timeout = tier.first_byte_timeout_ms or DEFAULT_READ_TIMEOUT_MS
    lines.append(f"            proxy_read_timeout {timeout}ms;  # first byte (then between reads)")
    nexts = None if hop == len(HOPS) - 1 else {
        statuses: f"$hir_next{hop}_{flavour}_{statuses[0]}"
        for statuses, _, _ in failover_groups(policy)}
    return lines + forward(policy, opts, hop, streaming, nexts) + ["        }"]


def forward(policy: Policy, opts, hop: int, streaming: bool,
             nexts: dict[tuple[int, ...], str] | None) -> list[str]:
    """The body of a location that forwards to hop `hop` of the decision and, on
    a 429 or 5xx (from the endpoint or nginx), goes where `nexts` says for that
    status (None: the chain is over, answer in JSON). Other 4xx pass through."""
    suffix, source, auth = HOPS[hop]
    pad = "            "
    lines = [f"{pad}include {NGINX_DIR / 'endpoint_proxy.conf'};",
             f"{pad}include {opts.run_dir}/security_headers.conf;",
             f"{pad}add_header X-Route-Endpoint ${source} always;",
             f"{pad}add_header X-Route-Tier $hop{suffix}_tier always;",
             f"{pad}add_header X-Route-Model $hop{suffix}_model always;",
             f"{pad}add_header X-Route-Hop {hop} always;  # 0: the first choice; 1, 2: fallbacks",
             # The router's time before forwarding (Kong's X-Kong-Proxy-Latency, as the
             # W3C header): what a load test subtracts nothing from to see the router's cost.
             f"{pad}add_header Server-Timing \"router;dur=$hir_overhead_ms\" always;",
             f"{pad}add_header RateLimit-Policy $route_ratelimit_policy always;",
             f"{pad}add_header RateLimit $route_ratelimit always;",
             *nginx_headers.endpoint_request_headers(policy, pad),
             *nginx_headers.hide_from_endpoints(pad),
             f"{pad}proxy_set_header Host $hop{suffix}_host;",
             # The credential in the header the endpoint takes (an empty one is not sent).
             f"{pad}proxy_set_header Authorization $hop{suffix}_authorization;",
             f"{pad}proxy_set_header x-api-key $hop{suffix}_x_api_key;",
             f"{pad}proxy_ssl_name $hop{suffix}_sni;"]
    if opts.mode == "lua":
        lines += [f"{pad}header_filter_by_lua_block {{ require('hir').upstream_headers() }}",
                  f"{pad}body_filter_by_lua_block {{ require('hir').upstream_body() }}"]
    if streaming:
        lines += [f"{pad}proxy_buffering off;", f"{pad}proxy_cache off;"]
    else:
        lines += nginx_cache.location_lines(policy, source, f"hop{suffix}_model", pad)
    pages = nexts or {statuses: stop for statuses, stop, _ in failover_groups(policy)}
    # Only 401/403 (the endpoint refused the router's credential), 429 and the 5xx:
    # this location is reached with the body read, so nginx raises nothing else here,
    # and an error_page for another 4xx would swallow the endpoint's own answer.
    lines += [f"{pad}error_page {' '.join(map(str, statuses))} = {target};"
              for statuses, target in pages.items()]
    return lines + [f"{pad}proxy_pass $hop{suffix}_target$route_path;"]


SHADOW = ("_shadow", "route_shadow", "route_shadow_auth")


def shadow_relay_socket(opts) -> str:
    return f"{opts.run_dir}/shadow.sock"


def shadow_http_blocks(policy: Policy, opts) -> list[str]:
    """What the shadow needs at the http level: the relay's upstream and cache zone."""
    if policy.shadow is None:
        return []
    return [f"proxy_cache_path {opts.run_dir}/shadow levels=1 keys_zone=hir_shadow:1m max_size=64m "
            "inactive=10s use_temp_path=off;",
            f"upstream hir_shadow_relay {{ server unix:{shadow_relay_socket(opts)}; }}"]


def shadow_location(policy: Policy, opts) -> list[str]:
    """The mirror subrequest: to the shadow relay when the decision sampled this
    request, else nothing. nginx gives a mirror subrequest only its answer's
    headers (`header_only`), closes that connection there, and finishes the client's
    request (its log line, the next request on its connection) only then. Sent
    straight to the endpoint, a stream was cut after its first bytes and the
    endpoint stopped generating. Through the relay (shadow_relay_server) the mirror
    is done at the shadow's first byte, as before, and the relay reads the answer
    to its end."""
    if policy.shadow is None:
        return []
    pad = "            "
    return ["        location = /_hir/shadow {", f"{pad}internal;",
            f'{pad}if ($route_shadow = "") {{ return 204; }}', f"{pad}access_log off;",
            f"{pad}proxy_http_version 1.1;",
            *nginx_headers.endpoint_request_headers(policy, pad),
            # What the relay forwards and logs by: it shares no variables with this request.
            f"{pad}proxy_set_header X-Hir-Shadow $route_shadow;",
            f"{pad}proxy_set_header X-Hir-Shadow-Auth $route_shadow_auth;",
            f"{pad}proxy_set_header X-Hir-Shadow-Features $route_features;",
            f"{pad}proxy_set_header X-Hir-Shadow-Stream $route_stream;",
            f"{pad}proxy_set_header X-Hir-Shadow-Model-At $route_model_at;",
            f"{pad}proxy_pass http://hir_shadow_relay$route_path;", "        }"]


def shadow_relay_server(policy: Policy, opts) -> list[str]:
    """A server on a unix socket that forwards a mirrored request to the shadow
    endpoint and reads the answer to its end after the mirror has hung up: nginx
    keeps reading an answer it is caching, so it is "cached" under the request's own
    id, which nothing ever looks up (files removed once unused for 10 s). Its log
    line is the shadow's: outcome, whole-answer time and size (tokens are estimated
    from it: the answer never passes a body filter), never health, limits or the
    routed cost."""
    if policy.shadow is None:
        return []
    pad = "            "
    logs = [f"        access_log syslog:server={feedback.syslog_server(address)},nohostname,tag=hir "
            "hir_shadow;" for address in opts.feedback_sockets] or ["        access_log off;"]
    return ["    server {", f"        listen unix:{shadow_relay_socket(opts)};", *logs,
            "        location / {",
            f"{pad}set $route_shadow $http_x_hir_shadow;",
            f"{pad}set $route_shadow_auth $http_x_hir_shadow_auth;",
            *([f"{pad}rewrite_by_lua_block {{ require('hir').splice_shadow() }}"] if opts.mode == "lua" else []),
            f"{pad}include {NGINX_DIR / 'endpoint_proxy.conf'};",
            f"{pad}proxy_cache hir_shadow;", f"{pad}proxy_cache_methods GET HEAD POST;",
            f"{pad}proxy_cache_key $request_id;", f"{pad}proxy_cache_bypass 1;",
            f"{pad}proxy_cache_valid any 1s;",
            # Whatever the endpoint says about caching, the answer is read to its end
            # (endpoint_proxy.conf already ignores the X-Accel-* headers).
            f"{pad}proxy_ignore_headers Cache-Control Expires Set-Cookie Vary;",
            f"{pad}proxy_ignore_client_abort on;",
            *nginx_headers.endpoint_request_headers(policy, pad),
            f"{pad}proxy_set_header Host $hop_shadow_host;",
            f"{pad}proxy_set_header Authorization $hop_shadow_authorization;",
            f"{pad}proxy_set_header x-api-key $hop_shadow_x_api_key;",
            f"{pad}proxy_ssl_name $hop_shadow_sni;",
            f"{pad}proxy_read_timeout 300s;",
            f"{pad}proxy_pass $hop_shadow_target$request_uri;", "        }", "    }"]


def fail_open_checks() -> list[str]:
    """With no sidecar, nginx itself refuses what the hash check would (keys:
    `check` refuses require_key with an open path)."""
    out = []
    for status, code, message in ((428, "hash_required", "the X-Constitutional-Hash header is required"),
                                  (412, "hash_mismatch", "the X-Constitutional-Hash header does not "
                                   "match the active hash"),
                                  (400, "invalid_hash", "the X-Constitutional-Hash header must be 16 "
                                   "lowercase hex digits")):
        body = ('{"error":{"message":"%s","type":"invalid_request_error","param":null,"code":"%s"}}'
                % (message, code))
        out.append(f"            if ($hir_hash_refusal = {status}) {{ return {status} '{body}'; }}")
    return out
