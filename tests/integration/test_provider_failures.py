"""Failures real providers have, through real nginx (both modes): rate limits
(429 + Retry-After) fail over and cool the endpoint down; an endpoint that says
it does not fail over on a status hands it to the client; a silent endpoint
loses the request to the next hop at its tier's first-byte deadline; a stream
that breaks or runs too long ends with an error event (lua mode) and never
hangs; the retry budget caps fallbacks during an outage."""

from __future__ import annotations

import http.client
import json
import time

import pytest

from conftest import HASH, SECURITY, Client, Mocks, free_port, fresh_mocks, shifted_policy, wait_until
from sidecar.edge.feedback import DEFAULT_COOLDOWN_S
from sidecar.tools.stack import Stack


PROVIDER_KEY = "sk-proj-0123456789abcdefWXYZ"


def _variant(text: str) -> str:
    text = text.replace("{name: fast-deepseek-r1-8b,", '{name: fast-deepseek-r1-8b, api_key: "${MOCK_FAST_KEY}",')
    text = text.replace("first_byte_timeout_ms: 60000,  max_stream_s: 600, description: advanced",
                        "first_byte_timeout_ms: 500,  max_stream_s: 600, description: advanced")
    text = text.replace("first_byte_timeout_ms: 120000, max_stream_s: 900,",
                        "first_byte_timeout_ms: 1000, max_stream_s: 1,")
    text = text.replace("{name: balanced-qwen3-32b,", "{name: balanced-qwen3-32b, failover_on: [500, 502, 503, 504],")
    assert text.count("first_byte_timeout_ms: 500,") == 1 and "max_stream_s: 1," in text
    return text


def _stack(request, tmp_path_factory, name, edit, **kw):
    tmp = tmp_path_factory.mktemp(f"{name}-{request.param}")
    path, ports = shifted_policy(tmp)
    path.write_text(edit(path.read_text()))
    port = free_port()
    st = Stack(path, tmp / "run", mode=request.param, listen=f"127.0.0.1:{port}", **kw)
    st.start()
    st.client, st.mocks = Client(port), Mocks(ports)
    return st


@pytest.fixture(scope="module", params=["lua", "stock"])
def flaky(request, tmp_path_factory):
    st = _stack(request, tmp_path_factory, "flaky", _variant, latency_scale=0.1,
                env={"MOCK_FAST_KEY": PROVIDER_KEY})
    yield st
    st.stop()


@pytest.fixture
def fx(flaky):
    yield from fresh_mocks(flaky)


def pinned(st, endpoint, **extra):
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **extra}
    return st.client.chat(body, headers={"X-Test-Pin": endpoint})


def test_a_429_fails_over_and_cools_the_endpoint_down_for_its_retry_after(fx):
    fx.mocks.fault("fast-deepseek-r1-8b", "status=429")    # the mock says Retry-After: 1
    status, headers, _ = pinned(fx, "fast-deepseek-r1-8b")
    assert status == 200
    assert headers["X-Route-Hop"] == "1" and headers["X-Route-Endpoint"] == "fast-llama-3-1-8b"
    assert wait_until(lambda: "fast-deepseek-r1-8b" in fx.sidecar_health()["endpoints_down"], 5)
    # Cooling down: even pinned, the decision goes elsewhere first, without trying it.
    before = len(fx.mocks.received("fast-deepseek-r1-8b"))
    status, headers, _ = pinned(fx, "fast-deepseek-r1-8b")
    assert status == 200 and headers["X-Route-Hop"] == "0"
    assert len(fx.mocks.received("fast-deepseek-r1-8b")) == before
    # Back after its Retry-After.
    fx.mocks.fault("fast-deepseek-r1-8b", "")
    assert wait_until(lambda: "fast-deepseek-r1-8b" not in fx.sidecar_health()["endpoints_down"], 5)


def test_a_429_whose_retry_after_is_no_number_cools_down_for_the_default_and_comes_back(fx):
    """Retry-After: nan used to cool an endpoint down for ever, and invisibly."""
    fx.mocks.fault("fast-deepseek-r1-8b", "status=429", headers={"Retry-After": "nan"})
    status, headers, _ = pinned(fx, "fast-deepseek-r1-8b")
    assert status == 200 and headers["X-Route-Hop"] == "1"
    assert wait_until(lambda: "fast-deepseek-r1-8b" in fx.sidecar_health()["endpoints_down"], 5)
    fx.mocks.fault("fast-deepseek-r1-8b", "")
    assert wait_until(lambda: "fast-deepseek-r1-8b" not in fx.sidecar_health()["endpoints_down"],
                      DEFAULT_COOLDOWN_S + 3)
    status, headers, _ = pinned(fx, "fast-deepseek-r1-8b")
    assert status == 200 and headers["X-Route-Hop"] == "0"


def test_an_endpoint_that_refuses_the_routers_key_fails_over_and_the_client_never_sees_why(fx):
    fx.mocks.fault("fast-deepseek-r1-8b", "status=401")   # OpenAI's message: the key's last 4
    status, headers, body = pinned(fx, "fast-deepseek-r1-8b")
    assert status == 200 and headers["X-Route-Hop"] == "1", body
    (refused,) = fx.mocks.received("fast-deepseek-r1-8b")
    assert refused["headers"]["Authorization"] == f"Bearer {PROVIDER_KEY}"
    assert PROVIDER_KEY[-4:].encode() not in body and b"Incorrect API key" not in body


@pytest.mark.parametrize("refusal", [401, 403])
def test_when_no_hop_takes_the_routers_credentials_the_client_gets_a_502_in_json(fx, refusal):
    for name in ("nano-qwen3-0-6b", "nano-qwen3-1-7b", "nano-qwen3-4b"):
        fx.mocks.fault(name, f"status={refusal}")
    status, headers, body = pinned(fx, "nano-qwen3-0-6b")
    assert status == 502, body
    assert json.loads(body)["error"]["code"] == "upstream_auth_failed"
    assert b"injected" not in body and b"Incorrect" not in body
    assert headers["Content-Type"] == "application/json"
    for name, value in SECURITY.items():
        assert headers[name] == value
    assert sum(len(fx.mocks.received(name)) for name in ("nano-qwen3-0-6b", "nano-qwen3-1-7b",
                                                          "nano-qwen3-4b")) == 3   # every hop tried


@pytest.mark.parametrize("failure", [301, 304, 308, 501, 507, 520, 524, 529])
def test_every_server_error_or_redirect_fails_over_and_never_reaches_the_client(fx, failure):
    # Anthropic's 529 overloaded_error, Cloudflare's 520-527 (HTML pages in front of
    # OpenAI and others) and an endpoint's redirects reached the client as the endpoint
    # sent them, no fallback tried.
    nano = ("nano-qwen3-0-6b", "nano-qwen3-1-7b", "nano-qwen3-4b")
    in_rotation(fx, "fast-deepseek-r1-8b", *nano)   # each with no failure counted yet
    fx.mocks.clear()
    fx.mocks.fault("fast-deepseek-r1-8b", f"status={failure}")
    status, headers, body = pinned(fx, "fast-deepseek-r1-8b")
    assert status == 200 and headers["X-Route-Hop"] == "1", body
    for name in nano:
        fx.mocks.fault(name, f"status={failure}")
    status, headers, body = pinned(fx, "nano-qwen3-0-6b")
    wanted = (504, "upstream_timeout") if failure == 524 else (502, "upstream_failed")
    assert (status, json.loads(body)["error"]["code"]) == wanted, body
    assert b"injected" not in body and headers["Content-Type"] == "application/json"
    for name, value in SECURITY.items():
        assert headers[name] == value
    assert [len(fx.mocks.received(name)) for name in nano] == [1, 1, 1]   # every hop tried
    fx.mocks.clear()
    in_rotation(fx, "fast-deepseek-r1-8b", *nano)   # one failure each: none was marked down


def in_rotation(st, *names):
    """Each endpoint up and answering, its count of failures in a row back at zero."""
    assert wait_until(lambda: not set(names) & set(st.sidecar_health()["endpoints_down"]), 15)
    for name in names:
        status, headers, _ = pinned(st, name)
        assert (status, headers["X-Route-Endpoint"], headers["X-Route-Hop"]) == (200, name, "0")


@pytest.mark.parametrize("given,told", [
    (None, "1"),                   # the mock's own
    ("2.5", "2.5"),
    ("Wed, 21 Oct 2099 07:28:00 GMT", "Wed, 21 Oct 2099 07:28:00 GMT"),
    ("nan", str(int(DEFAULT_COOLDOWN_S))),   # not a Retry-After: the router's own wait
])
def test_every_hop_rate_limited_gives_the_client_a_429_with_retry_after(fx, given, told):
    nano = ("nano-qwen3-0-6b", "nano-qwen3-1-7b", "nano-qwen3-4b")
    # The previous case's 429s keep them out of rotation for a while.
    assert wait_until(lambda: not set(nano) & set(fx.sidecar_health()["endpoints_down"]),
                      DEFAULT_COOLDOWN_S + 3)
    for name in nano:
        fx.mocks.fault(name, "status=429", headers={"Retry-After": given} if given else None)
    status, headers, body = pinned(fx, "nano-qwen3-0-6b")
    assert status == 429
    assert headers["Retry-After"] == told
    error = json.loads(body)["error"]
    assert error["code"] == "upstream_rate_limited" and "injected" not in body.decode()
    for name, value in SECURITY.items():
        assert headers[name] == value
    assert "X-Mock-Internal" not in headers and "Openai-Organization" not in headers


def test_an_endpoint_that_does_not_fail_over_on_429_hands_it_to_the_client(fx):
    fx.mocks.fault("balanced-qwen3-32b", "status=429")
    status, headers, body = pinned(fx, "balanced-qwen3-32b")
    assert status == 429 and headers["Retry-After"] == "1"
    assert json.loads(body)["error"]["code"] == "upstream_rate_limited"
    assert fx.mocks.received("balanced-qwen3-32b-b") == []   # the next hop was not tried
    # ... but it still fails over on a 5xx.
    fx.mocks.fault("balanced-qwen3-32b", "status=503")
    time.sleep(1.1)   # its 429 cooldown (Retry-After: 1) ends
    status, headers, _ = pinned(fx, "balanced-qwen3-32b")
    assert status == 200 and headers["X-Route-Hop"] == "1"


@pytest.mark.parametrize("stream", [False, True])
def test_an_endpoint_silent_past_its_tiers_first_byte_deadline_loses_the_request(fx, stream):
    fx.mocks.fault("premium-gemini-2-flash", "delay=3000")   # premium's deadline here: 500 ms
    started = time.monotonic()
    status, headers, body = pinned(fx, "premium-gemini-2-flash", stream=stream)
    took = time.monotonic() - started
    assert status == 200, body
    assert headers["X-Route-Hop"] == "1" and headers["X-Route-Endpoint"] == "premium-mixtral-8x22b"
    assert took < 2.5


def _stream(st, endpoint, timeout=10, **extra):
    conn = http.client.HTTPConnection("127.0.0.1", st.client.port, timeout=timeout)
    body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "hi"}], **extra}
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {
        "Content-Type": "application/json", "X-Constitutional-Hash": HASH, "X-Test-Pin": endpoint})
    resp = conn.getresponse()
    try:
        text = resp.read().decode()
    except http.client.IncompleteRead as exc:   # the connection was closed mid-stream
        text = exc.partial.decode()
    conn.close()
    return resp.status, text


def _streamed_text(text: str) -> str:
    """The answer's text, from the chunks' deltas (one token per event)."""
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    return "".join(c["delta"].get("content", "") for e in events for c in e.get("choices") or [])


@pytest.mark.parametrize("fault", ["cut", "hang"])
def test_a_stream_that_breaks_after_its_first_byte_ends_and_never_hangs(fx, fault):
    fx.mocks.fault("expert-grok-4", fault)     # expert's deadline here: 1 s between reads
    started = time.monotonic()
    status, text = _stream(fx, "expert-grok-4")
    assert status == 200
    assert time.monotonic() - started < 5
    assert _streamed_text(text).startswith("served by expert-grok-4") and "[DONE]" not in text
    if fx.mode == "lua":
        assert text.rstrip().splitlines()[-2:] == ["event: error", text.rstrip().splitlines()[-1]]
        error = json.loads(text.rstrip().splitlines()[-1][6:])["error"]
        assert error["code"] == "upstream_stream_interrupted"


def test_a_stream_longer_than_its_tiers_maximum_is_ended_with_an_error_event(fx):
    if fx.mode == "stock":
        pytest.skip("stock nginx has no hook on a stream's body: max_stream_s is lua mode's "
                    "(docs/policy.md); the read deadline still ends a silent stream")
    started = time.monotonic()
    status, text = _stream(fx, "expert-grok-4", min_tokens=4000, max_tokens=4000)
    assert status == 200
    assert time.monotonic() - started < 3
    last = text.rstrip().splitlines()
    assert last[-2] == "event: error" and json.loads(last[-1][6:])["error"]["code"] == "stream_too_long"
    assert "[DONE]" not in text


@pytest.fixture(scope="module", params=["lua", "stock"])
def budgeted(request, tmp_path_factory):
    # One retry per 10 s window, whatever the traffic.
    st = _stack(request, tmp_path_factory, "budget",
                lambda t: t.replace("retry_budget: {ratio: 0.2, min_per_second: 10}",
                                    "retry_budget: {ratio: 0, min_per_second: 0.1}"),
                latency_scale=0, health_down_seconds=0.01)
    yield st
    st.stop()


def test_the_retry_budget_stops_fallbacks_once_spent(budgeted):
    budgeted.mocks.fault("fast-deepseek-r1-8b", "status=503")
    status, headers, _ = pinned(budgeted, "fast-deepseek-r1-8b")
    assert status == 200 and headers["X-Route-Hop"] == "1"      # the one retry the budget allows

    def refused_now():
        status, _, body = pinned(budgeted, "fast-deepseek-r1-8b")
        return status == 502 and json.loads(body)["error"]["code"] == "upstream_failed"
    # Once the feedback log has reported that retry, failures go to the client untried elsewhere.
    assert wait_until(refused_now, 5)
    before = len(budgeted.mocks.received("fast-llama-3-1-8b"))
    assert refused_now()
    assert len(budgeted.mocks.received("fast-llama-3-1-8b")) == before
    budgeted.mocks.fault("fast-deepseek-r1-8b", "")
