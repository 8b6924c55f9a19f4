"""The load-test kit speaks three APIs: every kind of request it sends is one the
router reads the same way in each, and its stream reader gets the same text,
usage and answer id from a provider's stream however the bytes arrive."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "loadtests"))

import apis  # noqa: E402
import scenarios  # noqa: E402
from sidecar.edge import bodies  # noqa: E402
from sidecar.tools.mock_apis import StreamEvents, Usage  # noqa: E402

PROMPTS = scenarios.load_prompts()


@pytest.mark.parametrize("kind", sorted(scenarios.DEFAULT_MIX))
def test_every_kind_reads_the_same_in_every_api(kind):
    rng = random.Random(kind)
    draw = scenarios.Scenarios({kind: 1}, PROMPTS, 0.5, rng)
    for _ in range(20):
        _, _, body, _ = draw.draw()
        chat = bodies.chat(body)
        for api in ("responses", "messages"):
            read = bodies.READERS[api](apis.shape(api, body, "resp_1" if api == "responses" else None))
            # The system prompt moves to `instructions` / `system`; the words are the same.
            assert sorted(read.text.split()) == sorted(chat.text.split()), api
            assert (read.tools, read.stream, read.system_prompt) == (chat.tools, chat.stream, chat.system_prompt)
    assert apis.shape("responses", body, "resp_1")["previous_response_id"] == "resp_1"
    assert "previous_response_id" not in apis.shape("responses", body)


def test_apis_are_drawn_at_their_weights_and_only_responses_follow_up():
    draw = scenarios.Scenarios({"chat": 1}, PROMPTS, 0.0, random.Random(7),
                               {"chat": 6, "responses": 3, "messages": 1}, followup_share=0.5)
    drawn = [draw.draw() for _ in range(4000)]
    share = {api: sum(d[1] == api for d in drawn) / len(drawn) for api in apis.PATHS}
    assert share == pytest.approx({"chat": 0.6, "responses": 0.3, "messages": 0.1}, abs=0.03)
    followups = [d for d in drawn if d[3]]
    assert {d[1] for d in followups} == {"responses"}
    assert len(followups) / sum(d[1] == "responses" for d in drawn) == pytest.approx(0.5, abs=0.05)


def test_an_unknown_api_in_the_mix_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown names in the apis: soap"):
        scenarios.parse_apis("soap=1")
    assert scenarios.parse_apis("messages=0,responses=2") == {"chat": 70, "responses": 2}


@pytest.mark.parametrize("api,answer,usage", [
    ("chat", {"usage": {"prompt_tokens": 9, "completion_tokens": 4}}, {"prompt_tokens": 9, "completion_tokens": 4}),
    ("responses", {"usage": {"input_tokens": 9, "output_tokens": 4, "total_tokens": 13}},
     {"prompt_tokens": 9, "completion_tokens": 4}),
    # Anthropic's input_tokens leaves out what was read from or written to its cache.
    ("messages", {"usage": {"input_tokens": 3, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 1,
                            "output_tokens": 4}}, {"prompt_tokens": 9, "completion_tokens": 4}),
    ("responses", {"status": "queued", "usage": None}, {}),
    ("messages", {}, {}),
])
def test_usage_is_read_as_prompt_and_completion_tokens(api, answer, usage):
    assert apis.usage(api, answer) == usage


def _stream(api: str, words: list[str], usage: Usage, complete: bool = True) -> tuple[bytes, StreamEvents]:
    events = StreamEvents(api, "m", usage)
    body = events.start()
    for i in range(0, len(words), 3):
        body += events.deltas(words[i:i + 3], i + 3 >= len(words))
    return body + (events.end(include_usage=True) if complete else b""), events


@settings(max_examples=150, deadline=None)
@given(api=st.sampled_from(sorted(apis.PATHS)), n=st.integers(1, 40), cached=st.integers(0, 20),
       cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_a_stream_reads_the_same_however_its_bytes_are_split(api, n, cached, cuts):
    words = [f"w{i}" for i in range(n)]
    usage = Usage(prompt=30 + cached, completion=n, cache_read=cached)
    body, events = _stream(api, words, usage)
    reader, texts, at = apis.StreamReader(api), 0, 0
    for cut in sorted(c % (len(body) + 1) for c in cuts) + [len(body)]:
        texts += reader.feed(body[at:cut])
        at = cut
    assert reader.usage == {"prompt_tokens": 30 + cached, "completion_tokens": n}
    assert reader.chars == sum(len(w) + 1 for w in words)
    assert texts == (len(range(0, n, 3)) if api == "messages" else n)
    assert reader.response_id == (events.response_id if api == "responses" else None)


@pytest.mark.parametrize("api", sorted(apis.PATHS))
def test_a_stream_cut_before_its_usage_reports_none(api):
    body, events = _stream(api, ["a", "b"], Usage(prompt=10, completion=2), complete=False)
    reader = apis.StreamReader(api)
    assert reader.feed(body) > 0 and reader.usage == {}
    # Responses names its answer in the first event: a follow-up can continue it.
    assert reader.response_id == (events.response_id if api == "responses" else None)
