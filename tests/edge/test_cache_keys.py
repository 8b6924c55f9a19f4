"""Which requests the response cache may answer, and the key exact repeats share."""

from __future__ import annotations

import hashlib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from conftest import DEMO, HASH
from sidecar.edge.app import Runtime, decide
from sidecar.policy.spec import compile_policy

POLICIES = {shared: compile_policy((DEMO.read_text() + f"response_cache: {{ttl: 1m, shared: {str(shared).lower()}}}\n"
                                    ).encode(), "t.yaml", {}) for shared in (False, True)}
PATHS = {"/v1/chat/completions": "messages", "/v1/completions": "prompt", "/v1/embeddings": "input",
         "/v1/messages": "messages", "/v1/responses": "input"}


def body_for(path: str, text: str, stream: bool = False) -> bytes:
    field = PATHS[path]
    value = [{"role": "user", "content": text}] if field == "messages" else text
    body = {"model": "auto", field: value}
    if path == "/v1/messages":
        body["max_tokens"] = 16
    if stream and path != "/v1/embeddings":
        body["stream"] = True
    return orjson.dumps(body)


def decided(path="/v1/chat/completions", text="hi", peer="192.0.2.9", stream=False, shared=False, **headers):
    h = CIMultiDict({"Content-Type": "application/json", "X-Constitutional-Hash": HASH,
                     "X-Hir-Internal-Id": "0123456789abcdef"})
    for name, value in headers.items():
        h.add(name.replace("_", "-"), value)
    _, out, _ = decide(POLICIES[shared], "POST", path, h, body_for(path, text, stream), peer=peer,
                       runtime=Runtime())
    return out.get("X-Route-Cache-Key"), out.get("X-Route-Cache-Refresh")


REQUEST = st.tuples(st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/messages",
                                     "/v1/embeddings"]),
                    st.sampled_from(["hi", "hi ", "Hi", "what is 2+2?"]),
                    st.sampled_from(["192.0.2.9", "192.0.2.10"]),
                    st.sampled_from(["2023-06-01", "2023-01-01"]))


@settings(max_examples=150, deadline=None)
@given(REQUEST, REQUEST, st.booleans())
def test_two_requests_share_a_key_exactly_when_they_are_repeats(a, b, shared):
    """Same API, body, answer-changing headers and (unless shared) client."""
    key_a = decided(a[0], a[1], a[2], shared=shared, anthropic_version=a[3])[0]
    key_b = decided(b[0], b[1], b[2], shared=shared, anthropic_version=b[3])[0]
    assert key_a and key_b
    same = a[0] == b[0] and a[1] == b[1] and a[3] == b[3] and (shared or a[2] == b[2])
    assert (key_a == key_b) is same


@pytest.mark.parametrize("path,stream,cache_control,expected", [
    ("/v1/chat/completions", False, None, (True, None)),
    ("/v1/chat/completions", True, None, (False, None)),               # streams are not kept
    ("/v1/responses", False, None, (False, None)),                     # stored and continued by id
    ("/v1/chat/completions", False, "no-store", (False, None)),
    ("/v1/chat/completions", False, "max-age=0, NO-STORE", (False, None)),
    ("/v1/chat/completions", False, "no-cache", (True, "1")),          # fetched afresh, then kept
    ("/v1/chat/completions", False, "no-cachex, max-age=5", (True, None)),
])
def test_what_may_be_answered_from_the_cache(path, stream, cache_control, expected):
    headers = {"Cache_Control": cache_control} if cache_control else {}
    key, refresh = decided(path, stream=stream, **headers)
    assert (key is not None, refresh) == expected


def test_without_a_response_cache_no_request_gets_a_key():
    h = CIMultiDict({"Content-Type": "application/json", "X-Constitutional-Hash": HASH})
    _, out, _ = decide(compile_policy(DEMO.read_bytes(), "t.yaml", {}), "POST", "/v1/chat/completions",
                       h, body_for("/v1/chat/completions", "hi"), peer="192.0.2.9", runtime=Runtime())
    assert "X-Route-Cache-Key" not in out and "X-Route-Endpoint" in out


def test_the_key_is_a_cryptographic_digest_of_the_client_path_headers_and_body():
    """Not a fast non-cryptographic hash: its collisions can be made to order, and a
    body that shared a victim's key would have its answer given for the victim's."""
    key, _ = decided("/v1/chat/completions", "hi", "192.0.2.9", anthropic_version="2023-06-01")
    fields = b"ip:192.0.2.9\0/v1/chat/completions\0" + b"2023-06-01\0" + b"\0"
    assert key == hashlib.sha256(fields + body_for("/v1/chat/completions", "hi")).hexdigest()[:32]
