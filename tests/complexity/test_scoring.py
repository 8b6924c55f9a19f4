"""The compiled scorer (sidecar/complexity/_scoring.c, _reading.c) reads the
signals signals.extract reads and gives the score the pure-Python reference
gives, on real prompts, hostile text and random models; refuses malformed
tables; and the package still serves without it."""

from __future__ import annotations

import ast
import copy
import json
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unseen_kinds
from sidecar.complexity import complexity, interactions, signals
from sidecar.complexity._scoring import Scorer

SPEC = json.loads(complexity.DEFAULT_MODEL.read_text())
WIDTH = len(signals.NAMES)
# CPython up to 3.11 sums floats left to right, as the scorer does; 3.12's sum()
# compensates, so there the two may differ in the last bits.
EXACT = sys.version_info < (3, 12)


def same(a: float, b: float) -> bool:
    return a == b if EXACT else a == pytest.approx(b, rel=1e-12, abs=1e-12)


def models(spec):
    return (complexity.ComplexityModel(spec, compiled=True),
            complexity.ComplexityModel(spec, compiled=False))


MODELS = models(SPEC)


def test_the_shipped_model_is_served_compiled():
    assert complexity.default_model().compiled is not None


GENERATORS = (unseen_kinds.exam_question, unseen_kinds.reasoning_puzzle,
              unseen_kinds.hard_chat_prompt, lambda rng: unseen_kinds.long_document_task(rng, 9000))


@pytest.mark.parametrize("generate", GENERATORS)
def test_generated_prompts_score_as_the_reference_scores_them(generate):
    compiled, reference = models(SPEC)
    rng = random.Random(7)
    for _ in range(60):
        dense, words = signals.extract(generate(rng))
        assert same(compiled.raw_score(dense, words), reference.raw_score(dense, words))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=600), st.integers(1, 9))
def test_any_text_scores_as_the_reference_scores_it(text, messages):
    compiled, reference = MODELS
    dense, words = signals.extract(text, messages)
    assert same(compiled.raw_score(dense, words), reference.raw_score(dense, words))


finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
trees = st.recursive(finite, lambda child: st.tuples(
    st.integers(0, WIDTH), finite, child, child).map(list), max_leaves=16)


@settings(max_examples=150, deadline=None)
@given(st.lists(trees, max_size=6), st.data())
def test_random_forests_and_signals_score_as_the_reference(forest, data):
    """Signals drawn from the bin edges themselves (bisect_right's ties), from
    beyond the clamp range, and anywhere; trees over every input, the additive
    sum included."""
    spec = copy.deepcopy(SPEC)
    spec["trees"] = forest
    compiled, reference = models(spec)
    dense = []
    for j in range(WIDTH):
        edges, (low, high) = spec["bins"][j]["edges"], spec["ranges"][j]
        dense.append(data.draw(st.one_of(st.sampled_from(edges or [low]), st.just(low - 1.0),
                                         st.just(high + 1.0), finite), label=signals.NAMES[j]))
    words = set(data.draw(st.lists(st.sampled_from(sorted(SPEC["words"])[:200] + ["zzz"]),
                                   max_size=20), label="words"))
    assert same(compiled.raw_score(dense, words), reference.raw_score(dense, words))


def test_a_model_without_trees_is_compiled_too():
    spec = copy.deepcopy(SPEC)
    del spec["trees"]
    compiled, reference = models(spec)
    assert compiled.compiled is not None
    dense, words = signals.extract("Prove that there are infinitely many primes.")
    assert same(compiled.raw_score(dense, words), reference.raw_score(dense, words))


# Text built from what the signals count: marks, phrases, set words, every class
# of byte, the whitespace str.rstrip() strips, non-ASCII letters, a lone surrogate.
PIECES = ["a", "Z", "9", "42", "'", " ", "  ", ".", "?", "!", "\n", "\n\n", "\t", "$", "\\", "{", "}",
          "(", ")", "=", ";", "`", "#", "-", "*", "^", "_", "|", "é", "ÉTÉ", "日本", "\u2028", "\u3000",
          "\xa0", "\x85", "\x1c", "\ud800", "\U0001F600", "def ", "return", "```", "import ", "{\n",
          ";\n", "\n    ", "==", "()", "=>", "\n1.", "\n- ", ". ", "? ", ".\n", "do not", "at least",
          "show that", "what if", "how many", "Must", "PROVE", "json", "essay", "strategy", "write",
          "what", "internationalization", "don't", "must'nt", "hi"]
prompts = st.lists(st.sampled_from(PIECES), max_size=120).map("".join)


def read_in_c(text: str, messages: int):
    sample, total, context = signals.sample_of(text)
    return MODELS[0].compiled.read(sample.encode("utf-8", "surrogatepass"), total, context, messages)


@settings(max_examples=400, deadline=None)
@given(st.one_of(prompts, st.text(max_size=300)), st.integers(1, 5))
def test_c_reads_the_signals_python_reads(text, messages):
    assert read_in_c(text, messages) == signals.extract(text, messages)[0]


@pytest.mark.parametrize("generate", GENERATORS)
def test_c_reads_generated_prompts_and_long_documents_as_python_does(generate):
    rng = random.Random(11)
    for _ in range(40):
        text = generate(rng)
        assert read_in_c(text, 1) == signals.extract(text, 1)[0]


@settings(max_examples=300, deadline=None)
@given(st.one_of(prompts, st.text(max_size=300)), st.integers(1, 5))
def test_assess_in_c_gives_the_reference_tier_and_score(text, messages):
    """Read and scored in C, the known words' weights are added in order of first
    appearance rather than the set's: equal to the last few bits."""
    compiled, reference = MODELS
    score, tier = compiled.assess(text, messages)
    expected_score, expected_tier = reference.assess(text, messages)
    assert tier == expected_tier
    assert score == pytest.approx(expected_score, rel=1e-12, abs=1e-12)


def test_tables_for_other_signals_are_refused():
    tables = {**signals.COMPILED_TABLES, "names": (*signals.NAMES[:-1], "log_something_new")}
    args = scorer_args(lows=SPEC_LOWS, highs=SPEC_HIGHS, weights=[0.0] * WIDTH,
                       edges=[[]] * WIDTH, steps=[[0.0]] * WIDTH, feature=[0], value=[0.0],
                       left=[0], right=[0])
    Scorer(**args, tables=signals.COMPILED_TABLES)  # the real tables are accepted
    with pytest.raises(ValueError, match="the signals changed"):
        Scorer(**args, tables=tables)
    with pytest.raises(ValueError, match="an empty mark"):
        Scorer(**args, tables={**signals.COMPILED_TABLES, "mark_sets": ((), ("",), (), ())})


def test_reading_text_needs_the_tables():
    with pytest.raises(TypeError, match="without the signal tables"):
        Scorer(**scorer_args()).score_text(b"hello", 5, 0, 1)


SPEC_LOWS = [lo for lo, _ in SPEC["ranges"]]
SPEC_HIGHS = [hi for _, hi in SPEC["ranges"]]


def scorer_args(**changes):
    args = dict(lows=[0.0], highs=[1.0], weights=[2.0], edges=[[0.5]], steps=[[0.1, 0.2]],
                bias=0.25, words={"proof": 1.0}, feature=[1, 0, 0], value=[0.5, -1.0, 3.0],
                left=[1, 0, 0], right=[2, 0, 0], roots=[0])
    args.update(changes)
    return args


def test_a_hand_computed_score():
    scorer = Scorer(**scorer_args())
    # 0.25 bias + 0.2 (0.7 is in bin 1) + 1.0 ("proof") + 2·0.7, then the tree: 0.7 > 0.5 → 3.0
    assert scorer([0.7], {"proof", "other"}) == pytest.approx(0.25 + 0.2 + 1.0 + 1.4 + 3.0)
    # 5.0 clamps to 1.0 for the weight and the tree, but bins unclamped (bin 1)
    assert scorer([5.0], set()) == pytest.approx(0.25 + 0.2 + 2.0 + 3.0)


@pytest.mark.parametrize("changes,error,message", [
    ({"left": [0, 0, 0]}, ValueError, "a child must come after its parent"),
    ({"left": [5, 0, 0]}, ValueError, r"left\[0\] is not an index in 0..2"),
    ({"right": [2, 0.5, 0]}, ValueError, r"right\[1\] is not an index"),
    ({"roots": [float("nan")]}, ValueError, r"roots\[0\] is not an index"),
    ({"feature": [9, 0, 0]}, ValueError, r"feature\[0\] is not an index in 0..2"),
    ({"steps": [[0.1]]}, ValueError, "1 edges need 2 steps"),
    ({"highs": [1.0, 2.0]}, ValueError, "differ in length"),
    ({"feature": [1, 0]}, ValueError, "differ in length"),
    ({"words": ["proof"]}, TypeError, "dict"),
    ({"words": {"proof": "heavy"}}, TypeError, "real number"),
])
def test_malformed_tables_are_refused(changes, error, message):
    with pytest.raises(error, match=message):
        Scorer(**scorer_args(**changes))


def test_a_scorer_is_built_once():
    scorer = Scorer(**scorer_args())
    with pytest.raises(TypeError, match="built once"):
        scorer.__init__(**scorer_args(bias=9.0))
    assert scorer([0.7], set()) == pytest.approx(0.25 + 0.2 + 1.4 + 3.0)


def test_the_wrong_number_of_signals_is_refused():
    with pytest.raises(ValueError, match="expected 1 signals"):
        Scorer(**scorer_args())([0.1, 0.2], set())


def test_without_the_compiled_scorer_the_model_serves_from_python():
    """What a machine without a C compiler gets: the same tiers, from the reference."""
    script = (
        "import sys; sys.modules['sidecar.complexity._scoring'] = None\n"
        "from sidecar.complexity import complexity\n"
        "m = complexity.default_model()\n"
        "assert m.compiled is None\n"
        "print(repr(m.assess('Design a lock-free queue and prove it linearizable.')))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    served = complexity.default_model().assess("Design a lock-free queue and prove it linearizable.")
    score, tier = ast.literal_eval(out.stdout)
    assert tier == served[1]
    # Not bit for bit: the child process walks its word set in another hash-seeded
    # order, so the known words' weights are added in another order.
    assert score == pytest.approx(served[0], rel=1e-12, abs=1e-12)
