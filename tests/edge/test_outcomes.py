"""Outcome metrics from feedback entries: the served hop, times, tokens and cost."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from conftest import DEMO
from sidecar.edge.estimates import ENVELOPE_BYTES, STREAM_ENVELOPE_BYTES, TokenEstimates
from sidecar.edge.feedback import Feedback
from sidecar.edge.outcomes import Outcomes
from sidecar.policy.spec import load_policy

POLICY = load_policy(DEMO, {})


def entry(**kw):
    base = {"mode": "lua", "served": "fast-llama-3-1-8b", "hop": "0", "tier": "fast", "status": "200",
            "upstream_status": "200", "upstream_response_time": "0.080", "upstream_header_time": "0.030",
            "request_time": "0.081", "bytes_in": "400", "bytes_out": "900", "upstream_body_bytes": "800",
            "prompt_tokens": "100", "completion_tokens": "50", "endpoints": ["fast-llama-3-1-8b", "", ""]}
    base.update(kw)
    return base


def scrape(outcomes) -> dict:
    registry = CollectorRegistry()
    registry.register(outcomes)
    samples = {}
    for family in registry.collect():
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_usage_tokens_cost_latency_and_target_from_one_answer():
    o = Outcomes(lambda: POLICY)
    o.record(entry())
    s = scrape(o)
    e = POLICY.endpoint_by_name["fast-llama-3-1-8b"]
    assert s[("router_tokens_total", (("direction", "in"), ("source", "provider"), ("tenant", ""), ("tier", "fast")))] == 100
    assert s[("router_tokens_total", (("direction", "out"), ("source", "provider"), ("tenant", ""), ("tier", "fast")))] == 50
    assert s[("router_cost_usd_total", (("tenant", ""), ("tier", "fast")))] == pytest.approx(100 * e.price_in + 50 * e.price_out)
    assert s[("router_upstream_requests_total", (("endpoint", e.name), ("status_class", "2xx"), ("tier", "fast")))] == 1
    assert s[("router_upstream_duration_seconds_bucket", (("endpoint", e.name), ("le", "0.1"), ("tier", "fast")))] == 1
    assert s[("router_upstream_duration_seconds_bucket", (("endpoint", e.name), ("le", "0.05"), ("tier", "fast")))] == 0
    assert s[("router_upstream_ttfb_seconds_bucket", (("endpoint", e.name), ("le", "0.05"), ("tier", "fast")))] == 1
    assert s[("router_latency_target_total", (("result", "within"), ("tier", "fast")))] == 1   # 81 ms < 100


@pytest.mark.parametrize("reported,counted", [("3", 3), ("0", 0), ("", 0), ("x", 0), ("-2", 0),
                                               ("99999999999", 1000)])
def test_reported_web_searches_are_counted_and_priced_within_a_bound(reported, counted):
    """Searches are billed per search; a count that is no number is none, and one past
    any tool's max_uses is a provider's error, bounded like tokens."""
    policy = load_policy(DEMO, {})
    endpoint = policy.endpoint_by_name["fast-llama-3-1-8b"]
    policy.endpoint_by_name[endpoint.name] = endpoint = endpoint._replace(price_web_search=0.01)
    o = Outcomes(lambda: policy)
    o.record(entry(web_searches=reported))
    s = scrape(o)
    assert s.get(("router_web_searches_total", (("tenant", ""), ("tier", "fast"))), 0) == counted
    assert s[("router_cost_usd_total", (("tenant", ""), ("tier", "fast")))] == pytest.approx(
        100 * endpoint.price_in + 50 * endpoint.price_out + counted * 0.01)


@pytest.mark.parametrize("reported,counted", [("40", 40), ("60", 60), ("61", 60), ("", 0), ("x", 0),
                                               ("-5", 0), ("99999999999", 60)])
def test_cache_writes_kept_an_hour_are_priced_apart_within_the_writes(reported, counted):
    """Of 60 tokens written to the prompt cache, those kept an hour cost their own price;
    a count past the writes is the writes (a provider's error, bounded like tokens)."""
    policy = load_policy(DEMO, {})
    endpoint = policy.endpoint_by_name["fast-llama-3-1-8b"]._replace(price_cache_write=0.5, price_cache_write_1h=2.0)
    policy.endpoint_by_name[endpoint.name] = endpoint
    o = Outcomes(lambda: policy)
    o.record(entry(cache_write_tokens="60", cache_write_1h_tokens=reported))
    s = scrape(o)
    assert s[("router_prompt_cache_tokens_total", (("op", "write"), ("tenant", ""), ("tier", "fast")))] == 60
    assert s[("router_cost_usd_total", (("tenant", ""), ("tier", "fast")))] == pytest.approx(
        40 * endpoint.price_in + 50 * endpoint.price_out + (60 - counted) * 0.5 + counted * 2.0)


def test_the_served_hop_is_the_last_and_a_fallback_is_counted():
    o = Outcomes(lambda: POLICY)
    o.record(entry(served="balanced-qwen3-32b-b", hop="1", upstream_status="503 : 200",
                   upstream_response_time="0.004 : 0.300", request_time="0.305"))
    s = scrape(o)
    assert s[("router_fallback_hops_total", (("tier", "balanced"),))] == 1
    assert s[("router_latency_target_total", (("result", "over"), ("tier", "balanced")))] == 1   # 305 > 200
    assert s[("router_upstream_duration_seconds_sum", (("endpoint", "balanced-qwen3-32b-b"), ("tier", "balanced")))] == pytest.approx(0.3)


def _estimated(s, direction):
    return s.get(("router_tokens_total", (("direction", direction), ("source", "estimated"), ("tenant", ""),
                                          ("tier", "fast"))), 0)


@pytest.mark.parametrize("api,streamed", [(a, st) for a in ("chat", "completions", "responses", "messages")
                                          for st in (False, True)])
def test_without_usage_tokens_are_estimated_with_a_ratio_per_api_and_framing(api, streamed):
    o = Outcomes(lambda: POLICY)
    features = f"{api};321;1;500;0.5000;0;{'r' if streamed else ''};auto"
    stock = dict(mode="stock", prompt_tokens="", completion_tokens="", features=features,
                 stream="1" if streamed else "", upstream_body_bytes="12300")
    o.record(entry(**stock))
    s = scrape(o)
    assert _estimated(s, "in") == 321            # the decision's own count, not the request's bytes
    default = o.estimates.bytes_per_token(api, streamed)
    envelope = (STREAM_ENVELOPE_BYTES if streamed else ENVELOPE_BYTES).get(api, 0)
    text_bytes = 12300 - envelope   # what does not grow with the tokens left out
    assert _estimated(s, "out") == round(text_bytes / default)
    # A stream frames every delta as an event: tens to hundreds of bytes a token, not ~5.
    assert (default >= 40) == streamed
    # Answers that reported usage teach their own API and framing, nothing else.
    for _ in range(300):
        o.record(entry(features=features, stream=stock["stream"], upstream_body_bytes="5300",
                       completion_tokens="100"))
    learned = (5300 - envelope) / 100
    assert o.estimates.bytes_per_token(api, streamed) == pytest.approx(learned, rel=0.01)
    assert o.estimates.bytes_per_token(api, not streamed) == TokenEstimates().bytes_per_token(api, not streamed)
    other = "messages" if api != "messages" else "chat"
    assert o.estimates.bytes_per_token(other, streamed) == TokenEstimates().bytes_per_token(other, streamed)
    o.record(entry(**stock))
    assert _estimated(scrape(o), "out") - _estimated(s, "out") == round(text_bytes / learned)


def test_the_served_hops_body_bytes_are_the_last_figure():
    o = Outcomes(lambda: POLICY)
    o.record(entry(mode="stock", prompt_tokens="", completion_tokens="", stream="1",
                   features="chat;10;1;0;0.1000;0;r;auto", upstream_body_bytes="0, 812 : 4000"))
    assert _estimated(scrape(o), "out") == round(4000 / TokenEstimates().bytes_per_token("chat", True))


def test_not_forwarded_and_unknown_names_stay_out_of_the_labels():
    o = Outcomes(lambda: POLICY)
    o.record(entry(served="", status="429"))
    o.record(entry(tenant="someone-typed-this"))
    s = scrape(o)
    assert not any(k[0] == "router_upstream_requests_total" and ("status_class", "4xx") in k[1] for k in s)
    assert ("router_tokens_total", (("direction", "in"), ("source", "provider"), ("tenant", "unknown"), ("tier", "fast"))) in s


def test_the_channel_counts_unparsable_datagrams():
    o = Outcomes(lambda: POLICY)
    f = Feedback(lambda: POLICY.health, outcomes=o)
    f.datagram(b"<190>Nov 26 05:45:00 hir: {not json")
    f.datagram(b"garbage")
    import orjson
    f.datagram(b"<190>Nov 26 05:45:00 hir: " + orjson.dumps(entry()))
    assert o.datagrams == {"ok": 1, "unparsable": 2}
    key = ("router_feedback_datagrams_total", (("result", "dropped"),))
    assert key not in scrape(o)  # a unix socket: nginx itself logs what it could not send
    o.dropped = lambda: 7        # UDP: the kernel's count for the sidecar's socket
    assert scrape(o)[key] == 7


class _Clock:
    def __init__(self):
        self.now = 10**18

    def __call__(self):
        return self.now


def _background_feedback():
    from sidecar.edge.conversations import Conversations
    clock = _Clock()
    o = Outcomes(lambda: POLICY)
    f = Feedback(lambda: POLICY.health, outcomes=o, conversations=Conversations(clock_ns=clock))
    return clock, o, f


BACKGROUND = dict(features="responses;12;1;40;0.1000;1;b;nano", response_id="resp_bg1",
                  prompt_tokens="", completion_tokens="", upstream_body_bytes="1500")
RETRIEVED = dict(features="stored;0;0;0;0.0000;1;;", response_id="resp_bg1", prompt_tokens="30",
                 completion_tokens="70", upstream_body_bytes="2500")


def test_a_background_requests_usage_waits_for_the_retrieve_that_reports_it():
    _, o, f = _background_feedback()
    f.record(entry(**BACKGROUND))
    assert _estimated(scrape(o), "out") == 0 and _provider(scrape(o), "out") == 0
    f.record(entry(**{**RETRIEVED, "prompt_tokens": "", "completion_tokens": ""}))  # still running
    assert _provider(scrape(o), "out") == 0
    f.record(entry(**RETRIEVED))
    f.record(entry(**RETRIEVED))                       # polled again: counted once
    s = scrape(o)
    assert (_provider(s, "in"), _provider(s, "out"), _estimated(s, "out")) == (30, 70, 0)


def test_a_retrieve_never_counts_an_answer_that_was_counted_when_made():
    _, o, f = _background_feedback()
    f.record(entry(features="responses;12;1;40;0.1000;1;;nano", response_id="resp_bg1"))   # whole answer
    made = (_provider(scrape(o), "in"), _provider(scrape(o), "out"))
    assert made == (100, 50)
    f.record(entry(**RETRIEVED))
    assert (_provider(scrape(o), "in"), _provider(scrape(o), "out")) == made


def test_a_background_request_never_retrieved_is_counted_at_its_reservation_when_the_wait_ends():
    from sidecar.edge.conversations import WAIT_NS
    clock, o, f = _background_feedback()
    f.record(entry(**BACKGROUND))
    clock.now += WAIT_NS + 1
    f.record(entry(features="chat;5;1;0;0.1000;1;;nano"))   # any line ends overdue waits
    s = scrape(o)
    assert _estimated(s, "out") == 40 and _estimated(s, "in") == 12   # max_output_tokens, prompt
    f.record(entry(**RETRIEVED))                              # too late: already counted
    assert _provider(scrape(o), "out") == 50                  # only the chat line's own


def _provider(s, direction):
    return s.get(("router_tokens_total", (("direction", direction), ("source", "provider"), ("tenant", ""),
                                          ("tier", "fast"))), 0)


def test_background_requests_pushed_out_of_the_wait_are_counted_at_their_reservation(monkeypatch):
    from sidecar.edge import conversations
    monkeypatch.setattr(conversations, "AWAITING", 2)
    _, o, f = _background_feedback()
    for i in range(3):
        f.record(entry(**{**BACKGROUND, "response_id": f"resp_bg{i}"}))
    f.record(entry(features="chat;5;1;0;0.1000;1;;nano"))
    assert _estimated(scrape(o), "out") == 40              # the oldest, at max_output_tokens
    f.record(entry(**{**RETRIEVED, "response_id": "resp_bg2"}))
    assert _provider(scrape(o), "out") == 50 + 70          # the chat line's, and the newest's


def test_a_background_requests_late_usage_teaches_no_bytes_per_token_ratio():
    """Its bytes were the `queued` answer's, not the text's: learning from them would
    make every later estimate of a Responses answer far too high."""
    _, o, f = _background_feedback()
    before = o.estimates.bytes_per_token("responses", False)
    for i in range(50):
        f.record(entry(**{**BACKGROUND, "response_id": f"resp_bg{i}"}))
        f.record(entry(**{**RETRIEVED, "response_id": f"resp_bg{i}"}))
    assert _provider(scrape(o), "out") == 50 * 70
    assert o.estimates.bytes_per_token("responses", False) == before


def test_processes_that_all_read_every_line_count_each_request_once_between_them():
    """nginx sends every feedback line to every sidecar process (health and settlement
    need them all); summed across processes, the traffic metrics must count each once."""
    import uuid
    processes = []
    for index in range(3):
        o = Outcomes(lambda: POLICY)
        processes.append((o, Feedback(lambda: POLICY.health, outcomes=o, share=(index, 3))))
    lines = [entry(internal_id=uuid.uuid4().hex) for _ in range(60)] + [entry(internal_id="")]
    for line in lines:
        for _, f in processes:
            f.record(dict(line))
    counted = [_provider(scrape(o), "out") for o, _ in processes]
    assert sum(counted) == 50 * len(lines) and all(counted)   # once each, and spread


def test_a_shadow_answers_tokens_and_cost_are_estimated_and_counted_apart():
    o = Outcomes(lambda: POLICY)
    grok = POLICY.endpoint_by_name["expert-grok-4"]
    body = 6_000
    shadow = {"shadow": "1", "served": "expert-grok-4", "status": "200", "upstream_status": "200",
              "upstream_response_time": "1.500", "features": "chat;120;1;256;0.4;;r;nano", "stream": "1",
              "upstream_body_bytes": str(body)}
    o.record_shadow(shadow)
    o.record_shadow({**shadow, "status": "502", "upstream_status": "502"})   # nothing generated
    s = scrape(o)
    out = round((body - STREAM_ENVELOPE_BYTES.get("chat", 0)) / o.estimates.bytes_per_token("chat", True))
    labels = (("endpoint", "expert-grok-4"), ("tier", "expert"))
    assert s[("router_shadow_tokens_total", (("direction", "in"), *labels))] == 120
    assert s[("router_shadow_tokens_total", (("direction", "out"), *labels))] == out
    assert s[("router_shadow_cost_usd_total", labels)] == pytest.approx(120 * grok.price_in + out * grok.price_out)
    assert s[("router_shadow_requests_total", (labels[0], ("status_class", "5xx"), labels[1]))] == 1
    # Never in the routed traffic's tokens or cost, nor a lesson for the estimates.
    assert not any(name in ("router_tokens_total", "router_cost_usd_total") for name, _ in s)
    assert o.estimates.learned == {}


def test_an_answer_from_the_response_cache_is_saved_not_spent_and_no_endpoint_saw_it():
    o = Outcomes(lambda: POLICY)
    f = Feedback(lambda: POLICY.health, outcomes=o)
    e = POLICY.endpoint_by_name["fast-llama-3-1-8b"]
    f.record(entry(cache="MISS"))
    for _ in range(3):   # nginx answered: no upstream status, no times
        f.record(entry(cache="HIT", upstream_status="", upstream_response_time="", upstream_header_time="",
                       upstream_body_bytes=""))
    f.record(entry(cache="BYPASS", status="502", upstream_status="502"))
    s = scrape(o)
    labels = (("endpoint", "fast-llama-3-1-8b"), ("tier", "fast"))
    assert s[("router_upstream_requests_total", (labels[0], ("status_class", "2xx"), labels[1]))] == 1
    assert s[("router_cost_usd_total", (("tenant", ""), ("tier", "fast")))] == pytest.approx(
        100 * e.price_in + 50 * e.price_out)
    assert s[("router_response_cache_saved_usd_total", (("tenant", ""), ("tier", "fast")))] == pytest.approx(
        3 * (100 * e.price_in + 50 * e.price_out))
    verdicts = {dict(k)["result"]: v for (name, k), v in s.items() if name == "router_response_cache_total"}
    assert verdicts == {"miss": 1, "hit": 3, "bypass": 1}
    assert s[("router_latency_target_total", (("result", "within"), ("tier", "fast")))] == 5   # hits too
    assert f.failures == {"fast-llama-3-1-8b": 1}   # only the 502 was the endpoint's
