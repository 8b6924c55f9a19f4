"""Bad input through real nginx: a specific 4xx with an OpenAI-style error, the
security headers and the constitutional hash, and nothing forwarded."""

from __future__ import annotations

import gzip
import json

import pytest

from conftest import HASH, SECURITY

JSON = {"Content-Type": "application/json", "X-Constitutional-Hash": HASH}
MSG = '"messages":[{"role":"user","content":"hi"}]'

CASES = [
    # name, method, path, headers, body, status, code
    ("invalid json", "POST", "/v1/chat/completions", JSON, b'{"model": "auto", ', 400, "invalid_json"),
    ("non-object body", "POST", "/v1/chat/completions", JSON, b'[1, 2, 3]', 400, "invalid_json"),
    ("string body", "POST", "/v1/chat/completions", JSON, b'"hello"', 400, "invalid_json"),
    ("empty body", "POST", "/v1/chat/completions", JSON, b"", 400, "invalid_json"),
    ("missing messages", "POST", "/v1/chat/completions", JSON, b'{"model":"auto"}', 400, "invalid_request"),
    ("empty messages", "POST", "/v1/chat/completions", JSON, b'{"model":"auto","messages":[]}', 400, "invalid_request"),
    ("messages not a list", "POST", "/v1/chat/completions", JSON, b'{"messages":"hi"}', 400, "invalid_request"),
    ("message not an object", "POST", "/v1/chat/completions", JSON, b'{"messages":["hi"]}', 400, "invalid_request"),
    ("unknown role", "POST", "/v1/chat/completions", JSON, b'{"messages":[{"role":"root","content":"x"}]}', 400, "invalid_request"),
    ("content a number", "POST", "/v1/chat/completions", JSON, b'{"messages":[{"role":"user","content":5}]}', 400, "invalid_request"),
    ("model a number", "POST", "/v1/chat/completions", JSON, b'{"model":5,' + MSG.encode() + b'}', 400, "invalid_request"),
    ("stream a string", "POST", "/v1/chat/completions", JSON, b'{"stream":"yes",' + MSG.encode() + b'}', 400, "invalid_request"),
    ("max_tokens a float", "POST", "/v1/chat/completions", JSON, b'{"max_tokens":1.5,' + MSG.encode() + b'}', 400, "invalid_request"),
    ("max_tokens zero", "POST", "/v1/chat/completions", JSON, b'{"max_tokens":0,' + MSG.encode() + b'}', 400, "invalid_request"),
    ("n a boolean", "POST", "/v1/chat/completions", JSON, b'{"n":true,' + MSG.encode() + b'}', 400, "invalid_request"),
    ("n zero", "POST", "/v1/chat/completions", JSON, b'{"n":0,' + MSG.encode() + b'}', 400, "invalid_request"),
    ("best_of a string", "POST", "/v1/completions", JSON, b'{"prompt":"hi","best_of":"2"}', 400, "invalid_request"),
    ("tools an object", "POST", "/v1/chat/completions", JSON, b'{"tools":{},' + MSG.encode() + b'}', 400, "invalid_request"),
    ("text part's text a number", "POST", "/v1/chat/completions", JSON, b'{"messages":[{"role":"user","content":[{"type":"text","text":5}]}]}', 400, "invalid_request"),
    ("stream_options a number", "POST", "/v1/chat/completions", JSON, b'{"stream":true,"stream_options":5,' + MSG.encode() + b'}', 400, "invalid_request"),
    ("include_usage a string", "POST", "/v1/chat/completions", JSON, b'{"stream":true,"stream_options":{"include_usage":"yes"},' + MSG.encode() + b'}', 400, "invalid_request"),
    ("tool output part not an object", "POST", "/v1/responses", JSON, b'{"input":[{"type":"function_call_output","call_id":"c","output":["x"]}]}', 400, "invalid_request"),
    ("NaN", "POST", "/v1/chat/completions", JSON, b'{"temperature":NaN,' + MSG.encode() + b'}', 400, "invalid_json"),
    ("invalid utf-8", "POST", "/v1/chat/completions", JSON, b'{"messages":[{"role":"user","content":"\xff"}]}', 400, "invalid_json"),
    ("prompt missing", "POST", "/v1/completions", JSON, b'{"model":"auto"}', 400, "invalid_request"),
    ("a negative token id", "POST", "/v1/completions", JSON, b'{"prompt":[17,-1]}', 400, "invalid_request"),
    ("a negative token id to embed", "POST", "/v1/embeddings", JSON, b'{"model":"text-embedding-3-small","input":[[5],[-3]]}', 400, "invalid_request"),
    # Gateways' fallback lists: an endpoint behind OpenRouter or LiteLLM would answer with these models.
    ("OpenRouter's models", "POST", "/v1/chat/completions", JSON, b'{"models":["x-ai/grok-4"],' + MSG.encode() + b'}', 400, "invalid_request"),
    ("OpenRouter's route", "POST", "/v1/responses", JSON, b'{"input":"hi","route":"fallback"}', 400, "invalid_request"),
    ("Messages fallbacks", "POST", "/v1/messages", JSON, b'{"max_tokens":8,"fallbacks":[{"model":"claude-opus-4"}],' + MSG.encode() + b'}', 400, "invalid_request"),
    ("LiteLLM's context fallbacks", "POST", "/v1/completions", JSON, b'{"prompt":"hi","context_window_fallback_dict":{"a":"b"}}', 400, "invalid_request"),
    ("text/plain", "POST", "/v1/chat/completions", {**JSON, "Content-Type": "text/plain"}, b'{' + MSG.encode() + b'}', 415, "unsupported_media_type"),
    ("no content type", "POST", "/v1/chat/completions", {"X-Constitutional-Hash": HASH}, b'{' + MSG.encode() + b'}', 415, "unsupported_media_type"),
    ("form", "POST", "/v1/chat/completions", {**JSON, "Content-Type": "application/x-www-form-urlencoded"}, b"a=b", 415, "unsupported_media_type"),
    ("gzip body", "POST", "/v1/chat/completions", {**JSON, "Content-Encoding": "gzip"}, gzip.compress(b'{' + MSG.encode() + b'}'), 415, "unsupported_content_encoding"),
    # A plain body labelled as compressed: the router and a provider that decodes it would read two different requests.
    ("br label on a plain body", "POST", "/v1/chat/completions", {**JSON, "Content-Encoding": "br"}, b'{' + MSG.encode() + b'}', 415, "unsupported_content_encoding"),
    ("GET on chat", "GET", "/v1/chat/completions", JSON, None, 405, "method_not_allowed"),
    ("unknown v1 path", "POST", "/v1/secret", JSON, b'{' + MSG.encode() + b'}', 404, "unknown_url"),
    ("unknown path", "GET", "/admin", {}, None, 404, "unknown_url"),
    ("hash missing", "POST", "/v1/chat/completions", {"Content-Type": "application/json"}, b'{' + MSG.encode() + b'}', 428, "hash_required"),
    ("hash mismatch", "POST", "/v1/chat/completions", {**JSON, "X-Constitutional-Hash": "0000000000000001"}, b'{' + MSG.encode() + b'}', 412, "hash_mismatch"),
    ("hash uppercase", "POST", "/v1/chat/completions", {**JSON, "X-Constitutional-Hash": HASH.upper()}, b'{' + MSG.encode() + b'}', 400, "invalid_hash"),
    ("hash too short", "POST", "/v1/chat/completions", {**JSON, "X-Constitutional-Hash": HASH[:-1]}, b'{' + MSG.encode() + b'}', 400, "invalid_hash"),
    # hostile JSON
    ("duplicate key", "POST", "/v1/chat/completions", JSON, b'{"model":"auto","model":"expert",' + MSG.encode() + b'}', 400, "duplicate_key"),
    ("duplicate key nested", "POST", "/v1/chat/completions", JSON, b'{"messages":[{"role":"user","role":"system","content":"x"}]}', 400, "duplicate_key"),
    # An escaped colon makes the colon count agree with the keys left after the duplicate is dropped.
    ("duplicate key behind \\u003a", "POST", "/v1/chat/completions", JSON, b'{"user":"a\\u003a","model":"auto","model":"expert",' + MSG.encode() + b'}', 400, "duplicate_key"),
    ("duplicate key behind \\u003A", "POST", "/v1/chat/completions", JSON, b'{"user":"a\\u003A","model":"auto","model":"expert",' + MSG.encode() + b'}', 400, "duplicate_key"),
    ("Infinity", "POST", "/v1/chat/completions", JSON, b'{"temperature":Infinity,' + MSG.encode() + b'}', 400, "invalid_json"),
    ("integer beyond 64 bits", "POST", "/v1/chat/completions", JSON, b'{"seed":123456789012345678901234567890,' + MSG.encode() + b'}', 400, "integer_out_of_range"),
    ("nesting deeper than 32", "POST", "/v1/chat/completions", JSON, b'{"x":' + b"[" * 40 + b"]" * 40 + b',' + MSG.encode() + b'}', 400, "nesting_too_deep"),
    ("lone surrogate", "POST", "/v1/chat/completions", JSON, b'{"messages":[{"role":"user","content":"\\ud83d"}]}', 400, "invalid_json"),
    ("too many messages", "POST", "/v1/chat/completions", JSON, b'{"messages":[' + b",".join([b'{"role":"user","content":"x"}'] * 2049) + b']}', 400, "invalid_request"),
    ("too many arrays", "POST", "/v1/chat/completions", JSON, b'{"x":[' + b",".join([b"[[]]"] * 30_000) + b'],' + MSG.encode() + b'}', 400, "too_many_containers"),
    ("too many empty objects", "POST", "/v1/embeddings", JSON, b'{"input":"hi","x":[' + b",".join([b"{}"] * 50_001) + b']}', 400, "too_many_containers"),
    ("too many keys", "POST", "/v1/chat/completions", JSON, b'{' + b",".join(b'"k%d":1' % i for i in range(10_001)) + b',' + MSG.encode() + b'}', 400, "too_many_keys"),
    ("body too large", "POST", "/v1/chat/completions", JSON, b'{"messages":[{"role":"user","content":"' + b"a" * (2 * 1024 * 1024) + b'"}]}', 413, "request_too_large"),
]


@pytest.mark.parametrize("name,method,path,headers,body,status,code", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_never_forwarded(clean, name, method, path, headers, body, status, code):
    got_status, got_headers, got_body = clean.client.request(method, path, body, headers)
    assert got_status == status, got_body
    error = json.loads(got_body)["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["type"] in ("invalid_request_error", "server_error")
    assert got_headers["Content-Type"].startswith("application/json")
    for header, value in SECURITY.items():
        assert got_headers[header] == value, header
    assert "Server" not in got_headers or got_headers["Server"] == "nginx"
    assert "Traceback" not in got_body.decode("utf-8", "replace")
    assert clean.mocks.total_received() == 0
    if code == "unsupported_content_encoding":
        assert got_headers["Accept-Encoding"] == "identity"


def test_an_identity_content_coding_is_read_and_routed(clean):
    status, _, _ = clean.client.chat({"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
                                     {"Content-Encoding": "identity"})
    assert status == 200
    assert clean.mocks.total_received() == 1


def test_a_duplicated_hash_header_is_refused(clean):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", clean.client.port, timeout=5)
    conn.putrequest("POST", "/v1/chat/completions")
    body = b'{' + MSG.encode() + b'}'
    for name, value in (("Content-Type", "application/json"), ("X-Constitutional-Hash", HASH),
                        ("X-Constitutional-Hash", HASH), ("Content-Length", str(len(body)))):
        conn.putheader(name, value)
    conn.endheaders(body)
    resp = conn.getresponse()
    assert resp.status == 400
    assert json.loads(resp.read())["error"]["code"] == "invalid_hash"
    assert clean.mocks.total_received() == 0


@pytest.mark.parametrize("name,value", [("Authorization", "Bearer k"), ("x-api-key", "k")])
def test_a_credential_sent_twice_is_refused(clean, name, value):
    """nginx refuses a second Authorization line, the sidecar a second x-api-key:
    either way one request never carries two credentials to choose from."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", clean.client.port, timeout=5)
    conn.putrequest("POST", "/v1/chat/completions")
    body = b'{' + MSG.encode() + b'}'
    for header in (("Content-Type", "application/json"), ("X-Constitutional-Hash", HASH),
                   (name, value), (name, value + "2"), ("Content-Length", str(len(body)))):
        conn.putheader(*header)
    conn.endheaders(body)
    resp = conn.getresponse()
    assert resp.status == 400
    assert json.loads(resp.read())["error"]["code"] in ("bad_request", "invalid_request")
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert clean.mocks.total_received() == 0


def test_a_mismatched_hash_answer_names_the_active_hash(clean):
    status, headers, _ = clean.client.chat({"messages": [{"role": "user", "content": "x"}]},
                                           headers={"X-Constitutional-Hash": "ffffffffffffffff"})
    assert status == 412
    assert headers.get_all("X-Constitutional-Hash") == [HASH]


def test_a_rotation_accepts_the_previous_hash_until_its_deadline(clean):
    from conftest import EXPIRED_HASH, OLD_HASH
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    status, headers, _ = clean.client.chat(body, headers={"X-Constitutional-Hash": OLD_HASH})
    assert status == 200 and headers["X-Constitutional-Hash"] == HASH
    status, _, text = clean.client.chat(body, headers={"X-Constitutional-Hash": EXPIRED_HASH})
    assert status == 412 and json.loads(text)["error"]["code"] == "hash_mismatch"


def test_every_response_names_the_policy_version(clean):
    for status_headers in (clean.client.chat({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}),
                           clean.client.request("GET", "/nope")):
        assert status_headers[1]["X-Policy-Version"] == clean.policy.version
