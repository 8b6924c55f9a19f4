"""The shipped complexity model: loads, calibrates monotonically, routes the
shapes it must not be fooled by."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar import complexity

MODEL = complexity.default_model()
NOTES = "The meeting went fine and everyone agreed on the plan for next week. " * 200


def test_the_model_file_is_small_and_matches_the_signals():
    assert complexity.DEFAULT_MODEL.stat().st_size < 5 * 1024 * 1024
    assert len(MODEL.dense) == len(MODEL.edges)


@settings(max_examples=300, deadline=None)
@given(st.floats(-50, 50), st.floats(0, 10))
def test_calibration_is_monotone_and_bounded(s, step):
    low, tier_low = MODEL.calibrate(s)
    high, tier_high = MODEL.calibrate(s + step)
    assert 0.0 <= low <= high <= 1.0
    assert tier_low <= tier_high


def test_the_cut_points_land_on_the_policy_thresholds():
    for i, cut in enumerate(MODEL.thresholds):
        score, tier = MODEL.calibrate(cut)
        assert score == pytest.approx(complexity.TIER_CUTS[i])
        assert tier == i + 2
        assert complexity.tier_for(score + 1e-9) == tier


@pytest.mark.parametrize("prompt,most", [
    ("hi", 1),
    ("what's the weather like tomorrow", 1),
    ("Is it safe to eat raw cookie dough?", 1),
    (NOTES + "\n\nWho agreed on the plan?", 2),             # long but easy: the question decides
    ("Summarise these notes in one line:\n" + NOTES, 2),
])
def test_easy_prompts_stay_low(prompt, most):
    assert MODEL.assess(prompt)[1] <= most


@pytest.mark.parametrize("prompt,least", [
    ("Let $f(x)=x^3-3x+1$. Find all real $x$ such that $f(f(x))=0$ and prove that the sum of "
     "their squares is an integer.", 3),                     # short but hard
    ("Find the number of ordered pairs $(a,b)$ of integers with $1 \\le a,b \\le 100$ such that "
     "$a^2+b^2$ is divisible by $7$ and $\\gcd(a,b)=1$.", 3),
])
def test_short_hard_math_goes_high(prompt, least):
    assert MODEL.assess(prompt)[1] >= least


def test_contributions_name_the_signals_that_moved_the_score():
    parts = MODEL.contributions("Prove that $\\sqrt{2}$ is irrational.", top=4)
    assert len(parts) == 4
    assert all(isinstance(name, str) and isinstance(v, float) for name, v in parts)
    assert abs(parts[0][1]) >= abs(parts[-1][1])


def test_a_model_for_other_signals_is_refused(tmp_path):
    spec = json.loads(complexity.DEFAULT_MODEL.read_text())
    spec["signals"] = spec["signals"][:-1]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="made for other signals"):
        complexity.load(path)
