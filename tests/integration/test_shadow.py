"""A shadow endpoint through real nginx (both modes): it gets the sampled requests,
generates each answer to the end as it would for a client, and what it costs is
counted apart from the routed traffic's."""

from __future__ import annotations

import json

import pytest

from conftest import metric, user, wait_until, watched_stack

SHADOW = "expert-grok-4"


@pytest.fixture(scope="module", params=["lua", "stock"])
def shadowed(request, tmp_path_factory):
    # Real token pacing, so a stream is still being written when nginx has its headers.
    st = watched_stack(tmp_path_factory.mktemp(f"shadow-{request.param}"), request.param,
                       f"limits: []\nshadow: {{endpoint: {SHADOW}, share: 1.0}}\n", latency_scale=0.2)
    yield st
    st.stop()


def test_a_shadow_generates_whole_answers_and_costs_apart(shadowed):
    st = shadowed
    st.mocks.clear()
    spent_before = metric(st, "router_cost_usd_total", tier="expert", tenant="")
    tokens_before = metric(st, "router_shadow_tokens_total", tier="expert", endpoint=SHADOW, direction="out")
    cost_before = metric(st, "router_shadow_cost_usd_total", tier="expert", endpoint=SHADOW)
    for stream in (True, True, False):
        status, headers, _ = st.client.chat(user("Tell me a long story about a lighthouse.", model="nano",
                                                 stream=stream, max_tokens=200))
        assert status == 200 and headers["X-Route-Tier"] == "nano"   # the client sees the primary
    assert wait_until(lambda: len(st.mocks.received(SHADOW)) == 3, 5)
    streamed = [r for r in st.mocks.received(SHADOW) if '"stream":true' in r["body"].replace(" ", "")]
    assert len(streamed) == 2
    # Lua mode sends the shadow its own model id, as each hop gets its own; stock mode
    # cannot rewrite a body, so the shadow gets the client's model name, as the primary does.
    expected = "grok-4" if st.mode == "lua" else "nano"
    assert {json.loads(r["body"])["model"] for r in st.mocks.received(SHADOW)} == {expected}
    # nginx reads a mirrored answer only to its headers unless it keeps it: the
    # shadow's streams were cut there, and it stopped generating.
    assert wait_until(lambda: all(r.get("streamed_to_the_end") for r in st.mocks.received(SHADOW)
                                  if '"stream":true' in r["body"].replace(" ", "")), 10)
    assert wait_until(lambda: metric(st, "router_shadow_requests_total", tier="expert", endpoint=SHADOW,
                                     status_class="2xx") >= 3, 10)
    # Its tokens and cost are counted, estimated, apart from the routed traffic's.
    tokens = metric(st, "router_shadow_tokens_total", tier="expert", endpoint=SHADOW, direction="out")
    assert tokens - tokens_before >= 3 * 20
    assert metric(st, "router_shadow_cost_usd_total", tier="expert", endpoint=SHADOW) > cost_before
    assert metric(st, "router_cost_usd_total", tier="expert", tenant="") == spent_before


def test_a_shadow_that_goes_silent_does_not_hold_the_clients_request(shadowed):
    """nginx finishes a request (its log line, the next request on its connection)
    only when its mirror has: the mirror ends at the shadow's first byte, and the
    rest of the shadow's answer is read apart from the client's request."""
    st = shadowed
    st.mocks.clear()
    st.mocks.fault(SHADOW, "hang")            # streams a first chunk, then nothing for 30 s
    try:
        routed = metric(st, "router_upstream_requests_total", tier="nano", endpoint="nano-qwen3-0-6b",
                        status_class="2xx")
        status, headers, _ = st.client.chat(user("hi", model="nano", stream=True),
                                            headers={"X-Test-Pin": "nano-qwen3-0-6b"})
        assert status == 200 and headers["X-Route-Endpoint"] == "nano-qwen3-0-6b"
        assert wait_until(lambda: len(st.mocks.received(SHADOW)) == 1, 5)
        # The client's request is done and counted while the shadow is still silent.
        assert wait_until(lambda: metric(st, "router_upstream_requests_total", tier="nano",
                                         endpoint="nano-qwen3-0-6b", status_class="2xx") == routed + 1, 10)
        assert not st.mocks.received(SHADOW)[0].get("streamed_to_the_end")
    finally:
        st.mocks.fault(SHADOW, "")
