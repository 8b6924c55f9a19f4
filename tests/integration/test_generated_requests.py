"""Generated requests through real nginx in both modes: any mix of path, method,
headers and body, valid or hostile, and what the edge promises for each answer.
The per-class tables elsewhere pin each rule; this looks for the requests
between them."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import HASH, SECURITY

BODIES = {"/v1/chat/completions": {"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
          "/v1/completions": {"model": "auto", "prompt": "hi"},
          "/v1/embeddings": {"model": "auto", "input": "hi"},
          "/v1/messages": {"model": "auto", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
          "/v1/responses": {"model": "auto", "input": "hi"},
          "/v1/messages/count_tokens": {"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
          "/v1/responses/input_tokens": {"model": "auto", "input": "hi"}}
PATHS = st.one_of(st.sampled_from(sorted(BODIES)),
                  st.sampled_from(["/v1/models", "/v1/models/auto", "/v1/responses/resp_x",
                                   "/v1/responses/resp_x/cancel", "/v1/responses/resp_x/input_items"]),
                  st.tuples(st.sampled_from(sorted(BODIES)),
                            st.sampled_from(["/", "?a=b", "//", "%2F", "?model=grok-4", ".json", "%00"]))
                  .map("".join))
FIELDS = ["model", "messages", "prompt", "input", "stream", "stream_options", "max_tokens", "n", "tools",
          "system", "instructions", "previous_response_id", "conversation", "background", "metadata",
          "models", "fallbacks", "route", "content", "role", "type", "id", "tool_choice", "service_tier",
          "speed", "web_search_options", "mcp_servers", "plugins", "container"]
STRINGS = st.sampled_from(["", "auto", "expert", "gpt-4o", "grok-4", "\u202e", "\x00", "<html>", "../../x",
                           "\r\nX-Evil: 1", "conv_1", "resp_1", "user", "tool", "function", "priority",
                           "flex", "web_search_20250305", "item_reference", "cntr_1"]) | st.text(max_size=8)
VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False)
                      | STRINGS,
                      lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(FIELDS), inner, max_size=3), max_leaves=6)
HEADER_NAMES = ["X-Route-Endpoint", "X-Accel-Redirect", "X-Forwarded-For", "Authorization", "x-api-key",
                "Accept-Encoding", "Content-Encoding", "Range", "If-None-Match", "Cache-Control",
                "anthropic-version", "OpenAI-Beta", "Origin", "X-Hir-Internal-Id", "Cookie", "Upgrade"]
HEADER_VALUES = st.sampled_from(["1", "gzip", "bytes=0-1", "expert-grok-4", "@buffered_expert", "Bearer x",
                                 "10.0.0.1", "2023-06-01", "http://localhost:3000", "websocket", "no-store",
                                 "*", "a" * 200])
# What a client may see of the router's own headers (docs/operations.md, "What crosses the edge").
SHOWN_ROUTE_HEADERS = {"x-route-tier", "x-route-endpoint", "x-route-model", "x-route-rule", "x-route-hop"}


@st.composite
def requests(draw):
    path = draw(PATHS)
    method = draw(st.sampled_from(["POST"] * 6 + ["GET", "DELETE", "PUT", "HEAD", "PATCH"]))
    body = dict(BODIES.get(path, {"model": "auto"}))
    body.update(draw(st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=3)))
    for name in draw(st.lists(st.sampled_from(sorted(body) or ["model"]), max_size=2)):
        body.pop(name, None)
    raw = json.dumps(body).encode()
    cut = draw(st.one_of(st.none(), st.integers(0, len(raw))))
    if cut is not None:   # a byte dropped, replaced or the body cut short
        raw = draw(st.sampled_from([raw[:cut], raw[:cut] + raw[cut + 1:], raw[:cut] + b"\xff" + raw[cut:]]))
    headers = {"Content-Type": draw(st.sampled_from(["application/json"] * 6 + [
        "application/json; charset=utf-16", "text/plain", "APPLICATION/JSON"])),
        "X-Constitutional-Hash": draw(st.sampled_from([HASH] * 6 + ["", HASH.upper(), "0" * 16]))}
    headers.update(draw(st.dictionaries(st.sampled_from(HEADER_NAMES), HEADER_VALUES, max_size=3)))
    return method, path, headers, raw if method != "HEAD" else None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(request=requests())
def test_any_request_gets_a_json_answer_with_the_edge_headers_and_a_refusal_forwards_nothing(stack, request):
    method, path, headers, raw = request
    before = stack.mocks.total_received()
    status, out, body = stack.client.request(method, path, raw, headers)
    assert status < 500, body                       # no endpoint is failing: any 5xx is the router's
    for name, value in SECURITY.items():
        assert out[name] == value, name
    assert not {h.lower() for h in out if h.lower().startswith("x-route-")} - SHOWN_ROUTE_HEADERS
    assert b"<html" not in body.lower() and b"Traceback" not in body
    if method == "HEAD":
        return
    assert out["Content-Type"].startswith(("application/json", "text/event-stream")), out["Content-Type"]
    if status >= 400:
        error = json.loads(body)["error"]
        assert error["code"] and error["message"]
        if "X-Mock-Endpoint" not in out:            # refused by the router, not an endpoint's own answer
            assert stack.mocks.total_received() == before
