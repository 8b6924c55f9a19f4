"""Each API's body reader: the text and signals it takes, and that any JSON at
all either reads or is refused with a 400, never an exception of another kind."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.denials import Denied
from sidecar.edge import bodies
from sidecar.edge.catalog import Catalog
from sidecar.policy.spec import load_policy
from conftest import DEMO


@pytest.mark.parametrize("api,field", [("embeddings", "input"), ("completions", "prompt")])
def test_texts_and_token_ids_are_read(api, field):
    read = bodies.READERS[api]
    assert read({field: "hello"}).text == "hello"
    assert read({field: ["a", "b", "c"]}).text == "a\nb\nc"
    assert read({field: [1, 2, 3]}).beyond_text == 12          # a token id ~ 4 chars
    assert read({field: [[1, 2], [3]]}).beyond_text == 12
    assert read({field: [0]}).beyond_text == 4                  # id 0 is a token
    assert read({field: [7] * 40_000}).beyond_text == 160_000   # one long prompt, not 40k entries
    with pytest.raises(Denied, match="at most 2048"):
        read({field: [[7]] * 2049})                              # a batch is bounded
    for bad in ({}, {field: []}, {field: [1, "a"]}, {field: [[]]}, {field: {"a": 1}},
                {field: [True]}, {field: 5}, {field: [[1], "a"]}, {field: [-1]}, {field: [3, -2]},
                {field: [[1], [-1]]}):
        with pytest.raises(Denied):
            read(bad)
    assert bodies.embeddings({"input": ["a", "b", "c"]}).messages == 3


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([("embeddings", "input"), ("completions", "prompt")]),
       st.lists(st.integers(0, 2**31), max_size=20), st.integers(-2**31, -1), st.integers(0, 20),
       st.booleans())
def test_a_negative_token_id_anywhere_is_refused(api, ids, negative, at, batched):
    """Generated: a negative id at any place of a prompt, alone or in a batch, is a 400;
    the same ids without it read."""
    name, field = api
    read = bodies.READERS[name]
    assert read({field: [[7], ids or [0]] if batched else ids or [0]})
    bad = ids[:at] + [negative] + ids[at:]
    with pytest.raises(Denied):
        read({field: [[7], bad] if batched else bad})


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 50), st.integers(1, 5), st.booleans(), st.sampled_from(["n", "best_of"]))
def test_each_prompt_of_a_completions_batch_gets_its_own_answers(batch, n, as_ids, field):
    """OpenAI answers every prompt of a batch with `n` choices: a reservation
    sized for one prompt would let a batch of fifty under a token limit."""
    one = [1, 2, 3] if as_ids else "hi"
    assert bodies.completions({"prompt": [one] * batch, field: n}).choices == batch * n
    assert bodies.completions({"prompt": one, field: n}).choices == n   # a single prompt, bare


@settings(max_examples=100, deadline=None)
@given(st.none() | st.integers(1, 10**6), st.none() | st.integers(1, 10**6))
def test_a_chat_answer_is_reserved_at_the_larger_of_its_two_size_fields(max_tokens, completion):
    """max_completion_tokens replaced max_tokens; when both are sent, servers honour
    the new one, so reading the first alone let a tiny max_tokens hide a large answer."""
    body = {"messages": [{"role": "user", "content": "hi"}]}
    for field, value in (("max_tokens", max_tokens), ("max_completion_tokens", completion)):
        if value is not None:
            body[field] = value
    assert bodies.chat(body).max_tokens == max(max_tokens or 0, completion or 0)
    for field in ("max_tokens", "max_completion_tokens"):   # each is checked, whichever comes first
        for wrong in (0, -1, 1.5, "5", True):
            with pytest.raises(Denied, match=field):
                bodies.chat({**body, field: wrong})


def test_responses_read_instructions_items_and_max_output_tokens():
    read = bodies.responses({"input": [
        {"role": "user", "content": [{"type": "input_text", "text": "part one"}]},
        {"type": "function_call_output", "call_id": "c1", "output": "tool said"},
        {"role": "assistant", "content": "earlier answer"}],
        "instructions": "be terse", "max_output_tokens": 300, "stream": True,
        "tools": [{"type": "function", "name": "f"}]})
    assert read.text.split("\n") == ["be terse", "part one", "tool said", "earlier answer"]
    assert (read.messages, read.system_prompt, read.max_tokens, read.stream, read.tools) == (3, True, 300, True, True)
    assert bodies.responses({"input": "hi"}).text == "hi"
    for bad in ({}, {"input": 3}, {"input": [3]}, {"input": "x", "max_output_tokens": 0},
                {"input": [{"role": "king", "content": "x"}]}):
        with pytest.raises(Denied):
            bodies.responses(bad)


def test_anthropic_messages_read_system_blocks_and_need_max_tokens():
    read = bodies.messages({"system": [{"type": "text", "text": "you are terse"}], "max_tokens": 64,
                            "messages": [{"role": "user", "content": [
                                {"type": "text", "text": "question"},
                                {"type": "tool_result", "tool_use_id": "t", "content": "result text"}]}]})
    assert read.text.split("\n") == ["you are terse", "question", "result text"]
    assert (read.system_prompt, read.max_tokens, read.messages) == (True, 64, 1)
    with pytest.raises(Denied, match="'max_tokens' is required"):
        bodies.messages({"messages": [{"role": "user", "content": "hi"}]})
    with pytest.raises(Denied, match="role"):   # system is not a turn in Anthropic's API
        bodies.messages({"max_tokens": 5, "messages": [{"role": "system", "content": "hi"}]})


TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=300)


@settings(max_examples=150, deadline=None)
@given(question=TEXT, document=TEXT, as_blocks=st.booleans(), title=st.none() | TEXT)
def test_a_plain_text_document_block_is_read_as_the_same_text_inline(question, document, as_blocks, title):
    """Anthropic's document blocks carry a plain-text source as `data`, or as
    content blocks: the router reads that text as prompt, so a long document sent
    this way weighs what the same document pasted inline weighs."""
    source = ({"type": "content", "content": [{"type": "text", "text": document}]} if as_blocks
              else {"type": "text", "media_type": "text/plain", "data": document})
    block = {"type": "document", "source": source, **({"title": title} if title is not None else {})}
    sent = bodies.messages({"max_tokens": 5, "messages": [{"role": "user", "content": [
        block, {"type": "text", "text": question}]}]})
    inline = bodies.messages({"max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "text", "text": document}, {"type": "text", "text": question}]}]})
    assert sent.text == inline.text
    assert sent.beyond_text == inline.beyond_text + len((title or "").encode())


def test_documents_without_text_and_refusals():
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                          "data": "JVBERi0xLjQK" * 100}, "context": "a contract"}
    read = bodies.messages({"max_tokens": 5, "messages": [{"role": "user", "content": [
        pdf, {"type": "text", "text": "summarise it"}]}]})
    assert read.text == "summarise it"          # base64 is not text: its bytes are no token count
    assert read.beyond_text == len("a contract")
    read = bodies.chat({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": [
        {"type": "refusal", "refusal": "I can't help with that."}]}, {"role": "user", "content": "why?"}]})
    assert read.text.split("\n") == ["q", "I can't help with that.", "why?"]
    for odd in ({"type": "document"}, {"type": "document", "source": "x"},
                {"type": "document", "source": {"type": "text", "data": 5}},
                {"type": "document", "source": {"type": "content", "content": [5]}}):
        try:
            read = bodies.messages({"max_tokens": 5, "messages": [{"role": "user", "content": [odd]}]})
        except Denied as denied:
            assert denied.status == 400
        else:
            assert read.text == ""


@pytest.mark.parametrize("api,roles,contentless", [
    ("chat", bodies.OPENAI_ROLES, {"assistant", "function"}),
    ("messages", bodies.ANTHROPIC_ROLES, set()),
])
@pytest.mark.parametrize("content", ["null", "left out"])
def test_only_a_turn_that_may_call_tools_instead_goes_without_content(api, roles, contentless, content):
    """Providers refuse a user, system or tool turn with no content; an assistant
    turn that only calls tools (and a legacy function result) may have none."""
    for role in sorted(roles):
        turn = {"role": role} if content == "left out" else {"role": role, "content": None}
        body = {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}, turn]}
        if role in contentless:
            assert bodies.READERS[api](body).text == "hi"
            continue
        with pytest.raises(Denied) as info:
            bodies.READERS[api](body)
        assert (info.value.status, info.value.message) == (
            400, f"'messages[1].content' is required for a {role} turn")


@pytest.mark.parametrize("role", sorted(bodies.OPENAI_ROLES))
def test_a_responses_message_needs_content_and_other_items_need_none(role):
    for item in ({"role": role}, {"role": role, "content": None}, {"type": "message", "role": role}):
        with pytest.raises(Denied) as info:
            bodies.responses({"input": [item]})
        assert info.value.message == f"'input[0].content' is required for a {role} message"
    read = bodies.responses({"input": [{"role": role, "content": "hi"},
                                       {"type": "function_call_output", "call_id": "c1", "output": "42"}]})
    assert read.text == "hi\n42"


JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=5)
                    | st.sampled_from(["document", "text", "content"]),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
                        st.sampled_from(["role", "content", "type", "text", "input", "messages",
                                         "prompt", "system", "max_tokens", "instructions", "output",
                                         "stream", "tools", "max_output_tokens", "tool_calls",
                                         "function_call", "arguments", "source", "data", "title",
                                         "refusal", "include_usage", "summary", "image_url"]),
                        kids, max_size=4),
                    max_leaves=12)
FIELDS = st.dictionaries(st.sampled_from(["messages", "prompt", "input", "system", "instructions",
                                          "max_tokens", "max_output_tokens", "stream", "tools",
                                          "functions", "max_completion_tokens", "response_format",
                                          "text", "stream_options", "suffix", "n", "best_of"]),
                              JSON, max_size=5)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(bodies.READERS)), FIELDS)
def test_any_json_reads_or_is_refused_with_a_400(api, body):
    try:
        read = bodies.READERS[api](body)
    except Denied as denied:
        assert denied.status == 400 and denied.reason == "invalid_request"
        return
    assert isinstance(read.text, str) and read.messages >= 1 and read.max_tokens >= 0
    assert read.beyond_text >= 0


def test_the_model_list_is_openai_shaped_and_follows_the_tenants_tiers():
    policy = load_policy(DEMO, {})
    listing = orjson.loads(Catalog().answer(policy, None, ""))
    ids = [m["id"] for m in listing["data"]]
    assert listing["object"] == "list" and ids[:6] == ["auto", "nano", "fast", "balanced", "premium", "expert"]
    assert {"gpt-4o", "text-embedding-3-small"} <= set(ids)
    assert all(m["object"] == "model" and isinstance(m["created"], int) for m in listing["data"])

    class Tenant:
        tiers = frozenset({"nano", "fast"})
    limited = [m["id"] for m in orjson.loads(Catalog().answer(policy, Tenant, ""))["data"]]
    assert "premium" not in limited and "gpt-4o" not in limited and "gpt-4o-mini" in limited
    with pytest.raises(Denied) as info:
        Catalog().answer(policy, None, "gpt-9")
    assert (info.value.status, info.value.reason) == (404, "model_not_found")


B64 = "QUJD" * 25_000   # 100 KB of base64: an image's, a sound's or a file's bytes
MEDIA_PARTS = {
    "chat image": ("chat", {"type": "image_url", "image_url": {"url": "data:image/png;base64," + B64}}),
    "chat audio": ("chat", {"type": "input_audio", "input_audio": {"data": B64, "format": "wav"}}),
    "chat file": ("chat", {"type": "file", "file": {"filename": "a.pdf", "file_data": B64}}),
    "responses image": ("responses", {"type": "input_image", "image_url": "data:image/png;base64," + B64}),
    "responses file": ("responses", {"type": "input_file", "filename": "a.pdf", "file_data": B64}),
    "anthropic image": ("messages", {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                  "data": B64}}),
    "anthropic redacted thinking": ("messages", {"type": "redacted_thinking", "data": B64}),
}


@pytest.mark.parametrize("shape", MEDIA_PARTS)
def test_media_bytes_are_no_token_count(shape):
    """Every field of a block counts as input except the text (read as prompt)
    and media payloads: a provider prices an image or a file by other rules, and
    counting its base64 would send a screenshot to the long-prompt tier."""
    api, part = MEDIA_PARTS[shape]
    role = "assistant" if part["type"] == "redacted_thinking" else "user"
    key = "input" if api == "responses" else "messages"
    body = {key: [{"role": role, "content": [part, {"type": "text" if api != "responses" else "input_text",
                                                    "text": "what is this?"}]}], "max_tokens": 5}
    read = bodies.READERS[api](body)
    assert read.text == "what is this?"
    assert read.beyond_text < 100


@pytest.mark.parametrize("api", ["chat", "messages", "responses"])
@pytest.mark.parametrize("odd", [5, 1.5, True, ["a"], {"a": "b"}])
def test_a_text_part_whose_text_is_not_a_string_is_refused(api, odd):
    key = "input" if api == "responses" else "messages"
    body = {key: [{"role": "user", "content": [{"type": "text", "text": odd}]}], "max_tokens": 5}
    with pytest.raises(Denied) as info:
        bodies.READERS[api](body)
    assert info.value.status == 400 and f"'{key}[0].content[0].text' must be a string" in info.value.message


@pytest.mark.parametrize("options", [5, "yes", [True], {"include_usage": "yes"}, {"include_usage": 1}])
def test_stream_options_the_router_reads_must_be_well_typed(options):
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True, "stream_options": options}
    with pytest.raises(Denied) as info:
        bodies.chat(body)
    assert info.value.status == 400 and info.value.message.startswith("'stream_options")
    assert bodies.chat({**body, "stream_options": {"include_usage": True}}).stream
