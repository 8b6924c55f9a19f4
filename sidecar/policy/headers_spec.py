"""`pass_headers:` in the policy → the header names nginx lets through beyond
the protocol's own, in each direction. Everything else is dropped (lua mode) or,
for responses in stock mode, the known-dangerous set is hidden (see
docs/operations.md, "What crosses the edge")."""

from __future__ import annotations

import re

from sidecar.policy.strict_yaml import join, mapping, show

TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
# Names the router owns, or that carry credentials or state: never passed on
# from the other side, whatever a policy says.
RESERVED = frozenset(name.lower() for name in (
    "Host", "Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie", "Connection",
    "Keep-Alive", "Transfer-Encoding", "Content-Length", "TE", "Upgrade", "Forwarded",
    "Accept-Encoding",
    "X-Forwarded-For", "X-Real-IP", "X-Constitutional-Hash", "X-Policy-Version", "X-Request-Id",
    "RateLimit", "RateLimit-Policy", "Strict-Transport-Security", "Content-Security-Policy",
    "X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy", "Cache-Control",
    "Cross-Origin-Opener-Policy", "Cross-Origin-Resource-Policy", "Cross-Origin-Embedder-Policy",
    "Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Server",
))
RESERVED_PREFIXES = ("x-route-", "x-accel-", "x-original-", "x-hir-", "access-control-")


def pass_headers(ctx, value, path="pass_headers") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(request header names, response header names), lowercase, each once."""
    if value is None:
        return (), ()
    spec = mapping(ctx, value, path, optional=("request", "response"))
    return (_names(ctx, spec.get("request") or [], join(path, "request")),
            _names(ctx, spec.get("response") or [], join(path, "response")))


def _names(ctx, value, path) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ctx.error(path, f"expected a list of header names, got {show(value)}")
    out = []
    for i, name in enumerate(value):
        where = f"{path}[{i}]"
        if not isinstance(name, str) or not TOKEN.match(name):
            raise ctx.error(where, f"expected a header name (letters, digits, '-'), got {show(name)}")
        low = name.lower()
        if low in RESERVED or low.startswith(RESERVED_PREFIXES):
            raise ctx.error(where, f"{name} is set by the router itself or carries credentials; "
                            "it cannot be passed through")
        if low not in out:
            out.append(low)
    return tuple(out)
