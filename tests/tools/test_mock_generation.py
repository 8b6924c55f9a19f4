"""The simulated models: latency and length distributions, token bounds, fault rates."""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.tools.mock_generation import FAULTS, TIER_LATENCY_MS, TYPICAL_TOKENS, Model, parse_rates


@pytest.mark.parametrize("rank", sorted(TIER_LATENCY_MS))
def test_a_typical_answer_takes_the_tiers_measured_latency_on_average(rank):
    model = Model(rank, rng=random.Random(rank))
    totals, ttfts = [], []
    for _ in range(4000):
        g = model.generation({"min_tokens": TYPICAL_TOKENS, "max_tokens": TYPICAL_TOKENS})
        totals.append(g.ttft_s + g.tokens * g.seconds_per_token)
        ttfts.append(g.ttft_s)
    assert statistics.mean(totals) * 1000 == pytest.approx(TIER_LATENCY_MS[rank], rel=0.05)
    assert statistics.pstdev(ttfts) > 0   # a distribution, not a fixed sleep
    assert max(totals) > 1.3 * statistics.median(totals)  # it has a tail


@given(st.integers(1, 5000), st.integers(1, 5000), st.integers(0, 2**32))
def test_lengths_stay_within_min_and_max_tokens(low, high, seed):
    model = Model(3, rng=random.Random(seed))
    tokens = model.generation({"min_tokens": low, "max_tokens": high}).tokens
    assert tokens == high if low > high else low <= tokens <= high


def test_faults_happen_at_their_rates():
    model = Model(1, fault_rates={"429": 0.1, "503": 0.05, "stall": 0.01}, rng=random.Random(3))
    drawn = [model.fault() for _ in range(20000)]
    assert drawn.count("429") / 20000 == pytest.approx(0.1, abs=0.01)
    assert drawn.count("503") / 20000 == pytest.approx(0.05, abs=0.008)
    assert drawn.count("stall") / 20000 == pytest.approx(0.01, abs=0.004)
    assert set(drawn) <= set(FAULTS) | {""}


def test_latency_scale_zero_answers_at_once():
    g = Model(5, latency_scale=0).generation({})
    assert g.ttft_s == 0 and g.seconds_per_token == 0


@pytest.mark.parametrize("text,message", [("teapot=0.1", "unknown fault 'teapot'"),
                                          ("429=0.7,503=0.5", "more than 1")])
def test_bad_fault_rates_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        parse_rates(text)
