"""Every token an answer reports is counted and priced, in each API's own usage shape,
through real nginx in lua mode; in stock mode, which cannot read answers, the
estimate is the right size for each API and framing.

The shapes are the providers' documented ones, as the mock endpoints send them:
OpenAI's prompt counts include what the prompt cache read; Anthropic's input_tokens
leave out the cache's reads and writes; an Anthropic stream reports its input in
message_start and ends with only output_tokens. Each API is sent the same request
twice with a long prefix, so the second one is served partly from the cache."""

from __future__ import annotations

import http.client
import json
import re
import urllib.request
import uuid

import pytest

from conftest import HASH, Client, Mocks, free_port, shifted_policy, wait_until
from sidecar.access.budgets import cost_usd
from sidecar.policy.spec import load_policy
from sidecar.tools.stack import Stack
from test_conversations import stored_operation

OPENAI = "nano-qwen3-0-6b"
ANTHROPIC = "premium-claude-sonnet"
PRICES = ("price: {input: 0.000003,   output: 0.000015}",
          "price: {input: 0.000003, output: 0.000015, cache_read: 0.0000003, cache_write: 0.00000375, "
          "cache_write_1h: 0.000006, web_search: 0.01}")


def _stack(tmp_path_factory, mode: str):
    tmp = tmp_path_factory.mktemp(f"usage-{mode}")
    policy, ports = shifted_policy(tmp, extra="clients:\n  require_key: false\n"
                                   "provider_tools: {allow: [web_search]}\n")
    text = policy.read_text()
    assert PRICES[0] in text
    policy.write_text(text.replace(*PRICES))
    admin = f"127.0.0.1:{free_port()}"
    st = Stack(policy, tmp / "run", mode=mode, listen=f"127.0.0.1:{free_port()}",
               latency_scale=0, admin_listen=admin)
    st.start()
    st.client, st.admin_url = Client(int(st.listen.rpartition(":")[2])), f"http://{admin}"
    st.mocks = Mocks(ports)
    st.policy = load_policy(str(policy), {})
    return st


@pytest.fixture(scope="module")
def counted(tmp_path_factory):
    st = _stack(tmp_path_factory, "lua")
    yield st
    st.stop()


@pytest.fixture(scope="module")
def estimated(tmp_path_factory):
    st = _stack(tmp_path_factory, "stock")
    yield st
    st.stop()


def _metrics(st) -> dict:
    text = urllib.request.urlopen(f"{st.admin_url}/metrics", timeout=5).read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith(("router_tokens_total", "router_prompt_cache_tokens_total",
                                "router_cost_usd_total", "router_feedback_datagrams_total",
                                "router_web_searches_total"))}


def _delta(before: dict, after: dict, name: str, **labels) -> float:
    return sum(v - before.get(k, 0.0) for k, v in after.items()
               if k.startswith(name + "{") and all(f'{n}="{x}"' in k for n, x in labels.items()))


def _events(raw: bytes) -> list[dict]:
    return [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: {")]


def _seen(api: str, stream: bool, raw: bytes) -> tuple[int, int, int, int]:
    """(every input token, output tokens, cache reads, cache writes) the client was shown."""
    if not stream:
        usages = [json.loads(raw)["usage"]]
    else:
        found = [e.get("usage") or (e.get("message") or {}).get("usage")
                 or (e.get("response") or {}).get("usage") for e in _events(raw)]
        usages = [u for u in found if u]
    if api == "messages":   # message_start has the input, message_delta the output
        start, end = usages[0], usages[-1]
        read, write = start.get("cache_read_input_tokens", 0), start.get("cache_creation_input_tokens", 0)
        return start["input_tokens"] + read + write, end["output_tokens"], read, write
    usage = usages[-1]
    if api == "responses":
        return usage["input_tokens"], usage["output_tokens"], usage["input_tokens_details"]["cached_tokens"], 0
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    return usage["prompt_tokens"], usage.get("completion_tokens", 0), cached, 0


def _request(api: str, stream: bool, prefix: str, tokens: int = 30) -> tuple[str, dict]:
    """A request on `api` whose prefix (system text and an earlier turn) is ~1,500 tokens."""
    turns = [{"role": "user", "content": "Summarise: " + prefix},
             {"role": "assistant", "content": "A summary."},
             {"role": "user", "content": "Shorter, please."}]
    if api == "messages":
        system = [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]
        body = {"model": "premium", "max_tokens": tokens, "system": system, "messages": turns}
    elif api == "responses":
        body = {"model": "nano", "max_output_tokens": tokens, "input": turns}
    elif api == "completions":
        body = {"model": "nano", "max_tokens": tokens, "prompt": prefix + "\nSummarise that."}
    elif api == "embeddings":
        body = {"model": "nano", "input": prefix}
    else:
        body = {"model": "nano", "max_tokens": tokens, "messages": turns}
    if stream:
        body["stream"] = True
        if api in ("chat", "completions"):
            body["stream_options"] = {"include_usage": True}
    path = {"chat": "/v1/chat/completions"}.get(api, f"/v1/{api}")
    return path, body


CASES = [(api, stream) for api in ("chat", "completions", "responses", "messages")
         for stream in (False, True)] + [("embeddings", False)]


@pytest.mark.parametrize("spaced", [False, True], ids=["compact", "spaced"])
@pytest.mark.parametrize("api,stream", CASES)
def test_every_reported_token_is_counted_and_priced_at_its_own_rate(counted, api, stream, spaced):
    """Also from a server that writes JSON with spaces after ',' and ':'."""
    st = counted
    pin = ANTHROPIC if api == "messages" else OPENAI
    st.mocks.fault(pin, "spaced" if spaced else "")
    prefix = " ".join(f"word{uuid.uuid4().hex[:6]}" for _ in range(600))   # new to the mock's cache
    path, body = _request(api, stream, prefix)
    caching = api in ("chat", "responses", "messages")
    for attempt in (1, 2):
        before = _metrics(st)
        status, headers, raw = st.client.chat(body, path=path, headers={
            "X-Test-Pin": pin, "anthropic-version": "2023-06-01"})
        assert status == 200, raw[:300]
        endpoint = st.policy.endpoint_by_name[headers["X-Route-Endpoint"]]
        prompt, completion, read, write = _seen(api, stream, raw)
        assert prompt > 1000 and (completion > 0 or api == "embeddings")
        if caching and attempt == 1:   # the first request fills the cache (Anthropic bills it)...
            assert read == 0 and (write > 1000 if api == "messages" else write == 0), (read, write)
        elif caching:                  # ...and the second reads it
            assert read > 1000 and write == 0, (read, write)
        else:
            assert read == write == 0
        datagrams = before.get('router_feedback_datagrams_total{result="ok"}', 0)
        assert wait_until(lambda: _metrics(st).get('router_feedback_datagrams_total{result="ok"}', 0)
                          > datagrams, 5)
        after = _metrics(st)
        assert _delta(before, after, "router_tokens_total", direction="in", source="provider") == prompt
        assert _delta(before, after, "router_tokens_total", direction="out", source="provider") == completion
        assert _delta(before, after, "router_tokens_total", source="estimated") == 0
        assert _delta(before, after, "router_prompt_cache_tokens_total", op="read") == read
        assert _delta(before, after, "router_prompt_cache_tokens_total", op="write") == write
        assert _delta(before, after, "router_cost_usd_total") == pytest.approx(
            cost_usd(endpoint, prompt, completion, read, write), rel=1e-9)


@pytest.mark.parametrize("metadata", [
    {f"k{i}": "v" * 512 for i in range(16)},                      # the most OpenAI accepts: ~8 KB
    {"usage": "{", "input_tokens": "9", "note": '"usage":{"input_tokens":1,"output_tokens":1}'},
    {f"usage{i}": '"usage": {"output_tokens": 1}' * 16 for i in range(16)},
], ids=["large", "usage-keys", "large-usage-values"])
def test_usage_is_read_past_the_metadata_a_responses_object_echoes_after_it(counted, metadata):
    """The request's metadata comes back after the usage; whatever it says is no usage."""
    counted.mocks.fault(OPENAI, "")
    before = _metrics(counted)
    status, headers, raw = counted.client.chat(
        {"model": "nano", "input": "hello", "max_output_tokens": 20, "metadata": metadata},
        path="/v1/responses", headers={"X-Test-Pin": OPENAI})
    assert status == 200, raw[:300]
    answer = json.loads(raw)
    assert answer["metadata"] == metadata and raw.index(b'"usage"') < raw.index(b'"metadata"')
    datagrams = before.get('router_feedback_datagrams_total{result="ok"}', 0)
    assert wait_until(lambda: _metrics(counted).get('router_feedback_datagrams_total{result="ok"}', 0)
                      > datagrams, 5)
    after = _metrics(counted)
    assert _delta(before, after, "router_tokens_total", direction="in", source="provider") == \
        answer["usage"]["input_tokens"]
    assert _delta(before, after, "router_tokens_total", direction="out", source="provider") == \
        answer["usage"]["output_tokens"]


def test_cache_prices_default_to_the_input_price(counted):
    plain = counted.policy.endpoint_by_name[OPENAI]
    priced = counted.policy.endpoint_by_name[ANTHROPIC]
    assert plain.price_cache_read == plain.price_cache_write == plain.price_in > 0
    assert (priced.price_cache_read, priced.price_cache_write) == (0.0000003, 0.00000375)
    # An Anthropic cache read costs a tenth of a fresh input token, a write 1.25x, and a
    # write kept an hour 2x.
    assert cost_usd(priced, 1000, 0, 1000, 0) == pytest.approx(cost_usd(priced, 1000, 0) / 10)
    assert cost_usd(priced, 1000, 0, 0, 1000) == pytest.approx(cost_usd(priced, 1000, 0) * 1.25)
    assert cost_usd(priced, 1000, 0, 0, 1000, 0, 1000) == pytest.approx(cost_usd(priced, 1000, 0) * 2)
    assert plain.price_cache_write_1h == plain.price_cache_write


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_cache_write_kept_an_hour_is_priced_at_its_own_rate(counted, stream):
    """`cache_control.ttl: "1h"` makes Anthropic bill the write at 2x the input price
    (1.25x for five minutes); the answer's usage.cache_creation says how many were kept
    an hour, in message_start when streamed."""
    st = counted
    st.mocks.fault(ANTHROPIC, "")
    prefix = " ".join(f"word{uuid.uuid4().hex[:6]}" for _ in range(600))
    path, body = _request("messages", stream, prefix)
    body["system"][0]["cache_control"]["ttl"] = "1h"
    before = _metrics(st)
    status, headers, raw = st.client.chat(body, path=path, headers={
        "X-Test-Pin": ANTHROPIC, "anthropic-version": "2023-06-01"})
    assert status == 200, raw[:300]
    endpoint = st.policy.endpoint_by_name[headers["X-Route-Endpoint"]]
    prompt, completion, read, write = _seen("messages", stream, raw)
    first = _events(raw)[0]["message"]["usage"] if stream else json.loads(raw)["usage"]
    hour = first["cache_creation"]["ephemeral_1h_input_tokens"]
    assert write > 1000 and hour == write and read == 0
    datagrams = before.get('router_feedback_datagrams_total{result="ok"}', 0)
    assert wait_until(lambda: _metrics(st).get('router_feedback_datagrams_total{result="ok"}', 0)
                      > datagrams, 5)
    after = _metrics(st)
    assert _delta(before, after, "router_prompt_cache_tokens_total", op="write") == write
    cost = _delta(before, after, "router_cost_usd_total")
    assert cost == pytest.approx(cost_usd(endpoint, prompt, completion, read, write, 0, hour), rel=1e-9)
    assert cost > cost_usd(endpoint, prompt, completion, read, write) * 1.2   # not at the 5-minute price


def test_the_documented_anthropic_stream_shape_is_what_the_mock_sends(counted):
    """The case the old tail-only parse missed: the stream's last usage has no input."""
    counted.mocks.fault(ANTHROPIC, "")
    path, body = _request("messages", True, "short prefix")
    status, _, raw = counted.client.chat(body, path=path, headers={
        "X-Test-Pin": ANTHROPIC, "anthropic-version": "2023-06-01"})
    assert status == 200
    last = [e for e in _events(raw) if e.get("type") == "message_delta"][-1]
    assert set(last["usage"]) == {"output_tokens"}
    assert re.search(rb'"message_start".*"input_tokens":\d+', raw)


@pytest.mark.parametrize("tokens", [24, 300])
@pytest.mark.parametrize("api,stream", CASES)
def test_stock_mode_estimates_each_answer_within_a_factor_of_what_it_used(estimated, api, stream, tokens):
    """nginx alone cannot read the answer: its body's bytes over a ratio for its API and
    framing. One ratio for every answer counted a stream 15-25 times over."""
    st = estimated
    path, body = _request(api, stream, "a short question", tokens)
    body["min_tokens"] = tokens
    before = _metrics(st)
    status, _, raw = st.client.chat(body, path=path, headers={
        "X-Test-Pin": ANTHROPIC if api == "messages" else OPENAI, "anthropic-version": "2023-06-01"})
    assert status == 200, raw[:300]
    prompt, completion, _, _ = _seen(api, stream, raw)
    assert completion == (0 if api == "embeddings" else tokens)
    datagrams = before.get('router_feedback_datagrams_total{result="ok"}', 0)
    assert wait_until(lambda: _metrics(st).get('router_feedback_datagrams_total{result="ok"}', 0) > datagrams, 5)
    after = _metrics(st)
    assert _delta(before, after, "router_tokens_total", source="provider") == 0
    guess = _delta(before, after, "router_tokens_total", direction="out", source="estimated")
    assert 0.5 * completion <= guess <= 2 * completion, (guess, completion)   # vectors are no output
    # The input is the decision's count of the text, not the request's bytes: below the
    # mock's own count, which is its body's bytes / 4.
    assert 0 < _delta(before, after, "router_tokens_total", direction="in", source="estimated") < prompt


@pytest.mark.parametrize("fault", ["cut", "overloaded"])
def test_an_anthropic_stream_ended_early_is_estimated_not_taken_as_one_token(counted, fault):
    """message_start's output_tokens is a placeholder (1). A stream that ends before its
    message_delta (cut, or Anthropic's mid-stream overloaded_error) never reports what
    it produced, so the answer's bytes estimate it, and the series says so; the
    placeholder was counted as the provider's word."""
    st = counted
    st.mocks.fault(ANTHROPIC, fault)
    try:
        path, body = _request("messages", True, "a short question", tokens=40)
        before = _metrics(st)
        conn = http.client.HTTPConnection("127.0.0.1", st.client.port, timeout=10)
        conn.request("POST", path, json.dumps(body), {
            "Content-Type": "application/json", "X-Constitutional-Hash": HASH,
            "X-Test-Pin": ANTHROPIC, "anthropic-version": "2023-06-01"})
        resp = conn.getresponse()
        try:
            raw = resp.read()
        except http.client.IncompleteRead as exc:   # nginx closes a broken stream unterminated
            raw = exc.partial
        conn.close()
        assert resp.status == 200
        shown = sum(len(e["delta"]["text"].split()) for e in _events(raw) if e.get("type") == "content_block_delta")
        assert 0 < shown < 40 and (b"upstream_stream_interrupted" in raw or b"overloaded_error" in raw)
        datagrams = before.get('router_feedback_datagrams_total{result="ok"}', 0)
        assert wait_until(lambda: _metrics(st).get('router_feedback_datagrams_total{result="ok"}', 0) > datagrams, 5)
        after = _metrics(st)
    finally:
        st.mocks.fault(ANTHROPIC, "")
    assert _delta(before, after, "router_tokens_total", source="provider") == 0
    guess = _delta(before, after, "router_tokens_total", direction="out", source="estimated")
    assert shown <= guess <= 8 * shown, (guess, shown)


def test_a_retrieved_response_counts_no_tokens_again(counted):
    """Retrieving a stored Responses answer returns its usage again: counted once, when
    it was made (the retrieve is a request, not a generation)."""
    st = counted
    before = _metrics(st)
    status, _, raw = st.client.chat({"model": "nano", "input": "hi"}, path="/v1/responses",
                                    headers={"X-Test-Pin": OPENAI})
    assert status == 200
    made = json.loads(raw)
    status, _, got = stored_operation(st, made["id"])
    assert status == 200 and json.loads(got)["usage"] == made["usage"]
    for _ in range(2):
        assert st.client.request("GET", f"/v1/responses/{made['id']}",
                                 headers={"X-Constitutional-Hash": HASH})[0] == 200
    datagrams = before.get('router_feedback_datagrams_total{result="ok"}', 0)
    assert wait_until(lambda: _metrics(st).get('router_feedback_datagrams_total{result="ok"}', 0)
                      >= datagrams + 4, 5)
    after = _metrics(st)
    counted_in = _delta(before, after, "router_tokens_total", direction="in")
    counted_out = _delta(before, after, "router_tokens_total", direction="out")
    assert (counted_in, counted_out) == (made["usage"]["input_tokens"], made["usage"]["output_tokens"])


def test_token_counts_reserve_and_count_no_tokens(counted):
    st = counted
    before = _metrics(st)
    for path, body in (("/v1/messages/count_tokens", {"model": "premium", "messages": [
                            {"role": "user", "content": "count me " * 200}]}),
                       ("/v1/responses/input_tokens", {"model": "nano", "input": "count me " * 200})):
        status, _, raw = st.client.chat(body, path=path, headers={"anthropic-version": "2023-06-01"})
        assert status == 200 and json.loads(raw)["input_tokens"] > 300, raw
    datagrams = before.get('router_feedback_datagrams_total{result="ok"}', 0)
    assert wait_until(lambda: _metrics(st).get('router_feedback_datagrams_total{result="ok"}', 0)
                      >= datagrams + 2, 5)
    after = _metrics(st)
    assert _delta(before, after, "router_tokens_total") == 0
    assert _delta(before, after, "router_cost_usd_total") == 0


def test_a_background_responses_usage_is_counted_once_when_a_retrieve_reports_it(counted):
    """A background request is answered `queued`, with no usage: its tokens are spent
    later. They are counted when a retrieve first shows the finished answer, once."""
    st = counted
    ok = 'router_feedback_datagrams_total{result="ok"}'
    before = _metrics(st)
    status, _, raw = st.client.chat({"model": "nano", "input": "hi", "background": True,
                                     "max_output_tokens": 40}, path="/v1/responses",
                                    headers={"X-Test-Pin": OPENAI})
    queued = json.loads(raw)
    assert status == 200 and queued["status"] == "queued" and queued["usage"] is None
    assert wait_until(lambda: _metrics(st).get(ok, 0) >= before.get(ok, 0) + 1, 5)
    assert _delta(before, _metrics(st), "router_tokens_total") == 0   # nothing known yet
    status, _, got = stored_operation(st, queued["id"])
    finished = json.loads(got)
    assert status == 200 and finished["status"] == "completed"
    assert st.client.request("GET", f"/v1/responses/{queued['id']}",
                             headers={"X-Constitutional-Hash": HASH})[0] == 200
    assert wait_until(lambda: _metrics(st).get(ok, 0) >= before.get(ok, 0) + 3, 5)
    after = _metrics(st)
    usage = finished["usage"]
    assert _delta(before, after, "router_tokens_total", direction="in", source="provider") == usage["input_tokens"]
    assert _delta(before, after, "router_tokens_total", direction="out", source="provider") == usage["output_tokens"]
    assert _delta(before, after, "router_tokens_total", source="estimated") == 0


def test_stock_mode_counts_a_background_request_at_what_it_reserved(estimated):
    """nginx alone sees neither the id nor the usage: the request's reservation is the
    estimate, not the bytes of its `queued` answer."""
    st = estimated
    before = _metrics(st)
    status, _, raw = st.client.chat({"model": "nano", "input": "hi", "background": True,
                                     "max_output_tokens": 40}, path="/v1/responses",
                                    headers={"X-Test-Pin": OPENAI})
    assert status == 200 and json.loads(raw)["status"] == "queued"
    ok = 'router_feedback_datagrams_total{result="ok"}'
    assert wait_until(lambda: _metrics(st).get(ok, 0) >= before.get(ok, 0) + 1, 5)
    assert _delta(before, _metrics(st), "router_tokens_total", direction="out", source="estimated") == 40


def test_with_several_sidecar_processes_the_metrics_sum_to_the_traffic(tmp_path_factory):
    """Every process reads every feedback line; summed across their /metrics (as the
    dashboard's queries sum), each request's tokens count once, not once per process."""
    tmp = tmp_path_factory.mktemp("usage-workers")
    policy, ports = shifted_policy(tmp, extra="clients:\n  require_key: false\n")
    admin = f"127.0.0.1:{free_port()}"
    port = free_port()
    st = Stack(policy, tmp / "run", mode="lua", listen=f"127.0.0.1:{port}", latency_scale=0,
               workers=2, admin_listen=admin)
    st.start()
    try:
        client, seen = Client(port), 0
        for i in range(8):   # several client addresses: both processes decide some
            status, _, raw = client.chat({"model": "nano", "messages": [{"role": "user", "content": f"hi {i}"}]},
                                         headers={"X-Forwarded-For": f"10.9.0.{i}"})
            assert status == 200
            seen += json.loads(raw)["usage"]["completion_tokens"]

        def summed(name, **labels):
            total = 0.0
            for address in st.admin:
                text = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
                total += sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                             if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()))
            return total
        assert wait_until(lambda: summed("router_upstream_requests_total") >= 8, 5)
        assert summed("router_upstream_requests_total") == 8
        assert summed("router_tokens_total", direction="out") == seen
    finally:
        st.stop()


def _searched(st, stream: bool, searches: int) -> tuple[dict, dict, bytes, dict]:
    """A Messages request whose web search tool the mock runs `searches` times; the
    metrics before and after its feedback line, the answer and its headers."""
    st.mocks.fault(ANTHROPIC, "")
    body = {"model": "premium", "max_tokens": 40, "stream": stream,
            "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": searches}],
            "messages": [{"role": "user", "content": "What changed in the news today?"}]}
    before = _metrics(st)
    status, headers, raw = st.client.chat(body, path="/v1/messages", headers={
        "X-Test-Pin": ANTHROPIC, "anthropic-version": "2023-06-01"})
    assert status == 200, raw[:300]
    datagrams = before.get('router_feedback_datagrams_total{result="ok"}', 0)
    assert wait_until(lambda: _metrics(st).get('router_feedback_datagrams_total{result="ok"}', 0)
                      > datagrams, 5)
    return before, _metrics(st), raw, headers


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("searches", [1, 3])
def test_the_web_searches_an_answer_reports_are_counted_and_priced(counted, stream, searches):
    """Anthropic bills each search its web search tool runs (usage.server_tool_use; a
    stream's message_delta carries it): counted, and priced at price.web_search."""
    before, after, raw, headers = _searched(counted, stream, searches)
    prompt, completion, read, write = _seen("messages", stream, raw)
    reported = (_events(raw)[-2]["usage"] if stream else json.loads(raw)["usage"])["server_tool_use"]
    assert reported["web_search_requests"] == searches
    assert _delta(before, after, "router_web_searches_total", tier="premium") == searches
    endpoint = counted.policy.endpoint_by_name[ANTHROPIC]
    assert _delta(before, after, "router_cost_usd_total") == pytest.approx(
        cost_usd(endpoint, prompt, completion, read, write, searches), rel=1e-9)
    assert _delta(before, after, "router_cost_usd_total") > searches * 0.01


def test_stock_mode_cannot_read_the_searches_an_answer_reports(estimated):
    """Stock nginx never reads an answer: the searches go uncounted there (the request
    still counts in router_unpriced_requests_total)."""
    before, after, _, _ = _searched(estimated, False, 2)
    assert _delta(before, after, "router_web_searches_total") == 0
    assert _delta(before, after, "router_tokens_total", source="estimated") > 0
