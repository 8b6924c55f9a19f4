"""Route or denial → the sidecar's answer to nginx.

Allow: 200 with `X-Accel-Redirect` to the named forwarding location and the
internal `X-Route-*` headers nginx consumes (never shown to clients); in lua
mode, the body rewritten for the chosen endpoint's model.
Deny: the status from the denial table and an OpenAI-style JSON error.
"""

from __future__ import annotations

import json
import os
import re

import orjson
import xxhash

from sidecar.denials import Denied
from sidecar.policy.apis import OPENAI_STREAMS
from sidecar.policy.compiled import Route

# A marker no client can guess, used to find where the model value sits in the
# rewritten body so nginx can splice in a fallback endpoint's model.
_SENTINEL = "hir-model-" + os.urandom(12).hex()
_SENTINEL_JSON = orjson.dumps(_SENTINEL)

DENY_MARK = ("X-Route-Decision", "deny")
# The router's own answer (a model listing): nginx passes it to the client as is.
ANSWER_HEADERS = {"Content-Type": "application/json", "X-Route-Decision": "answer"}


def allow(route: Route, features, lua_mode: bool, path_suffix: str, limit_headers=()):
    """Headers and body for an allowed request."""
    endpoint = route.endpoint
    headers = {
        # One forwarding location per tier (its first-byte deadline), streaming or not.
        "X-Accel-Redirect": f"{'@stream' if features.stream else '@buffered'}_{endpoint.tier.name}",
        "X-Route-Endpoint": endpoint.name,
        "X-Route-Auth": endpoint.authorization,
        "X-Route-Path": path_suffix,
        "X-Route-Rule": route.rule,
        "X-Route-Features": features_header(features),
    }
    for name, value in limit_headers:  # RateLimit-Policy / RateLimit for the client
        headers[f"X-Route-{name}"] = value
    for i, fallback in enumerate(route.fallbacks, start=1):
        suffix = "" if i == 1 else str(i)
        headers[f"X-Route-Fallback{suffix}"] = fallback.name
        headers[f"X-Route-Fallback{suffix}-Auth"] = fallback.authorization
    body = b""
    # A stream's usage is only sent when asked for: ask (lua mode can rewrite the
    # body), and have nginx drop that extra chunk if the client did not ask.
    ask_usage = (lua_mode and features.stream and features.api in OPENAI_STREAMS
                 and _usage_not_asked(features.body))
    # (A request with no body, an operation on a stored response, has no model to rewrite.)
    if lua_mode and features.body and (ask_usage or any(e.model != features.model
                                                        for e in (endpoint, *route.fallbacks))):
        fields = features.body
        if ask_usage:
            fields = {**fields, "stream_options": {**(fields.get("stream_options") or {}), "include_usage": True}}
            headers["X-Route-Strip-Usage"] = "1"
        body, at = rewrite_model(fields, endpoint.model)
        headers["X-Route-Model-At"] = at
    return headers, body


def add_shadow(headers: dict, shadow, request_id: str) -> None:
    """Mirror a sampled share of requests to the shadow endpoint (nginx `mirror`);
    its answer is discarded, its outcome counted apart. Sampled by request id, so a
    retried decision samples the same way."""
    endpoint, share = shadow
    if xxhash.xxh3_64_intdigest(request_id.encode()) % 10_000 < share * 10_000:
        headers["X-Route-Shadow"] = endpoint.name
        headers["X-Route-Shadow-Auth"] = endpoint.authorization


_SAFE_MODEL = re.compile(r"[^A-Za-z0-9._:/@-]")


def features_header(f) -> str:
    """What the decision saw, for the access log (and `replay`): no prompt text.
    api;tokens;messages;max_tokens;complexity;tier_hint;flags;model (flags: s system prompt,
    c code, m math, t tools, r stream, b a background Responses request)"""
    flags = "".join(letter for letter, on in (("s", f.system_prompt), ("c", f.code), ("m", f.math),
                                               ("t", f.tools), ("r", f.stream)) if on)
    if f.api == "responses" and f.body.get("background") is True:
        flags += "b"   # answered `queued`: its usage comes later (sidecar.edge.conversations)
    model = _SAFE_MODEL.sub("?", f.model[:64])  # the client's text: never raw into a header
    return (f"{f.api};{f.tokens};{f.messages};{f.max_tokens};{f.complexity:.4f};{f.tier_hint};"
            f"{flags};{model}")


def _usage_not_asked(body: dict) -> bool:
    options = body.get("stream_options")
    return options is None or (isinstance(options, dict) and options.get("include_usage") is not True)


def rewrite_model(body: dict, model: str) -> tuple[bytes, str]:
    """The body with `model` replaced, and "offset,length" (1-based, bytes) of the
    model's JSON string in it. Every other field keeps its value and order."""
    draft = orjson.dumps({**body, "model": _SENTINEL})
    start = draft.index(_SENTINEL_JSON)
    model_json = orjson.dumps(model)
    out = draft[:start] + model_json + draft[start + len(_SENTINEL_JSON):]
    return out, f"{start + 1},{len(model_json)}"


def _error(message: str, error_type: str, code: str) -> dict:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def error_body(message: str, error_type: str, code: str) -> bytes:
    return orjson.dumps(_error(message, error_type, code))


# Stock mode: nginx must page the 400 it raises itself while reading a body (an
# HTTP/2 stream whose DATA disagrees with its Content-Length), and a page for 400
# would also take the sidecar's 400s and drop their bodies. So the sidecar sends a
# 400 as a redirect to a location that answers it, its body in this header. A
# header is one line of ASCII within nginx's 4 KB proxy buffer: hence the bound
# below, which every denial body keeps, so both modes say the same.
DENIAL_COPY = "X-Hir-Denial"
DENIAL_BODY_LIMIT = 2048


def denial_body(message: str, error_type: str, code: str) -> bytes:
    """An error body in ASCII (non-ASCII escaped) of at most DENIAL_BODY_LIMIT
    bytes: a message that would not fit is cut, and says so with an ellipsis."""
    try:
        body = error_body(message, error_type, code)
        if body.isascii() and len(body) <= DENIAL_BODY_LIMIT:
            return body
    except TypeError:   # a lone surrogate: orjson refuses it, json escapes it
        pass

    def ascii_body(text: str) -> bytes:
        return json.dumps(_error(text, error_type, code), ensure_ascii=True, separators=(",", ":")).encode()

    body = ascii_body(message)
    if len(body) <= DENIAL_BODY_LIMIT:
        return body
    # The longest head of the message that fits with its ellipsis (a character
    # escapes to 1-12 bytes, so search; codes are at most 64 bytes, so 0 fits).
    fits, over = 0, min(len(message), DENIAL_BODY_LIMIT)
    while over - fits > 1:
        mid = (fits + over) // 2
        if len(ascii_body(message[:mid] + "\u2026")) <= DENIAL_BODY_LIMIT:
            fits = mid
        else:
            over = mid
    return ascii_body(message[:fits] + "\u2026")


def deny(denied: Denied, stock_mode: bool = False) -> tuple[int, dict, bytes]:
    body = denial_body(denied.message, denied.error_type, denied.reason)
    if stock_mode and denied.status == 400:
        return 200, {"X-Accel-Redirect": "@sidecar_bad_request", DENIAL_COPY: body.decode("ascii")}, b""
    headers = {"Content-Type": "application/json", DENY_MARK[0]: DENY_MARK[1]}
    for name, value in denied.headers:
        headers[name] = value
    return denied.status, headers, body
