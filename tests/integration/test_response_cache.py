"""The response cache through real nginx (both modes): an exact repeat is answered
by nginx as the endpoint that made the answer, counted as saved and not as spent;
streams, other clients, other bodies and a client's no-store/no-cache are not."""

from __future__ import annotations

import json

import pytest

from conftest import metric, user, wait_until, watched_stack

GROK = "expert-grok-4"             # the expert tier's one chat endpoint
PREMIUM = ("premium-gemini-2-flash", "premium-mixtral-8x22b", "premium-deepseek-v3")


@pytest.fixture(scope="module", params=["lua", "stock"])
def cached(request, tmp_path_factory):
    st = watched_stack(tmp_path_factory.mktemp(f"cache-{request.param}"), request.param, (
        "clients: {require_key: false, trusted_proxies: [127.0.0.1/32]}\nlimits: []\n"
        "response_cache: {ttl: 10m}\n"), latency_scale=0)
    st.client = FiledClient(st)
    yield st
    st.stop()


class FiledClient:
    """The stack's client, returning only once nginx has finished the request.

    nginx files an answer in its cache just after the client has the last byte; a
    repeat sent in that moment can reach the other worker and miss. The request's
    feedback datagram leaves in the log phase, after the answer is filed, so each
    call waits for it (a lost datagram fails the test: it would be a bug too)."""

    def __init__(self, st):
        self.st, self.client = st, st.client

    def datagrams(self) -> float:
        return metric(self.st, "router_feedback_datagrams_total", result="ok")

    def chat(self, *args, **kw):
        before = self.datagrams()
        answer = self.client.chat(*args, **kw)
        assert wait_until(lambda: self.datagrams() > before), "no feedback datagram for the request"
        return answer


@pytest.fixture
def st(cached):
    cached.mocks.clear()
    yield cached
    cached.mocks.clear()


NANO = ("nano-qwen3-0-6b", "nano-qwen3-1-7b", "nano-qwen3-4b")


@pytest.mark.parametrize("tier", ["expert", "nano"])   # one endpoint; three, weighted round robin
def test_an_exact_repeat_is_answered_by_nginx_as_the_endpoint_that_made_it(st, request, tier):
    body = user(f"What is the capital of Portugal? ({request.node.name})", model=tier)
    spent = metric(st, "router_cost_usd_total", tier=tier, tenant="")
    hits = metric(st, "router_response_cache_total", tier=tier, result="hit")
    saved_before = metric(st, "router_response_cache_saved_usd_total", tier=tier, tenant="")
    answers = []
    for _ in range(3):
        status, headers, data = st.client.chat(body)
        assert status == 200 and headers["X-Route-Tier"] == tier
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Request-Id"]
        assert not [name for name in headers if name.lower().startswith("x-route-cache")]
        answers.append((headers["X-Cache-Status"], headers["X-Request-Id"], headers["X-Route-Endpoint"], data))
    # A repeat goes to the endpoint that holds its answer, however many the tier has.
    assert [a[0] for a in answers] == ["MISS", "HIT", "HIT"]
    assert len({a[2] for a in answers}) == 1
    endpoints = (GROK,) if tier == "expert" else NANO
    assert sum(len(st.mocks.received(name)) for name in endpoints) == 1
    assert answers[1][3] == answers[2][3] == answers[0][3]       # the same answer, byte for byte
    assert len({a[1] for a in answers}) == 3                      # each request its own id
    # Spent once; the two hits are what the endpoint would have cost, counted apart.
    assert wait_until(lambda: metric(st, "router_response_cache_total", tier=tier, result="hit") >= hits + 2)
    assert wait_until(lambda: metric(st, "router_cost_usd_total", tier=tier, tenant="") > spent)
    once = metric(st, "router_cost_usd_total", tier=tier, tenant="") - spent
    saved = metric(st, "router_response_cache_saved_usd_total", tier=tier, tenant="") - saved_before
    assert saved == pytest.approx(2 * once, rel=0.05) if st.mode == "lua" else saved > 0


def test_repeats_of_different_requests_still_spread_over_the_tier(st, request):
    served = {st.client.chat(user(f"Question {i} ({request.node.name})", model="nano"))[1]["X-Route-Endpoint"]
              for i in range(24)}
    assert served == set(NANO)


@pytest.mark.parametrize("variant,expected", [
    ("stream", None), ("no-store", "BYPASS"), ("another client", "MISS"), ("another body", "MISS"),
])
def test_what_is_not_answered_from_the_cache(st, request, variant, expected):
    body = user(f"Name three rivers. ({request.node.name})", model="expert")
    status, headers, _ = st.client.chat(body)
    assert (status, headers["X-Cache-Status"]) == (200, "MISS")
    again, extra = dict(body), {}
    if variant == "stream":
        again["stream"] = True
    elif variant == "no-store":
        extra = {"Cache-Control": "max-age=0, No-Store"}
    elif variant == "another client":
        extra = {"X-Forwarded-For": "203.0.113.7"}   # nginx's peer is a trusted proxy here
    else:
        again["messages"] = [{"role": "user", "content": body["messages"][0]["content"] + " "}]
    status, headers, _ = st.client.chat(again, headers=extra)
    assert status == 200 and headers.get("X-Cache-Status") == expected
    assert len(st.mocks.received(GROK)) == 2
    if variant == "no-store":      # neither read nor kept: the next repeat is the first answer's
        assert st.client.chat(body, headers=extra)[1]["X-Cache-Status"] == "BYPASS"
        assert st.client.chat(body)[1]["X-Cache-Status"] == "HIT"
        assert len(st.mocks.received(GROK)) == 3


@pytest.mark.parametrize("condition", [{"If-None-Match": "*"}, {"If-Match": '"x"'}, {"If-Match": "*"},
                                       {"If-Unmodified-Since": "Mon, 01 Jan 1990 00:00:00 GMT"},
                                       {"If-Modified-Since": "Mon, 01 Jan 2090 00:00:00 GMT"},
                                       {"If-None-Match": '"a", W/"b"', "If-Match": '"c"'}],
                         ids=lambda c: ",".join(c))
def test_conditional_headers_on_a_cached_route_are_not_judged(st, request, condition):
    # Against a cached answer nginx judged them: a bodiless 304 for If-None-Match: *,
    # its HTML 412 for If-Match and If-Unmodified-Since. A completion has no version
    # to match; the client gets the answer.
    body = user(f"Name a colour. ({request.node.name})", model="expert")
    assert st.client.chat(body)[1]["X-Cache-Status"] == "MISS"
    assert st.client.chat(body)[1]["X-Cache-Status"] == "HIT"
    status, headers, answer = st.client.chat(body, headers=condition)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(answer)["choices"][0]["message"]["content"]
    assert len(st.mocks.received(GROK)) == 2    # asked afresh, past the cache
    assert st.client.chat(body)[1]["X-Cache-Status"] == "HIT"   # and the cache still answers the rest


@pytest.mark.parametrize("ranges", ["bytes=0-5", "bytes=0-0,10-20", "bytes=99999-"])
def test_a_range_header_gets_the_whole_cached_answer(st, request, ranges):
    # nginx serves ranges of a cached answer whose endpoint said Accept-Ranges: a
    # 206 of a few bytes of the JSON, or its HTML 416 past the end.
    st.mocks.fault(GROK, "", headers={"Accept-Ranges": "bytes"})
    body = user(f"Name a fruit. ({request.node.name})", model="expert")
    assert st.client.chat(body)[1]["X-Cache-Status"] == "MISS"
    whole = st.client.chat(body)[2]
    status, headers, answer = st.client.chat(body, headers={"Range": ranges})
    assert (status, headers["X-Cache-Status"], headers["Content-Type"]) == (200, "HIT", "application/json")
    assert answer == whole and "Content-Range" not in headers


def test_no_cache_fetches_afresh_and_keeps_the_fresh_answer(st, request):
    body = user(f"Tell me a joke. ({request.node.name})", model="expert", temperature=1.0)
    first = st.client.chat(body)[2]
    status, headers, fresh = st.client.chat(body, headers={"Cache-Control": "no-cache"})
    assert (status, headers["X-Cache-Status"]) == (200, "BYPASS")
    assert len(st.mocks.received(GROK)) == 2
    status, headers, repeat = st.client.chat(body)
    assert (headers["X-Cache-Status"], repeat) == ("HIT", fresh)
    assert fresh != first                     # the mock's answers carry their own ids


def test_a_fallback_files_its_answer_under_its_own_endpoint(st, request):
    """A hop that failed over is answered by the next endpoint; a repeat is then
    answered from the cache as that endpoint (its route headers say so), and the
    failed endpoint is asked again, never answered for."""
    first, second = PREMIUM[0], PREMIUM[1]
    st.mocks.fault(first, "status=503")
    body = user(f"Summarise the water cycle. ({request.node.name})", model="premium")
    seen = []
    for _ in range(2):
        status, headers, data = st.client.chat(body, headers={"X-Test-Pin": first})
        assert status == 200
        seen.append((headers["X-Cache-Status"], headers["X-Route-Endpoint"], headers["X-Route-Hop"], data))
    assert [s[:3] for s in seen] == [("MISS", second, "1"), ("HIT", second, "1")]
    assert seen[0][3] == seen[1][3]
    assert len(st.mocks.received(first)) == 2 and len(st.mocks.received(second)) == 1


def test_anthropic_version_is_part_of_what_repeats(st, request):
    body = {"model": "claude-3-5-haiku-latest", "max_tokens": 50,
            "messages": [{"role": "user", "content": f"Hi ({request.node.name})"}]}
    path, versions = "/v1/messages", ("2023-06-01", "2023-01-01", "2023-06-01")
    verdicts = [st.client.chat(body, headers={"anthropic-version": v}, path=path)[1]
                ["X-Cache-Status"] for v in versions]
    assert verdicts == ["MISS", "MISS", "HIT"]
