"""Render nginx configuration from the policy (one source of truth).

`render_upstreams(policy)` (sidecar.tools.nginx_upstreams) is the include every
deployment needs. `render_config(...)` writes a complete nginx.conf for either
mode around it: the listeners, the decision location, the forwarding hops
(nginx_hops), nginx's own error answers (nginx_errors) and the headers that
cross the edge (nginx_headers), with the static snippets in the repo's nginx/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sidecar.edge import feedback
from sidecar.edge.feedback import FEEDBACK_VARIABLES
from sidecar.policy.compiled import Policy
from sidecar.tools import nginx_cache, nginx_cors, nginx_errors, nginx_headers
from sidecar.tools.nginx_hops import (NGINX_DIR, fail_open_checks, forward, hop_locations, shadow_http_blocks,
                                      shadow_location, shadow_relay_server)
from sidecar.tools.nginx_upstreams import render_upstreams

LUA_MODULES = ("/usr/lib/nginx/modules/ndk_http_module.so",
               "/usr/lib/nginx/modules/ngx_http_lua_module.so")


@dataclass
class NginxOptions:
    mode: str = "lua"                    # lua | stock
    listen: str = "127.0.0.1:8080"
    sidecar_sockets: list[str] = field(default_factory=lambda: ["/tmp/hir-sidecar.sock"])
    run_dir: str = "/tmp/hir-nginx"
    max_body: str = "1m"
    sidecar_timeout_ms: int = 250
    worker_processes: str = "auto"
    daemon: bool = False
    feedback_sockets: list[str] = field(default_factory=list)  # sidecars' feedback sockets
    user: str = ""                       # worker user; "" keeps nginx's default
    tls_listen: str = ""                 # e.g. 0.0.0.0:443; needs tls_cert and tls_key
    tls_cert: str = ""
    tls_key: str = ""
    redirect_http: bool = False          # the plain listener answers 308 to https
    client_timeout: str = "10s"          # slow clients are shed before the sidecar sees them
    request_timeout_s: int = 30          # headers + body must arrive within this (see hir.lua)
    access_log: str = ""                 # JSON access log file; "" = RUN_DIR/access.log, "off"


def _milliseconds(nginx_time: str) -> int:
    """nginx's "10s" / "500ms" / "1m" as milliseconds (hir.lua needs a number)."""
    for unit, factor in (("ms", 1), ("s", 1000), ("m", 60_000)):
        if nginx_time.endswith(unit) and nginx_time[:-len(unit)].isdigit():
            return int(nginx_time[:-len(unit)]) * factor
    return int(nginx_time) * 1000


# HTTP/0.9 has no status line or headers; only a valid request reaches these
# locations, so an empty protocol here means 0.9 (a malformed request line has
# none either, but goes to the error pages).
HTTP09 = "            if ($hir_http09) { return 505 $hir_http09_response; }"
# Routed requests carry a Content-Length: a chunked body has no size to bound its
# arrival by (hir.lua), and nginx's errors while parsing one would be
# indistinguishable from the sidecar's 400s in stock mode. A rewrite to the 411
# page, not `return 411`: answering parses the chunks already received to discard
# them, and a malformed one raises a 400 there. Reached by a rewrite, the page's
# 400 still gets the JSON 400 page; reached as an error page, it got nginx's HTML.
# First in the location, before a CORS preflight's 204 can hit the same 400.
NO_CHUNKED = ("            if ($http_transfer_encoding) { rewrite ^ %s411 last; }"
              % nginx_errors.PREFIX)


def _server_head(opts: NginxOptions) -> list[str]:
    lines = ["    server {"]
    if not (opts.tls_listen and opts.redirect_http):
        lines.append(f"        listen {opts.listen};")
    if opts.tls_listen:
        # HTTP/2 only where routed requests work over it: the Debian Lua module
        # (0.10.23) refuses ngx.req.read_body and ngx.location.capture on h2
        # ("http2 requests not supported yet"), so lua mode offers HTTP/1.1 only
        # and ALPN settles on it.
        h2 = " http2" if opts.mode == "stock" else ""
        lines += [f"        listen {opts.tls_listen} ssl{h2};",
                  f"        ssl_certificate {opts.tls_cert};",
                  f"        ssl_certificate_key {opts.tls_key};",
                  "        ssl_protocols TLSv1.2 TLSv1.3;",
                  "        ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                  "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                  "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;",
                  "        ssl_prefer_server_ciphers off;",
                  "        ssl_session_cache shared:hir_tls:10m;",
                  "        ssl_session_timeout 1d;",
                  "        ssl_session_tickets off;"]
    return lines


def render_config(policy: Policy, opts: NginxOptions) -> str:
    run = opts.run_dir
    timeout = f"{opts.sidecar_timeout_ms}ms"
    security = f"include {run}/security_headers.conf;"
    lines = ["# Generated by `python -m sidecar render-nginx`; edit the policy, not this file.",
             f"# Mode: {opts.mode}. Policy: {policy.source} (version {policy.version}).",
             f"worker_processes {opts.worker_processes};",
             f"pid {run}/nginx.pid;",
             f"error_log {run}/error.log warn;",
             f"daemon {'on' if opts.daemon else 'off'};"]
    if opts.user:
        lines.append(f"user {opts.user};")
    if opts.mode == "lua":
        lines += [f"load_module {m};" for m in LUA_MODULES]
    lines += ["events { worker_connections 4096; }", "", "http {",
              "    " + feedback.LOG_FORMAT % opts.mode, "    " + feedback.SHADOW_LOG_FORMAT]
    if opts.feedback_sockets:
        # Every sidecar process hears every outcome, so health is the same in all.
        lines += [f"    access_log syslog:server={feedback.syslog_server(address)},nohostname,"
                  "tag=hir hir_feedback;" for address in opts.feedback_sockets]
    # The on-disk access log operators expect: the same JSON fields (no secrets, no
    # prompt text); nginx reopens it on USR1 (`nginx -s reopen`), as logrotate does.
    # Buffered: one write per 64 KiB or per second, not one per request.
    lines.append(f"    access_log {opts.access_log or run + '/access.log'} hir_feedback buffer=64k flush=1s;"
                 if opts.access_log != "off" else "    access_log off;")
    lines += [
              "    server_tokens off;",
              # No byte ranges: an answer is one JSON document or stream, not a file. An
              # endpoint that says Accept-Ranges (a CDN in front of a provider may) let a
              # client's Range header cut an answer to a 206 of a few bytes, or draw
              # nginx's HTML 416, in both modes, cached or not.
              "    max_ranges 0;",
              "    variables_hash_max_size 2048;  # the per-hop and per-tier maps",
              # ~170 hidden endpoint headers and the headers set for them: without room,
              # nginx warns on every start and builds a slower table.
              "    variables_hash_bucket_size 128;",
              "    proxy_headers_hash_max_size 2048;", "    proxy_headers_hash_bucket_size 128;",
              "    default_type application/json;",
              f"    client_body_temp_path {run}/client_body;",
              f"    proxy_temp_path {run}/proxy;",
              f"    fastcgi_temp_path {run}/fastcgi;", f"    uwsgi_temp_path {run}/uwsgi;",
              f"    scgi_temp_path {run}/scgi;",
              f"    client_max_body_size {opts.max_body};",
              "    # Keep bodies in memory: the sidecar reads them and fallbacks re-send them.",
              f"    client_body_buffer_size {opts.max_body};",
              f"    client_header_timeout {opts.client_timeout};",
              f"    client_body_timeout {opts.client_timeout};",
              "    send_timeout 60s;", "    keepalive_timeout 65s;",
              "    large_client_header_buffers 4 16k;",
              *[f"    {line}" for line in nginx_headers.raw_response_maps()],
              "    # Several sidecar processes: the same client always reaches the same one.",
              "    map $http_authorization$http_x_api_key $hir_client_key { \"\" $remote_addr; default $http_authorization$http_x_api_key; }",
              "    map $uri $hir_failover_path { ~^/v1(?<rest>/.*)$ $rest; default $uri; }",
              "    # The router's time before forwarding, in ms: lua mode measures it; stock mode",
              "    # reads the sidecar's entry, the first in $upstream_response_time (seconds).",
              "    map $upstream_response_time $hir_stock_overhead_ms {",
              "        \"~^(?<s>[0-9]+)\\.(?<ms>[0-9]{3})\" $s$ms; default \"\"; }",
              "    map $route_overhead_ms $hir_overhead_ms { \"\" $hir_stock_overhead_ms; default $route_overhead_ms; }",
              f"    include {run}/upstreams.conf;",
              *[f"    {line}" for line in shadow_http_blocks(policy, opts)],
              *[f"    {line}" for line in nginx_cache.http_blocks(policy, opts)],
              "    upstream hir_sidecar {"]
    if len(opts.sidecar_sockets) > 1:
        lines.append("        hash $hir_client_key consistent;")
    lines += [f"        server unix:{s} max_fails=0;" for s in opts.sidecar_sockets]
    lines += ["        keepalive 64;", "    }"]
    if opts.mode == "lua":
        lines += [f"    lua_package_path \"{NGINX_DIR}/?.lua;;\";",
                  "    # Stock nginx always names itself in Server; with Lua we can drop it.",
                  "    header_filter_by_lua_block { ngx.header[\"Server\"] = nil }"]
    if opts.tls_listen and opts.redirect_http:
        tls_port = opts.tls_listen.rpartition(":")[2]
        lines += ["    server {", f"        listen {opts.listen};", f"        {security}",
                  *nginx_errors.error_pages("        "),
                  f"        location / {{ return 308 https://$host:{tls_port}$request_uri; }}",
                  # The 308 keeps its status and Location through an error page, whose
                  # body replaces nginx's HTML.
                  f"        error_page 308 {nginx_errors.PREFIX}redirect;",
                  f"        location = {nginx_errors.PREFIX}redirect {{",
                  "            internal;", "            default_type application/json;",
                  f"            return 200 '{nginx_errors.answer(*nginx_errors.HTTPS_REDIRECT)}';",
                  "        }",
                  *nginx_errors.error_locations("        "), "    }"]
    lines += [""] + _server_head(opts)
    initial = [f"set $hir_request_timeout {opts.request_timeout_s};",
               f"set $hir_read_timeout_ms {_milliseconds(opts.client_timeout)};",
               *[f'set ${v} "";' for v in ("route_endpoint", "route_auth", "route_path", "route_fallback",
                                            "route_fallback_auth", "route_fallback2", "route_fallback2_auth",
                                            "route_model_at", "route_ratelimit", "route_ratelimit_policy",
                                            "route_overhead_ms", "route_strip_usage", "route_max_stream_s",
                                            "route_cache_key", "route_cache_refresh",
                                            *FEEDBACK_VARIABLES)]]
    if policy.shadow is None:
        initial = [f"        {line}" for line in initial]
    else:
        # A mirror subrequest shares its request's variables and runs the server's
        # `set`s again: they would clear the decision in mid-request. ($uri is read
        # afresh, never cached, so it tells the mirror apart.)
        initial = ['        if ($uri != "/_hir/shadow") {', *[f"            {line}" for line in initial],
                   "        }"]
    lines += [f"        {security}", *initial, *nginx_errors.error_pages("        ")]
    sidecar_headers = ["proxy_http_version 1.1;", "proxy_set_header Connection \"\";",
                       "proxy_set_header X-Original-URI $request_uri;",
                       "proxy_set_header X-Original-Method $request_method;",
                       # The peer nginx saw; the client's own X-Real-IP / X-Forwarded-For pass
                       # through and count only when the peer is a trusted proxy.
                       "proxy_set_header X-Peer-Addr $remote_addr;",
                       "proxy_set_header X-Request-Id $hir_request_id;",
                       f"proxy_set_header X-Route-Mode {opts.mode};",
                       f"proxy_connect_timeout {timeout};", f"proxy_send_timeout {timeout};",
                       f"proxy_read_timeout {timeout};", "proxy_next_upstream off;",
                       "proxy_hide_header X-Constitutional-Hash;", "proxy_hide_header X-Hir-Denial;"]
    if opts.mode == "lua":
        lines += ["        location /v1/ {",
                  HTTP09, NO_CHUNKED, *nginx_cors.preflight("            "),
                  "            access_by_lua_block { require('hir').route() }",
                  "            content_by_lua_block { ngx.exit(503) }",
                  "        }",
                  "        location = /_decide {", "            internal;",
                  "            proxy_pass http://hir_sidecar;",
                  *[f"            {h}" for h in sidecar_headers],
                  "            proxy_ignore_headers X-Accel-Redirect X-Accel-Expires X-Accel-Limit-Rate X-Accel-Buffering X-Accel-Charset;",
                  "            proxy_pass_header X-Accel-Redirect;",
                  "            proxy_set_header X-Request-Elapsed \"\";  # lua mode times the body itself",
                  f"            subrequest_output_buffer_size {opts.max_body};",
                  "        }"]
    else:
        sidecar_failed = {status: "= @sidecar_failed" for status in (500, 502, 503, 504)}
        lines += ["        location /v1/ {",
                  HTTP09, NO_CHUNKED, *nginx_cors.preflight("            "),
                  "            proxy_pass http://hir_sidecar;",
                  *[f"            {h}" for h in sidecar_headers],
                  # nginx read the whole body before this: how long headers + body took,
                  # and the bound, so the sidecar refuses a request that dripped in.
                  "            proxy_set_header X-Request-Elapsed $request_time;",
                  "            proxy_set_header X-Hir-Internal-Id $request_id;",
                  f"            proxy_set_header X-Request-Timeout {opts.request_timeout_s};",
                  "            proxy_set_header X-Route-Endpoint \"\";",
                  "            proxy_hide_header X-Route-Decision;",
                  "            proxy_intercept_errors on;",
                  # Intercepting also takes the sidecar's own answers: its denials (any
                  # 4xx a policy names) must pass, so only what nginx raises while reading
                  # the body gets a page here: a 400 is an HTTP/2 body that breaks its
                  # Content-Length, since the sidecar sends its own 400s to
                  # @sidecar_bad_request. (nginx ends a 408 of its own without an answer,
                  # and would do the same to an intercepted one.)
                  *nginx_errors.error_pages("            ", sidecar_failed,
                                            statuses=(400, 411, 413, 500, 502, 503, 504)),
                  "            recursive_error_pages on;  # @sidecar_failed may chain to another",
                  "        }"]
    lines += hop_locations(policy, opts)
    lines += shadow_location(policy, opts)
    # No decision: forward to the path's failover endpoint as hop 0 would (no
    # credentials are known, so $route_auth is empty), or refuse with 503.
    lines += ["        location @sidecar_failed {",
              "            set $route_endpoint $hir_failover_endpoint;",
              # Not set for the whole server: a mirror subrequest runs the server's `set`s
              # again on the variables it shares with its request, and would clear these.
              "            set $route_shadow \"\";", "            set $route_shadow_auth \"\";",
              "            set $route_path $hir_failover_path;",
              "            error_page 418 = @sidecar_unavailable;",
              "            if ($route_endpoint = \"\") { return 418; }",
              *fail_open_checks(),
              "            add_header X-Route-Failover \"sidecar-unavailable\" always;",
              "            proxy_read_timeout 300s;",
              *forward(policy, opts, 0, True, None),
              "        }",
              "        location @sidecar_unavailable {",
              f"            {security}",
              "            add_header Retry-After 1 always;",
              "            default_type application/json;",
              f"            return 503 '{nginx_errors.body(503).replace('The router is unavailable; retry shortly.', 'The router cannot decide right now; retry shortly.')}';",
              "        }",
              # A 400 the sidecar gave, as sent (decision.DENIAL_COPY): a redirect, not
              # an intercepted 400, which would close the client's connection.
              "        location @sidecar_bad_request {",
              "            default_type application/json;",
              "            return 400 $upstream_http_x_hir_denial;",
              "        }",
              "        location @upstream_failed {",
              "            default_type application/json;",
              f"            return 502 '{nginx_errors.body(502)}';",
              "        }",
              # An endpoint rate-limited the request and the chain cannot go on: its
              # Retry-After, the router's JSON (the provider's own body is not passed on).
              "        location @endpoint_429 {",
              f"            {security}",
              "            add_header Retry-After $hir_client_retry_after always;",
              "            default_type application/json;",
              f"            return 429 '{nginx_errors.body(429)}';",
              "        }",
              "        location @upstream_credentials_refused {",
              "            default_type application/json;",
              f"            return 502 '{nginx_errors.answer(*nginx_errors.CREDENTIALS_REFUSED)}';",
              "        }",
              "        location @upstream_timeout {",
              "            default_type application/json;",
              f"            return 504 '{nginx_errors.body(504)}';",
              "        }",
              *nginx_errors.error_locations("        "),
              "        # nginx's own health: up, and which policy its routing tables came from.",
              "        location = /healthz {",
              HTTP09,
              f"            return 200 '{{\"status\":\"ok\",\"policy_version\":\"{policy.version}\"}}';",
              "        }",
              "        location / {", HTTP09, f"            return 404 '{nginx_errors.body(404)}';", "        }",
              "    }", *shadow_relay_server(policy, opts), "}"]
    return "\n".join(lines) + "\n"


def write_config(policy: Policy, opts: NginxOptions, unresolved=frozenset()) -> Path:
    run = Path(opts.run_dir)
    for sub in ("", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (run / sub).mkdir(parents=True, exist_ok=True)
    (run / "upstreams.conf").write_text(render_upstreams(policy, unresolved))
    (run / "security_headers.conf").write_text(nginx_headers.security_headers_conf())
    conf = run / "nginx.conf"
    conf.write_text(render_config(policy, opts))
    return conf
