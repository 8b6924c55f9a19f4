"""Signals the complexity model reads: shape, bounded work, the question-decides split."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.complexity import signals

DOC = "The meeting went fine and everyone agreed on the plan for next week. " * 60


def signal(text, name, messages=1):
    return signals.extract(text, messages)[0][signals.NAMES.index(name)]


def test_one_value_per_name():
    dense, words = signals.extract("Write a function that adds two numbers.")
    assert len(dense) == len(signals.NAMES)
    assert {"write", "function", "adds", "numbers"} <= words


@pytest.mark.parametrize("layout,ask", [
    (DOC + "\n\nWho agreed on the plan?", "Who agreed on the plan?"),
    (DOC + "\nWho agreed on the plan?", "Who agreed on the plan?"),
    ("Summarise these notes in one line:\n" + DOC, "Summarise these notes in one line:"),
])
def test_a_long_document_is_judged_by_its_question(layout, ask):
    text, context = signals.split_question(layout)
    assert text.strip() == ask
    assert context > 3000
    assert signal(layout, "log_context_chars") > 8
    assert signals.extract(layout)[1] == signals.extract(ask)[1]  # words of the question only


def test_short_prompts_are_read_whole():
    assert signals.split_question("Who agreed?\n\nThe plan.") == ("Who agreed?\n\nThe plan.", 0)


@pytest.mark.parametrize("text,name,expected", [
    ("```python\ndef f(x):\n    return x\n```", "code_block", 1.0),
    ("Write a detailed essay and a summary", "log_output_asks", pytest.approx(1.386294361)),
    ("Suppose I must choose: what would you recommend?", "log_open_asks", pytest.approx(1.386294361)),
    ("What if the pros outweigh the cons?", "log_open_asks", pytest.approx(1.386294361)),
    ("What? Why? How?", "multi_question", 1.0),
    ("hello there", "log_messages", 0.0),
])
def test_named_signals(text, name, expected):
    assert signal(text, name) == expected


def test_more_latex_means_more_latex_signal():
    assert signal("Solve $x^2 + \\frac{1}{2} = \\sqrt{y}$", "log_latex") > signal("Solve x squared", "log_latex")


def test_tiny_prompts_do_not_produce_extreme_ratios():
    for text in ("hi", "2+2", "?", ""):
        dense, _ = signals.extract(text)
        assert all(abs(v) < 50 for v in dense), text


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=3000), st.integers(1, 50))
def test_any_text_gives_finite_signals(text, messages):
    dense, words = signals.extract(text, messages)
    assert all(v == v and abs(v) != float("inf") for v in dense)
    assert all(isinstance(w, str) for w in words)


def test_work_is_bounded_by_the_windows():
    huge = "word " * 100_000 + "\n\nWhat should we do now?"
    head_and_tail = signals.windows("x" * 1_000_000)
    assert len(head_and_tail) <= 2 * signals.WINDOW + 1
    assert signals.extract(huge)[1] == {"what", "should", "we", "do", "now"}
