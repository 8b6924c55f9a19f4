"""The answers nginx gives by itself, as OpenAI-style JSON (never its HTML pages).

nginx raises its own errors before any location is chosen (a malformed request
line has no URI yet), so error pages are internal URI locations, not named
ones: redirecting to a named location needs a URI and turned every such error
into a 500 "empty URI in redirect to named location". A location that declares
any `error_page` loses the server's, so `error_pages()` renders the whole set
with that location's own overrides on top.
"""

from __future__ import annotations

# status -> (OpenAI error type, code, message)
OWN = {
    400: ("invalid_request_error", "bad_request", "The request could not be parsed."),
    403: ("invalid_request_error", "forbidden", "Forbidden."),
    404: ("invalid_request_error", "unknown_url", "Unknown URL."),
    405: ("invalid_request_error", "method_not_allowed", "Method not allowed."),
    408: ("invalid_request_error", "request_timeout", "The request took too long to arrive."),
    411: ("invalid_request_error", "length_required", "The request needs a Content-Length."),
    413: ("invalid_request_error", "request_too_large", "The request body is too large."),
    414: ("invalid_request_error", "uri_too_long", "The request URI is too long."),
    421: ("invalid_request_error", "misdirected_request", "This server does not serve that host name."),
    431: ("invalid_request_error", "headers_too_large", "The request headers are too large."),
    500: ("server_error", "internal_error", "Internal router error."),
    501: ("invalid_request_error", "not_implemented", "The request uses a method or transfer coding "
          "the router does not implement."),
    502: ("server_error", "upstream_failed", "Every model endpoint for this request failed."),
    503: ("server_error", "router_unavailable", "The router is unavailable; retry shortly."),
    504: ("server_error", "upstream_timeout", "The model endpoints did not answer in time."),
    505: ("invalid_request_error", "http_version_not_supported", "Use HTTP/1.1 or HTTP/2."),
}
# nginx's private statuses, answered as the standard one they stand for.
RENAMED = {494: 431,   # request header or cookie too large
           495: 400,   # client certificate error
           496: 400,   # no client certificate
           497: 400}   # plain HTTP sent to the HTTPS port
PREFIX = "/_hir/error/"
# Answers nginx gives for an endpoint, never for its own errors (no error page).
ENDPOINT_ANSWERS = {
    429: ("rate_limit_error", "upstream_rate_limited", "The model endpoints are rate-limiting "
          "this request; retry after the time in Retry-After."),
}
# The plain listener of a TLS edge (`--redirect-http`) answers every request with a
# 308 to HTTPS. nginx's own 308 carries its HTML page; this is the body instead.
HTTPS_REDIRECT = ("invalid_request_error", "https_required",
                  "This address only redirects to HTTPS: send the request to the URL in Location.")
# An endpoint refused the router's own credential (its 401 or 403) and no other hop
# could take the request: a fault on the router's side, answered 502. The provider's
# message is not passed on: it is about the operator's key (OpenAI's quotes its last
# characters), and would tell a client whose own key is fine that it is not.
CREDENTIALS_REFUSED = ("server_error", "upstream_auth_failed",
                       "A model endpoint refused the credentials the router sent.")


def answer(etype: str, code: str, message: str) -> str:
    return ('{"error":{"message":"%s","type":"%s","param":null,"code":"%s"}}'
            % (message, etype, code))


def body(status: int) -> str:
    return answer(*(OWN.get(status) or ENDPOINT_ANSWERS[status]))


def error_pages(indent: str, overrides: dict[int, str] | None = None,
                statuses=None) -> list[str]:
    """`error_page` lines for every status nginx can raise (or just `statuses`);
    `overrides` maps a status to this location's own target (e.g. "= @sidecar_failed")."""
    overrides = overrides or {}
    lines = []
    for status in statuses or OWN:
        target = overrides.get(status, f"{PREFIX}{status}")
        lines.append(f"{indent}error_page {status} {target};")
    for status, standard in (RENAMED.items() if statuses is None else ()):
        target = overrides.get(status, f"{PREFIX}{standard}")
        lines.append(f"{indent}error_page {status} ={standard} {target};")
    return lines


def error_locations(indent: str) -> list[str]:
    lines = []
    for status in OWN:
        lines += [f"{indent}location = {PREFIX}{status} {{",
                  f"{indent}    internal;",
                  # Never reads the body. Over HTTP/2 nginx checks a too-large declared
                  # length again on every internal redirect (discarding sets no flag
                  # there), so with a limit here the 413 page raised its own 413 and
                  # the client got nginx's HTML.
                  f"{indent}    client_max_body_size 0;",
                  f"{indent}    default_type application/json;",
                  f"{indent}    return {status} '{body(status)}';",
                  f"{indent}}}"]
    return lines
