"""The decision's half of the response cache (policy `response_cache`): which
requests may be answered from it, and the key an exact repeat shares.

nginx keeps the answers (sidecar.tools.nginx_cache); the key it files them under
is this one plus the endpoint each hop forwards to and its model id, so an answer
is only ever given again as the endpoint (and model) that made it, and the route
headers stay true. A client opts out per request as HTTP says: `Cache-Control:
no-store` (neither read nor kept) or `no-cache` (a fresh answer, kept for the
next repeat).
"""

from __future__ import annotations

import hashlib

# Request headers nginx forwards that change an answer besides the body
# (sidecar.tools.nginx_headers.endpoint_request_headers).
ANSWER_HEADERS = ("anthropic-version", "anthropic-beta")


def directives(headers) -> frozenset[str]:
    """The request's Cache-Control directive names, lowercase."""
    out = set()
    for value in headers.getall("Cache-Control", ()):
        for part in value.split(","):
            name = part.split("=", 1)[0].strip().lower()
            if name:
                out.add(name)
    return frozenset(out)


def key(cache, policy, feats, headers, raw: bytes, client_id: str) -> tuple[str, bool] | None:
    """(the key, whether to fetch afresh) when this request's answer may come from
    the cache or go into it: a non-streamed request of a cached API; else None."""
    if feats.stream or feats.api not in cache.apis:
        return None
    wanted = directives(headers) if "Cache-Control" in headers else frozenset()
    if "no-store" in wanted:
        return None
    # SHA-256, not the xxh3 used elsewhere: a key shared by two different requests
    # gives one's answer to the other, and xxh3 collisions can be made to order (a
    # body crafted to share a victim's key, in a shared cache, would plant its own
    # answer). ~0.9 µs a KB here (SHA-NI); only with a response cache.
    digest = hashlib.sha256()
    # Fields end in NUL (none can hold one), each header's values joined by ",":
    # no field can pass for another.
    for part in ("" if cache.shared else client_id, feats.path,
                 *(",".join(headers.getall(name, ())) for name in ANSWER_HEADERS),
                 *(",".join(headers.getall(name, ())) for name in policy.pass_request_headers)):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    digest.update(raw)
    return digest.hexdigest()[:32], "no-cache" in wanted   # 128 bits


def add_headers(out_headers: dict, keyed: tuple[str, bool] | None) -> None:
    """The decision's headers for nginx (sidecar.tools.nginx_cache)."""
    if keyed is not None:
        out_headers["X-Route-Cache-Key"] = keyed[0]
        if keyed[1]:
            out_headers["X-Route-Cache-Refresh"] = "1"
