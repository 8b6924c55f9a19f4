"""The API surface through real nginx (both modes), the sidecar and the mock
endpoints: the model list, embeddings, Responses, Anthropic Messages, model
names, CORS and context windows."""

from __future__ import annotations

import http.client
import json

import pytest

from conftest import HASH, SECURITY, Client, Mocks, free_port, fresh_mocks, shifted_policy, user
from sidecar.tools.stack import Stack

ANTHROPIC_KEY = "sk-ant-test-0123456789abcdef"
ORIGIN = "http://localhost:3000"


def _variant(text: str) -> str:
    """The demo with what these tests need on top: unknown models refused, a key for
    the Anthropic endpoints."""
    text = text.replace("  unknown: route\n", "  unknown: reject\n")
    for name in ("balanced-claude-haiku", "premium-claude-sonnet"):
        text = text.replace(f"{{name: {name},", f"{{name: {name}, api_key: \"${{MOCK_ANTHROPIC_KEY}}\",")
    return text


@pytest.fixture(scope="module", params=["lua", "stock"])
def surface(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"surface-{request.param}")
    path, ports = shifted_policy(tmp)
    path.write_text(_variant(path.read_text()))
    port = free_port()
    st = Stack(path, tmp / "run", mode=request.param, listen=f"127.0.0.1:{port}", latency_scale=0.1,
               env={"MOCK_ANTHROPIC_KEY": ANTHROPIC_KEY})
    st.start()
    st.client, st.mocks = Client(port), Mocks(ports)
    yield st
    st.stop()


@pytest.fixture
def api(surface):
    yield from fresh_mocks(surface)


def get(st, path, headers=None):
    return st.client.request("GET", path, None, {"X-Constitutional-Hash": HASH, **(headers or {})})


def assert_secure(headers):
    for name, value in SECURITY.items():
        assert headers[name] == value, name


def test_the_model_list_names_auto_the_tiers_and_the_aliases(api):
    status, headers, body = get(api, "/v1/models")
    assert status == 200, body
    assert_secure(headers)
    listing = json.loads(body)
    ids = [m["id"] for m in listing["data"]]
    assert listing["object"] == "list"
    assert ids[:6] == ["auto", "nano", "fast", "balanced", "premium", "expert"]
    assert {"gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "claude-3-5-haiku-latest"} <= set(ids)
    status, _, body = get(api, "/v1/models/gpt-4o")
    assert status == 200 and json.loads(body)["id"] == "gpt-4o"
    assert api.mocks.total_received() == 0      # answered by the router itself


@pytest.mark.parametrize("method, path, headers, status, code", [
    ("GET", "/v1/models/gpt-17", {"X-Constitutional-Hash": HASH}, 404, "model_not_found"),
    ("POST", "/v1/models", {"X-Constitutional-Hash": HASH}, 405, "method_not_allowed"),
    ("GET", "/v1/models", {}, 428, "hash_required"),
    ("GET", "/v1/chat/completions", {"X-Constitutional-Hash": HASH}, 405, "method_not_allowed"),
])
def test_model_list_refusals_are_json(api, method, path, headers, status, code):
    got, out, body = api.client.request(method, path, None, headers)
    assert got == status, body
    assert json.loads(body)["error"]["code"] == code
    assert_secure(out)


def test_an_unknown_model_name_is_refused_in_openai_shape_when_the_policy_says_so(api):
    for model in ("gpt-17-ultra", "qwen3-32b", "Auto"):
        status, headers, body = api.client.chat(user("hi", model=model))
        assert status == 404, body
        error = json.loads(body)["error"]
        assert error["code"] == "model_not_found" and error["type"] == "invalid_request_error"
        assert model in error["message"]
        assert_secure(headers)
    assert api.mocks.total_received() == 0


def test_aliases_pin_a_tier_or_an_endpoint(api):
    status, headers, _ = api.client.chat(user("hi", model="gpt-4o"))
    assert status == 200 and headers["X-Route-Tier"] == "premium"
    status, headers, _ = api.client.chat(user("hi", model="gpt-4o-mini"))
    assert status == 200 and headers["X-Route-Tier"] == "fast"


def test_embeddings_go_to_the_endpoint_that_serves_them(api):
    for model in ("text-embedding-3-small", "auto", "nano"):
        status, headers, body = api.client.chat({"model": model, "input": ["one", "two"]},
                                                path="/v1/embeddings")
        assert status == 200, body
        assert headers["X-Mock-Endpoint"] == headers["X-Route-Endpoint"] == "nano-embed-bge-small"
        answer = json.loads(body)
        assert [d["index"] for d in answer["data"]] == [0, 1] and answer["usage"]["prompt_tokens"] > 0
    (*_, last) = api.mocks.received("nano-embed-bge-small")
    assert last["path"] == "/v1/embeddings"
    if api.mode == "lua":
        assert json.loads(last["body"])["model"] == "bge-small-en-v1.5"


@pytest.mark.parametrize("body", [{"model": "auto"}, {"model": "auto", "input": []},
                                  {"model": "auto", "input": [1, "x"]}, {"model": "auto", "input": {"a": 1}}])
def test_bad_embedding_bodies_are_refused_before_any_endpoint(api, body):
    status, headers, out = api.client.chat(body, path="/v1/embeddings")
    assert status == 400 and json.loads(out)["error"]["code"] == "invalid_request"
    assert api.mocks.total_received() == 0


def test_the_responses_api_is_routed_on_its_input_like_chat(api):
    status, headers, body = api.client.chat({"model": "auto", "input": "hi", "instructions": "be brief"},
                                            path="/v1/responses")
    assert status == 200, body
    assert headers["X-Route-Tier"] == "nano"
    assert json.loads(body)["object"] == "response"
    hard = ("Prove rigorously, step by step, that the sum of the first n odd numbers is n^2, derive "
            "a closed form for the sum of cubes and discuss the trade-offs of each proof. " * 3)
    status, headers, body = api.client.chat({"model": "auto", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": hard}]}]}, path="/v1/responses")
    assert status == 200 and headers["X-Route-Tier"] in ("balanced", "premium", "expert")
    served = headers["X-Mock-Endpoint"]
    assert api.mocks.received(served)[-1]["path"] == "/v1/responses"


def stream_events(st, path, body, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", st.client.port, timeout=10)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json",
                                                   "X-Constitutional-Hash": HASH, **(headers or {})})
    resp = conn.getresponse()
    text = resp.read().decode()
    conn.close()
    return resp.status, resp.headers, text


def test_responses_and_messages_stream_in_their_own_event_shapes(api):
    status, headers, text = stream_events(api, "/v1/responses", {"model": "auto", "input": "hi", "stream": True})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = [line[7:] for line in text.splitlines() if line.startswith("event: ")]
    assert events[0] == "response.created" and events[-1] == "response.completed"
    status, headers, text = stream_events(api, "/v1/messages", {
        "model": "auto", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        {"anthropic-version": "2023-06-01"})
    assert status == 200, text
    events = [line[7:] for line in text.splitlines() if line.startswith("event: ")]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "[DONE]" not in text and "usage" in text


def test_anthropic_messages_reach_an_endpoint_that_speaks_them_with_its_key_in_x_api_key(api):
    status, headers, body = api.client.chat({
        "model": "auto", "max_tokens": 64, "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
        path="/v1/messages", headers={"anthropic-version": "2023-06-01", "x-api-key": "client-own-key"})
    assert status == 200, body
    # No nano or fast endpoint speaks Messages: the nearest tier above that does.
    assert headers["X-Route-Endpoint"] == "balanced-claude-haiku"
    assert json.loads(body)["type"] == "message"
    (got,) = api.mocks.received("balanced-claude-haiku")
    sent = {k.lower(): v for k, v in got["headers"].items()}
    assert got["path"] == "/v1/messages"
    assert sent["x-api-key"] == ANTHROPIC_KEY         # the endpoint's key, not the client's
    assert "authorization" not in sent
    assert sent["anthropic-version"] == "2023-06-01"
    # An OpenAI-style endpoint gets its Bearer credential (none configured here) and no x-api-key.
    api.client.chat(user("hi", model="nano"), headers={"x-api-key": "client-own-key"})
    nano = [r for n in ("nano-qwen3-0-6b", "nano-qwen3-1-7b", "nano-qwen3-4b") for r in api.mocks.received(n)]
    assert nano and all("x-api-key" not in {k.lower() for k in r["headers"]} for r in nano)


def test_a_document_block_is_routed_as_the_same_document_pasted_inline(api):
    """Anthropic's document blocks carry plain text in their source: a long report
    sent that way goes where the same report pasted inline goes, not to the tier a
    one-line question alone would get."""
    report = " ".join(f"Section {i}: revenue moved {i % 7} percent while costs held, and the board "
                      f"asked for a plan for region {i % 13}." for i in range(700))
    question = {"type": "text", "text": "What are the three biggest risks in this report?"}
    tiers = {}
    for name, block in (("inline", {"type": "text", "text": report}),
                        ("text source", {"type": "document", "title": "Annual report",
                                         "source": {"type": "text", "media_type": "text/plain", "data": report}}),
                        ("content source", {"type": "document", "source": {
                            "type": "content", "content": [{"type": "text", "text": report}]}})):
        status, headers, body = api.client.chat({"model": "auto", "max_tokens": 256, "messages": [
            {"role": "user", "content": [block, question]}]}, path="/v1/messages")
        assert status == 200, body
        tiers[name] = headers["X-Route-Tier"]
    status, headers, _ = api.client.chat({"model": "auto", "max_tokens": 256, "messages": [
        {"role": "user", "content": [question]}]}, path="/v1/messages")
    assert tiers["inline"] != headers["X-Route-Tier"]          # the document is what moves it
    assert tiers == dict.fromkeys(tiers, tiers["inline"])


@pytest.mark.parametrize("path,role,content", [
    (path, role, content) for path, roles in (("/v1/chat/completions", ("user", "system", "developer", "tool")),
                                             ("/v1/messages", ("user", "assistant")),
                                             ("/v1/responses", ("user", "assistant")))
    for role in roles for content in ("null", "left out")])
def test_a_turn_without_content_is_refused_before_any_endpoint(api, path, role, content):
    turn = {"role": role} if content == "left out" else {"role": role, "content": None}
    turns = [{"role": "user", "content": "hi"}, turn]
    body = ({"model": "auto", "input": turns} if path == "/v1/responses" else
            {"model": "auto", "max_tokens": 16, "messages": turns})
    status, headers, out = api.client.chat(body, path=path)
    assert status == 400 and "content' is required" in json.loads(out)["error"]["message"], out
    assert_secure(headers)
    assert api.mocks.total_received() == 0


def test_a_prompt_with_no_text_goes_where_a_blank_one_does(api):
    tiers = [api.client.chat(user(text))[1]["X-Route-Tier"] for text in ("", " ")]
    assert tiers == ["nano", "nano"]


def test_a_messages_body_without_max_tokens_is_refused(api):
    status, _, body = api.client.chat({"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
                                      path="/v1/messages")
    assert status == 400 and "max_tokens" in json.loads(body)["error"]["message"]


def test_a_cors_preflight_is_answered_at_the_edge(api):
    status, headers, body = api.client.request("OPTIONS", "/v1/chat/completions", None, {
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-constitutional-hash"})
    assert status == 204, body
    assert headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"content-type", "x-constitutional-hash", "authorization"} <= allowed
    assert headers["Vary"] == "Origin" and int(headers["Access-Control-Max-Age"]) > 0
    assert_secure(headers)
    assert api.mocks.total_received() == 0


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_browser_may_retrieve_and_delete_a_stored_response(api, method):
    status, headers, _ = api.client.request("OPTIONS", "/v1/responses/resp_abc", None, {
        "Origin": ORIGIN, "Access-Control-Request-Method": method})
    assert status == 204 and method in headers["Access-Control-Allow-Methods"].split(", ")
    assert api.mocks.total_received() == 0


@pytest.mark.parametrize("origin", ["http://evil.example", "http://localhost:3001", "null",
                                    "http://localhost:3000.evil.example", "HTTP://LOCALHOST:3000"])
def test_a_preflight_from_another_origin_is_refused_in_json(api, origin):
    status, headers, body = api.client.request("OPTIONS", "/v1/chat/completions", None, {
        "Origin": origin, "Access-Control-Request-Method": "POST"})
    assert status == 403
    assert json.loads(body)["error"]["code"] == "cors_origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in headers
    assert_secure(headers)


def test_answers_carry_cors_headers_only_for_an_allowed_origin(api):
    _, allowed, _ = api.client.chat(user("hi"), headers={"Origin": ORIGIN})
    assert allowed["Access-Control-Allow-Origin"] == ORIGIN
    assert "X-Request-Id" in allowed["Access-Control-Expose-Headers"]
    _, other, _ = api.client.chat(user("hi"), headers={"Origin": "http://evil.example"})
    _, none, _ = api.client.chat(user("hi"))
    _, denied, _ = api.client.chat(user("hi"), headers={"Origin": ORIGIN, "X-Constitutional-Hash": "0" * 16})
    assert "Access-Control-Allow-Origin" not in other and "Access-Control-Allow-Origin" not in none
    assert denied["Access-Control-Allow-Origin"] == ORIGIN     # a browser can read the refusal


def test_a_request_too_large_for_a_window_goes_where_it_fits_or_is_refused(api):
    # ~40k tokens: past the nano models' 32k window, inside the fast tier's 131k.
    status, headers, body = api.client.chat(user("word " * 32000, model="nano"))
    assert status == 200, body
    assert headers["X-Route-Tier"] != "nano"
    status, headers, body = api.client.chat(user("hi", max_tokens=5_000_000))
    assert status == 400
    assert json.loads(body)["error"]["code"] == "context_length_exceeded"
    assert_secure(headers)


BULK = "word " * 32000   # ~40k tokens: past the nano models' 32k window
# Places a request's size may hide besides a message's text (the prompt's bulk, or
# the answer's): the router must count it there too, so a request pinned to nano
# moves to a tier whose window holds it.
HIDDEN_BULK = {
    "a tool output as content parts": ("/v1/responses", {"model": "nano", "input": [
        {"role": "user", "content": "hi"},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": [{"type": "input_text", "text": BULK}]}]}),
    "a custom tool call's input": ("/v1/responses", {"model": "nano", "input": [
        {"role": "user", "content": "hi"}, {"type": "custom_tool_call", "call_id": "c", "name": "f", "input": BULK}]}),
    "a reasoning summary": ("/v1/responses", {"model": "nano", "input": [
        {"role": "user", "content": "hi"},
        {"type": "reasoning", "id": "rs", "summary": [{"type": "summary_text", "text": BULK}]}]}),
    "a reusable prompt's variables": ("/v1/responses", {"model": "nano", "input": "hi",
                                                       "prompt": {"id": "pmpt_1", "variables": {"doc": BULK}}}),
    "a completion prompt as token ids": ("/v1/completions", {"model": "nano", "prompt": [17] * 40000}),
    "a completion's suffix": ("/v1/completions", {"model": "nano", "prompt": "def f(", "suffix": BULK}),
    # Not prompt but answer: servers honour max_completion_tokens over max_tokens.
    "an answer sized by max_completion_tokens beside a small max_tokens": (
        "/v1/chat/completions", {"model": "nano", "messages": [{"role": "user", "content": "hi"}],
                                 "max_tokens": 5, "max_completion_tokens": 40000}),
}


@pytest.mark.parametrize("place", HIDDEN_BULK)
def test_size_outside_the_messages_text_still_needs_a_window_that_holds_it(api, place):
    path, body = HIDDEN_BULK[place]
    status, headers, out = api.client.chat(body, path=path)
    assert status == 200, out
    assert headers["X-Route-Tier"] != "nano"
