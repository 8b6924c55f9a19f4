"""Keys a provider's decoder would read as a field the router reads: refused at every
place the router reads one, in every spelling such a decoder takes (tests/respellings.py
models the decoders apart from the code); keys no decoder confuses with one pass."""

from __future__ import annotations

import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.denials import Denied
from sidecar.edge import bodies, features, unpriced
from sidecar.edge.features import Features, extract, parse_body
from respellings import camel, dotnet_reads_as, go_reads_as, respelled

MSG = [{"role": "user", "content": "hi"}]
CHAT, RESPONSES, MESSAGES = "/v1/chat/completions", "/v1/responses", "/v1/messages"


def place_key(place: str, key: str, value="x"):
    """(path, body) with `key` added where `place` says."""
    if place == "top":
        return CHAT, {"model": "auto", "messages": MSG, key: value}
    if place == "turn":
        return CHAT, {"model": "auto", "messages": [{"role": "user", "content": "hi", key: value}]}
    if place == "block":
        return CHAT, {"model": "auto", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi", key: value}]}]}
    if place == "input_item":
        return RESPONSES, {"model": "auto", "input": [{"role": "user", "content": "hi", key: value}]}
    if place == "tool":
        return CHAT, {"model": "auto", "messages": MSG,
                      "tools": [{"type": "function", "function": {"name": "f"}, key: value}]}
    if place == "tool_choice":
        return CHAT, {"model": "auto", "messages": MSG, "tools": [{"type": "function", "function": {"name": "f"}}],
                      "tool_choice": {"type": "function", "function": {"name": "f"}, key: value}}
    if place == "stream_options":
        return CHAT, {"model": "auto", "messages": MSG, "stream": True,
                      "stream_options": {"include_usage": True, key: False}}
    if place == "conversation":
        return RESPONSES, {"model": "auto", "input": "hi", "conversation": {"id": "conv_1", key: value}}
    if place == "search_parameters":
        return CHAT, {"model": "auto", "messages": MSG, "search_parameters": {"mode": "off", key: "on"}}
    if place == "document_source":
        return MESSAGES, {
            "model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": [
                {"type": "document", "source": {"type": "text", "data": "hi", key: "x"}}]}]}
    if place in ("plugins", "data_sources"):
        return CHAT, {"model": "auto", "messages": MSG, place: [{"id": "x", "type": "x", key: "web"}]}
    raise AssertionError(place)


# Each place, and the names the router reads there.
PLACES = {
    "top": features.TOP_LEVEL_NAMES.names,
    "turn": bodies.TURN_NAMES.names,
    "block": bodies.BLOCK_NAMES.names,
    "input_item": bodies.TURN_NAMES.names,
    "tool": unpriced.TOOL_NAMES.names,
    "tool_choice": unpriced.TYPE_NAMES.names,
    "stream_options": bodies.STREAM_OPTION_NAMES.names,
    "conversation": bodies.ID_NAMES.names,
    "search_parameters": unpriced.FIELD_NAMES["search_parameters"].names,
    "document_source": bodies.SOURCE_NAMES.names,
    "plugins": unpriced.FIELD_NAMES["plugins"].names,
    "data_sources": unpriced.FIELD_NAMES["data_sources"].names,
}


def run(path, body):
    return extract(Features("POST", path, {}), parse_body(orjson.dumps(body), "application/json"))


# The top-level fields the router reads, listed here from the readers (sidecar.edge.bodies,
# features, unpriced, conversations, decision), not from the list the check uses.
ROUTER_READS = [
    "model", "messages", "prompt", "input", "system", "instructions", "stream", "stream_options",
    "max_tokens", "max_completion_tokens", "max_output_tokens", "n", "best_of", "tools", "functions",
    "response_format", "text", "suffix", "tool_choice", "service_tier", "speed",
    "web_search_options", "search_parameters", "mcp_servers", "plugins", "data_sources", "models",
    "fallbacks", "route", "context_window_fallback_dict", "previous_response_id", "conversation",
    "container", "background"]


@pytest.mark.parametrize("name", ROUTER_READS)
def test_every_top_level_field_the_router_reads_is_guarded(name):
    with pytest.raises(Denied) as info:
        run(*place_key("top", name.upper()))
    assert info.value.reason == "ambiguous_key"


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(PLACES)), st.integers(0, 2**32), st.data())
def test_a_respelling_any_decoder_reads_as_a_read_field_is_refused(place, seed, data):
    name = data.draw(st.sampled_from(sorted(PLACES[place])))
    key = respelled(random.Random(seed), name)
    with pytest.raises(Denied) as info:
        run(*place_key(place, key))
    assert info.value.reason == "ambiguous_key"
    assert info.value.status == 400
    assert name in info.value.message


@pytest.mark.parametrize("place,key,message", [
    ("top", "Model", "'Model' is too like 'model': a provider whose JSON decoder ignores case or "
                     "underscores would read it as that field, unseen by the router (names are "
                     "case-sensitive; send 'model')"),
    ("top", "maxTokens", "'maxTokens' is too like 'max_tokens'"),
    ("top", "\u017ftream", "'\\u017ftream' is too like 'stream'"),
    ("turn", "Content", "'messages[0].Content' is too like 'messages[0].content'"),
    ("block", "TEXT", "'messages[0].content[0].TEXT' is too like 'messages[0].content[0].text'"),
    ("tool", "Type", "'tools[0].Type' is too like 'tools[0].type'"),
    ("stream_options", "includeUsage", "'stream_options.includeUsage' is too like 'stream_options.include_usage'"),
    ("conversation", "ID", "'conversation.ID' is too like 'conversation.id'"),
])
def test_the_refusal_names_the_key_and_the_field(place, key, message):
    with pytest.raises(Denied) as info:
        run(*place_key(place, key))
    assert info.value.message.startswith(message)


@pytest.mark.parametrize("key", ["ID", "Id", "iD"])
def test_a_container_is_read_by_its_one_id(key):
    # Read where the policy refuses unknown containers (sidecar.edge.conversations).
    with pytest.raises(Denied) as info:
        bodies.container_id({"container": {"id": "c1", key: "c2"}})
    assert info.value.reason == "ambiguous_key"
    assert bodies.container_id({"container": {"id": "c1", "kind": "x"}}) == "c1"


LOWER_ASCII = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789_-"), min_size=1, max_size=24)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["top", "turn", "block", "tool", "input_item"]), LOWER_ASCII)
def test_keys_in_lower_case_ascii_are_never_read_as_another_field(place, key):
    # No decoder modelled above reads a lower-case ASCII key as a name it is not.
    for name in PLACES[place]:
        assert key == name or not (go_reads_as(key, name) or key == camel(name)
                                   or dotnet_reads_as(key, name))
    try:
        run(*place_key(place, key))
    except Denied as denied:
        assert denied.reason != "ambiguous_key"


@pytest.mark.parametrize("path,body", [
    # A key of the client's own inside a schema, metadata or an unread field passes.
    (CHAT, {"model": "auto", "messages": MSG, "metadata": {"Model": "x", "MAX_TOKENS": "y"}}),
    (CHAT, {"model": "auto", "messages": MSG, "tools": [{"type": "function", "function": {
        "name": "lookup", "parameters": {"type": "object", "properties": {"Model": {"type": "string"},
                                                                            "Stream": {"type": "boolean"}}}}}]}),
    (CHAT, {"model": "auto", "messages": MSG, "Temperature": 0.2, "X-Trace": "1", "logit_bias": {"50256": -100}}),
    (CHAT, {"model": "auto", "messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, *MSG]}),
])
def test_keys_no_decoder_reads_as_a_read_field_pass(path, body):
    assert run(path, body).messages >= 1
