"""The official OpenAI and Anthropic Python SDKs, pointed at the router, in both
nginx modes: what users run. Each API, whole and streamed, through the SDK's own
parser and stream helpers; the router's errors as the SDK's typed exceptions; a
stream that breaks raises in the SDK instead of ending as if complete.

The SDKs' stream helpers check the event sequence (the Responses helper refuses a
text delta before its output item was added), so these tests also hold the mock
endpoints to the providers' documented shapes."""

from __future__ import annotations

import json
import time

import anthropic
import openai
import pytest

from conftest import HASH

HEADERS = {"X-Constitutional-Hash": HASH}
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def sdk(stack):
    base = f"http://127.0.0.1:{stack.client.port}"
    stack.openai = openai.OpenAI(base_url=base + "/v1", api_key="sk-unused", default_headers=HEADERS,
                                 max_retries=0, timeout=10)
    stack.anthropic = anthropic.Anthropic(base_url=base, api_key="sk-unused", default_headers=HEADERS,
                                          max_retries=0, timeout=10)
    return stack


def _served(text: str) -> bool:
    return text.startswith("served by ") and len(text.split()) > 4


def test_chat_whole_and_streamed(sdk):
    answer = sdk.openai.chat.completions.create(model="auto", messages=USER)
    assert _served(answer.choices[0].message.content) and answer.usage.completion_tokens > 0
    chunks = list(sdk.openai.chat.completions.create(model="auto", messages=USER, stream=True))
    # Lua mode asks the endpoint for a usage chunk on the client's behalf and strips it:
    # a chunk with no choices would break `chunk.choices[0]`, the SDK's documented loop.
    assert all(chunk.choices for chunk in chunks)
    assert _served("".join(chunk.choices[0].delta.content or "" for chunk in chunks))
    asked = list(sdk.openai.chat.completions.create(model="auto", messages=USER, stream=True,
                                                    stream_options={"include_usage": True}))
    assert asked[-1].choices == [] and asked[-1].usage.completion_tokens > 0


def test_completions_and_embeddings(sdk):
    assert _served(sdk.openai.completions.create(model="auto", prompt="Say hi").choices[0].text)
    streamed = sdk.openai.completions.create(model="auto", prompt="Say hi", stream=True)
    assert _served("".join(chunk.choices[0].text for chunk in streamed))
    vectors = sdk.openai.embeddings.create(model="auto", input=["one", "two"])
    assert [d.index for d in vectors.data] == [0, 1] and vectors.usage.prompt_tokens > 0


def test_responses_whole_and_through_the_stream_helper(sdk):
    answer = sdk.openai.responses.create(model="auto", input="hi", metadata={"ticket": "T-1"})
    assert _served(answer.output_text) and answer.usage.output_tokens > 0
    with sdk.openai.responses.stream(model="auto", input="hi", metadata={"ticket": "T-2"}) as stream:
        text = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert _served(text) and final.output_text == text
    assert final.usage.output_tokens > 0 and final.metadata == {"ticket": "T-2"}


def test_anthropic_messages_whole_and_through_the_stream_helper(sdk):
    answer = sdk.anthropic.messages.create(model="auto", max_tokens=64, messages=USER)
    assert _served(answer.content[0].text) and answer.usage.output_tokens > 0
    with sdk.anthropic.messages.stream(model="auto", max_tokens=64, messages=USER) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert _served(text) and final.content[0].text == text
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0


def test_models_are_listed_for_both_sdks(sdk):
    names = [m.id for m in sdk.openai.models.list()]
    assert names[0] == "auto" and {"nano", "expert"} <= set(names)
    assert sdk.openai.models.retrieve("nano").id == "nano"
    with pytest.raises(openai.NotFoundError):
        sdk.openai.models.retrieve("no-such-model")


def test_refusals_are_the_sdks_typed_errors(sdk):
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.openai.chat.completions.create(model="auto", messages=[])
    assert bad.value.body["type"] == "invalid_request_error" and "messages" in bad.value.message
    with pytest.raises(anthropic.BadRequestError):
        sdk.anthropic.messages.create(model="auto", max_tokens=0, messages=USER)
    unhashed = openai.OpenAI(base_url=sdk.openai.base_url, api_key="sk-unused", max_retries=0, timeout=10)
    with pytest.raises(openai.APIStatusError) as missing:
        unhashed.chat.completions.create(model="auto", messages=USER)
    assert missing.value.status_code == 428
    with pytest.raises(openai.NotFoundError):
        sdk.openai.post("/no/such/path", body={}, cast_to=object)


@pytest.mark.parametrize("fault", ["cut", "overloaded"])
def test_a_broken_stream_raises_in_the_sdk_and_never_reads_as_complete(sdk, fault):
    """Never a silent truncation: lua mode ends a cut stream with an error event the SDK
    raises on (APIError); stock mode closes it unterminated, which the SDK raises on as a
    broken connection (APIConnectionError). A provider's own mid-stream error event
    passes through to the SDK in both."""
    pinned = {"X-Test-Pin": "expert-grok-4"}
    sdk.mocks.fault("expert-grok-4", fault)
    try:
        with pytest.raises(openai.APIError) as broken:
            for _ in sdk.openai.chat.completions.create(model="auto", messages=USER, stream=True,
                                                        extra_headers=pinned):
                pass
    finally:
        sdk.mocks.fault("expert-grok-4", "")
    connection_lost = isinstance(broken.value, openai.APIConnectionError)
    assert connection_lost == (sdk.mode == "stock" and fault == "cut")


def test_a_stored_response_through_the_sdk(sdk):
    """retrieve, input_items.list and delete reach the endpoint that made the answer (lua
    mode, which reads its id); stock mode cannot, and says so with a 404."""
    made = sdk.openai.responses.create(model="auto", input="hi")
    if sdk.mode == "stock":
        with pytest.raises(openai.NotFoundError) as missing:
            sdk.openai.responses.retrieve(made.id)
        assert missing.value.body["code"] == "response_not_found"
        return
    for _ in range(40):   # until the feedback log has told the router where it is
        try:
            got = sdk.openai.responses.retrieve(made.id)
            break
        except openai.NotFoundError:
            time.sleep(0.1)
    assert got.id == made.id and got.output_text == made.output_text
    assert [item.content[0].text for item in sdk.openai.responses.input_items.list(made.id)] == ["hi"]
    sdk.openai.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        sdk.openai.responses.retrieve(made.id)


def test_token_counts_are_answered_by_an_endpoint_of_their_api(sdk):
    """Anthropic's count_tokens and OpenAI's input_tokens, routed as the request they
    count would be; in lua mode the body names that endpoint's model."""
    counted = sdk.anthropic.messages.with_raw_response.count_tokens(model="auto", messages=USER)
    assert counted.parse().input_tokens > 0
    served = counted.headers["X-Mock-Endpoint"]
    sent = sdk.mocks.received(served)[-1]
    assert sent["path"].endswith("/messages/count_tokens") and served.endswith(("claude-haiku", "claude-sonnet"))
    assert json.loads(sent["body"])["model"] == ("auto" if sdk.mode == "stock" else counted.headers["X-Route-Model"])
    counted = sdk.openai.responses.input_tokens.with_raw_response.count(model="auto", input="hi")
    assert counted.parse().input_tokens > 0
    assert sdk.mocks.received(counted.headers["X-Mock-Endpoint"])[-1]["path"].endswith("/responses/input_tokens")
    with pytest.raises(anthropic.BadRequestError):   # what it counts must still be a Messages body
        sdk.anthropic.messages.count_tokens(model="auto", messages=[])
