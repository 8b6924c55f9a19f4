"""The forwarding locations: one per hop of a decision (the chosen endpoint,
then its fallbacks), buffered and streaming, and what failing open checks.
Every hop sends only the allowed request headers and hides the router's own
response headers from the endpoint (sidecar.tools.nginx_headers). `opts` is
the renderer's NginxOptions."""

from __future__ import annotations

from pathlib import Path

from sidecar.policy.compiled import Policy
from sidecar.tools import nginx_headers


NGINX_DIR = Path(__file__).resolve().parents[2] / "nginx"
# The hops of one request: the decision's endpoint, then its fallbacks.
HOPS = (("", "route_endpoint", "route_auth"),
        ("_fb1", "route_fallback", "route_fallback_auth"),
        ("_fb2", "route_fallback2", "route_fallback2_auth"))


def hop_location(policy: Policy, name: str, hop: int, opts, streaming: bool,
                  last: bool) -> list[str]:
    suffix, source, auth = HOPS[hop]
    lines = [f"        location {name} {{"]
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
                            ("route_rule", "rule"), ("route_tenant", "tenant")):
            lines.append(f"            set ${var} $upstream_http_x_route_{header};")
    # Which hop served, for the feedback log (the last hop location that ran wins).
    lines += [f"            set $route_hop {hop};", f"            set $route_served ${source};",
              f"            set $route_served_tier $hop{suffix}_tier;"]
    if streaming:
        lines.append("            set $route_stream 1;")
    if hop > 0 and opts.mode == "lua":
        lines.append(f"            rewrite_by_lua_block {{ require('hir').splice_fallback({hop}) }}")
    nxt = None if last else f"{name.split('_fb')[0]}_fb{hop + 1}"
    return lines + forward(policy, opts, hop, streaming, nxt) + ["        }"]


def forward(policy: Policy, opts, hop: int, streaming: bool,
             next_hop: str | None) -> list[str]:
    """The body of a location that forwards to hop `hop` of the decision and, on
    a 5xx (from the endpoint or nginx), goes to `next_hop` (None: the chain is
    over, answer in JSON). An endpoint's 4xx is its answer and passes through."""
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
             f"{pad}proxy_set_header Authorization ${auth};",
             f"{pad}proxy_ssl_name $hop{suffix}_sni;"]
    if opts.mode == "lua":
        lines += [f"{pad}header_filter_by_lua_block {{ require('hir').upstream_headers() }}",
                  f"{pad}body_filter_by_lua_block {{ require('hir').upstream_body() }}"]
    if streaming:
        lines += [f"{pad}proxy_buffering off;", f"{pad}proxy_cache off;"]
    if next_hop is None:
        pages = {500: "= @upstream_failed", 502: "= @upstream_failed", 503: "= @upstream_failed",
                 504: "= @upstream_timeout"}
    else:
        pages = {status: f"= {next_hop}" for status in (500, 502, 503, 504)}
    # Only the 5xx: this location is reached with the body read, so nginx raises
    # nothing else here, and an error_page for a 4xx would swallow the endpoint's own.
    lines += [f"{pad}error_page {status} {target};" for status, target in pages.items()]
    return lines + [f"{pad}proxy_pass $hop{suffix}_target$route_path;"]


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
