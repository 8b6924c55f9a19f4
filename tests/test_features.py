"""Parsing and feature extraction: each malformed body gets a precise denial."""

from __future__ import annotations

import orjson
import pytest

from sidecar.denials import Denied
from sidecar.features import Features, extract, parse_body

CHAT = "/v1/chat/completions"


def run(body, path=CHAT, content_type="application/json"):
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    parsed = parse_body(raw, content_type)
    return extract(Features("POST", path, {}), parsed)


@pytest.mark.parametrize("raw,content_type,status,reason,message", [
    (b"{}", "text/plain", 415, "unsupported_media_type", "Content-Type must be application/json, got text/plain"),
    (b"{}", "", 415, "unsupported_media_type", "Content-Type must be application/json, got none"),
    (b"", "application/json", 400, "invalid_json", "request body is empty; expected a JSON object"),
    (b"[]", "application/json", 400, "invalid_json", "request body must be a JSON object, got array"),
    (b"null", "application/json", 400, "invalid_json", "request body must be a JSON object, got null"),
    (b"{", "application/json; charset=utf-8", 400, "invalid_json", None),
])
def test_parse_body_refusals(raw, content_type, status, reason, message):
    with pytest.raises(Denied) as info:
        parse_body(raw, content_type)
    assert (info.value.status, info.value.reason) == (status, reason)
    if message:
        assert info.value.message == message


@pytest.mark.parametrize("body,message", [
    ({"model": "auto"}, "'messages' is required"),
    ({"messages": []}, "'messages' must be a non-empty array"),
    ({"messages": {}}, "'messages' must be an array, got object"),
    ({"messages": [1]}, "'messages[0]' must be an object, got number"),
    ({"messages": [{"content": "x"}]}, "'messages[0].role' must be one of assistant, developer, function, system, tool, user"),
    ({"messages": [{"role": "user", "content": True}]}, "'messages[0].content' must be a string, an array or null, got boolean"),
    ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "'messages[0].content[0]' must be an object with a 'type'"),
    ({"model": ["a"], "messages": [{"role": "user", "content": "x"}]}, "'model' must be a string, got array"),
    ({"stream": 1, "messages": [{"role": "user", "content": "x"}]}, "'stream' must be a boolean, got number"),
    ({"max_tokens": True, "messages": [{"role": "user", "content": "x"}]}, "'max_tokens' must be an integer, got boolean"),
    ({"max_tokens": -1, "messages": [{"role": "user", "content": "x"}]}, "'max_tokens' must be at least 1"),
    ({"tools": "x", "messages": [{"role": "user", "content": "x"}]}, "'tools' must be an array, got string"),
])
def test_field_refusals_name_the_field(body, message):
    with pytest.raises(Denied) as info:
        run(body)
    assert (info.value.status, info.value.reason, info.value.message) == (400, "invalid_request", message)


def test_completions_need_a_prompt_string_or_list():
    assert run({"prompt": ["a", "b"]}, path="/v1/completions").text == "a\nb"
    with pytest.raises(Denied):
        run({"prompt": 5}, path="/v1/completions")


def test_signals():
    f = run({"model": "gpt-x", "stream": True, "max_tokens": 64,
             "tools": [{"type": "function"}],
             "messages": [{"role": "system", "content": "be brief"},
                          {"role": "user", "content": [{"type": "text", "text": "```py\ndef f(): pass\n```"},
                                                       {"type": "image_url", "image_url": {"url": "x"}}]},
                          {"role": "assistant", "content": None},
                          {"role": "user", "content": "and \\frac{1}{2}?"}]})
    assert (f.model, f.stream, f.max_tokens, f.tools, f.messages) == ("gpt-x", True, 64, True, 4)
    assert f.system_prompt and f.code and f.math
    assert f.tokens == (len(f.text) + 3) // 4 + 16
    assert 0.0 <= f.complexity <= 1.0 and 1 <= f.tier_hint <= 5


def test_a_plain_question_has_no_code_or_math():
    f = run({"messages": [{"role": "user", "content": "what's the weather like in Lisbon in May"}]})
    assert not (f.code or f.math or f.tools or f.system_prompt or f.stream)
    assert f.max_tokens == 0 and f.model == ""
