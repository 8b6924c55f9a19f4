"""What a simulated endpoint answers on each API, in that API's own shapes:
OpenAI chat and completions (and their chunks), embeddings, the Responses API
(and its typed stream events), and Anthropic Messages (and its event stream).
`words` is the answer, already as tokens; usage is real for what was sent, in
each API's own shape: OpenAI's counts include what its prompt cache read
(`*_tokens_details.cached_tokens`), Anthropic's `input_tokens` leave out what the
cache read and wrote (`cache_read_input_tokens`, `cache_creation_input_tokens`),
and an Anthropic stream reports its input in `message_start` and ends with only
`output_tokens` in `message_delta`, as Anthropic's documentation shows it."""

from __future__ import annotations

import json
import time
from functools import partial
from typing import NamedTuple

import orjson
import xxhash

EMBEDDING_DIMENSIONS = 8


def api_of(path: str) -> str:
    for suffix, api in (("/chat/completions", "chat"), ("/embeddings", "embeddings"),
                        ("/responses", "responses"), ("/messages", "messages"),
                        ("/completions", "completions")):
        if path.endswith(suffix):
            return api
    return "chat"


class Usage(NamedTuple):
    prompt: int            # every input token, however it was served
    completion: int
    cache_read: int = 0    # of `prompt`: read from the provider's prompt cache
    cache_written: int = 0  # of `prompt`: written to it (Anthropic bills these apart)
    web_searches: int = 0   # searches a web search tool ran (Anthropic reports them)
    cache_written_1h: int = 0  # of `cache_written`: kept an hour (`cache_control.ttl: "1h"`)


def web_searches(api: str, body: dict) -> int:
    """How many searches an Anthropic web search tool runs for this request: its
    `max_uses`, at most 5 (a real model searches as often as it needs, up to that)."""
    if api != "messages" or not isinstance(body.get("tools"), list):
        return 0
    for tool in body["tools"]:
        if isinstance(tool, dict) and str(tool.get("type", "")).startswith("web_search_"):
            uses = tool.get("max_uses", 1)
            return min(uses, 5) if isinstance(uses, int) and uses > 0 else 1
    return 0


def cached_an_hour(api: str, body: dict) -> bool:
    """Whether an Anthropic request marks a cache breakpoint to keep an hour (its system
    blocks, a turn's content blocks or a tool carry `cache_control: {ttl: "1h"}`)."""
    if api != "messages":
        return False
    blocks = [b for b in body.get("system") or [] if isinstance(b, dict)]
    blocks += [t for t in body.get("tools") or [] if isinstance(t, dict)]
    for turn in body.get("messages") or []:
        content = turn.get("content") if isinstance(turn, dict) else None
        blocks += [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
    return any(isinstance(b.get("cache_control"), dict) and b["cache_control"].get("ttl") == "1h"
               for b in blocks)


def _server_tools(usage: Usage) -> dict:
    return ({"server_tool_use": {"web_search_requests": usage.web_searches, "web_fetch_requests": 0}}
            if usage.web_searches else {})


def _usage(api: str, usage: Usage, completion: int | None = None) -> dict:
    out = usage.completion if completion is None else completion
    if api == "messages":
        return {"input_tokens": usage.prompt - usage.cache_read - usage.cache_written,
                "cache_creation_input_tokens": usage.cache_written,
                "cache_read_input_tokens": usage.cache_read,
                "cache_creation": {"ephemeral_5m_input_tokens": usage.cache_written - usage.cache_written_1h,
                                   "ephemeral_1h_input_tokens": usage.cache_written_1h},
                "output_tokens": out, "service_tier": "standard", **_server_tools(usage)}
    if api == "responses":
        return {"input_tokens": usage.prompt, "input_tokens_details": {"cached_tokens": usage.cache_read},
                "output_tokens": out, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": usage.prompt + out}
    if api == "completions":   # the legacy API: no details
        return {"prompt_tokens": usage.prompt, "completion_tokens": out, "total_tokens": usage.prompt + out}
    return {"prompt_tokens": usage.prompt, "completion_tokens": out, "total_tokens": usage.prompt + out,
            "prompt_tokens_details": {"cached_tokens": usage.cache_read, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


def embeddings(model: str, body: dict, prompt_tokens: int) -> dict:
    value = body.get("input")
    inputs = value if isinstance(value, list) and value and not isinstance(value[0], int) else [value]
    data = []
    for i, item in enumerate(inputs):
        seed = xxhash.xxh64_intdigest(orjson.dumps(item))
        vector = [((seed >> (8 * d)) & 0xFF) / 127.5 - 1.0 for d in range(EMBEDDING_DIMENSIONS)]
        data.append({"object": "embedding", "index": i, "embedding": vector})
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}


def answer(api: str, model: str, words: list[str], tokens: Usage, metadata=None) -> dict:
    """A whole (non-streamed) answer, with the fields each provider's object carries."""
    text = " ".join(words)
    now = int(time.time())
    usage = _usage(api, tokens)
    if api == "messages":
        return {"id": f"msg_{time.monotonic_ns():024d}", "type": "message", "role": "assistant",
                "model": model, "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn", "stop_sequence": None, "usage": usage}
    if api == "responses":
        return response_object(f"resp_{time.monotonic_ns():048d}", model, "completed",
                               [_output_message(f"msg_{time.monotonic_ns():048d}", "completed", text)],
                               usage, metadata)
    if api == "completions":
        return {"id": f"cmpl-{time.monotonic_ns():029d}", "object": "text_completion", "created": now,
                "model": model, "choices": [{"text": text, "index": 0, "logprobs": None,
                                             "finish_reason": "stop"}], "usage": usage}
    return {"id": f"chatcmpl-{time.monotonic_ns():029d}", "object": "chat.completion", "created": now,
            "model": model, "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                                                 "refusal": None, "annotations": []},
                                         "logprobs": None, "finish_reason": "stop"}],
            "usage": usage, "service_tier": "default", "system_fingerprint": "fp_mock0001"}


def _output_text(text: str) -> dict:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _output_message(item_id: str, status: str, text: str | None) -> dict:
    return {"id": item_id, "type": "message", "status": status,
            "content": [] if text is None else [_output_text(text)], "role": "assistant"}


def response_object(response_id: str, model: str, status: str, output: list, usage: dict | None,
                    metadata) -> dict:
    """A Responses API object, in the documented field order: the request's settings
    echoed back, the output, the usage, then the request's metadata."""
    return {"id": response_id, "object": "response", "created_at": int(time.time()),
            "status": status, "background": False, "error": None, "incomplete_details": None,
            "instructions": None, "max_output_tokens": None, "max_tool_calls": None, "model": model,
            "output": output, "parallel_tool_calls": True, "previous_response_id": None,
            "prompt_cache_key": None, "reasoning": {"effort": None, "summary": None},
            "safety_identifier": None, "service_tier": "default", "store": True, "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"}, "tool_choice": "auto",
            "tools": [], "top_logprobs": 0, "top_p": 1.0, "truncation": "disabled",
            "usage": usage, "user": None,
            "metadata": metadata if isinstance(metadata, dict) else {}}   # the request's, echoed


def spaced_json(data) -> bytes:
    """JSON as Python's json module writes it (", " and ": "), as some servers send it."""
    return json.dumps(data).encode()


def _sse(event: str | None, data, dumps=orjson.dumps) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + (data if isinstance(data, bytes) else dumps(data)) + b"\n\n"


class StreamEvents:
    """The events of one streamed answer: `start()`, `deltas(words, last)` per write,
    `end(include_usage)`; each returns the bytes to write.

    Framed as the providers frame them, since the router's byte-based token estimates
    depend on it: OpenAI's chat, completions and Responses streams send one token per
    event, with ids, indices and nulls around it; Anthropic's deltas carry a few."""

    def __init__(self, api: str, model: str, usage: Usage, dumps=orjson.dumps, metadata=None):
        self.api, self.model, self.usage, self.metadata = api, model, usage, metadata
        self.sse = partial(_sse, dumps=dumps)
        self.created = int(time.time())
        self.id = f"{time.monotonic_ns():029d}"[-29:]
        self.sequence = -1
        self.text: list[str] = []   # Responses: the closing events repeat the whole text
        self.response: dict = {}    # Responses: the response object as the last event showed it

    def typed(self, event: str, fields: dict) -> bytes:
        """A Responses event: its type and place in the stream, then its fields."""
        self.sequence += 1
        return self.sse(event, {"type": event, "sequence_number": self.sequence, **fields})

    @property
    def response_id(self) -> str:
        return f"resp_{self.id}"

    @property
    def item_id(self) -> str:
        return f"msg_{self.id}{self.id[:19]}"

    def deltas(self, words: list[str], last: bool) -> bytes:
        if self.api == "messages":
            return self.delta(" ".join(words) + " ", last)
        return b"".join(self.delta(word + " ", last and i == len(words) - 1) for i, word in enumerate(words))

    def start(self) -> bytes:
        if self.api == "messages":
            message = {"id": "msg_stream", "type": "message", "role": "assistant", "model": self.model,
                       "content": [], "stop_reason": None, "stop_sequence": None,
                       "usage": _usage(api="messages", usage=self.usage, completion=1)}
            return (self.sse("message_start", {"type": "message_start", "message": message})
                    + self.sse("content_block_start", {"type": "content_block_start", "index": 0,
                                                   "content_block": {"type": "text", "text": ""}}))
        if self.api == "responses":
            response = self.response = response_object(self.response_id, self.model, "in_progress", [],
                                                       None, self.metadata)
            return (self.typed("response.created", {"response": response})
                    + self.typed("response.in_progress", {"response": response})
                    + self.typed("response.output_item.added", {
                        "output_index": 0, "item": _output_message(self.item_id, "in_progress", None)})
                    + self.typed("response.content_part.added", {
                        "item_id": self.item_id, "output_index": 0, "content_index": 0,
                        "part": _output_text("")}))
        return b""

    def delta(self, text: str, last: bool) -> bytes:
        if self.api == "messages":
            return self.sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                "delta": {"type": "text_delta", "text": text}})
        if self.api == "responses":
            self.text.append(text)
            return self.typed("response.output_text.delta", {
                "item_id": self.item_id, "output_index": 0, "content_index": 0, "delta": text,
                "logprobs": []})
        if self.api == "completions":
            choice = {"index": 0, "text": text, "finish_reason": "stop" if last else None}
            kind = "text_completion"
        else:
            choice = {"index": 0, "delta": {"content": text}, "logprobs": None,
                      "finish_reason": "stop" if last else None}
            kind = "chat.completion.chunk"
        return self.sse(None, {"id": f"chatcmpl-{self.id}", "object": kind, "created": self.created,
                           "model": self.model, "system_fingerprint": "fp_mock0001", "choices": [choice]})

    def failed(self) -> bytes:
        """An error event that ends the stream early, cleanly: Anthropic documents one
        (overloaded_error) that may arrive after message_start; OpenAI streams carry
        an `error` object in a data event."""
        if self.api == "messages":
            return self.sse("error", {"type": "error",
                                      "error": {"type": "overloaded_error", "message": "Overloaded"}})
        if self.api == "responses":
            return self.typed("error", {"code": "server_error", "message": "overloaded", "param": None})
        return self.sse(None, {"error": {"message": "overloaded", "type": "server_error",
                                         "param": None, "code": None}})

    def end(self, include_usage: bool) -> bytes:
        if self.api == "messages":
            return (self.sse("content_block_stop", {"type": "content_block_stop", "index": 0})
                    + self.sse("message_delta", {"type": "message_delta",
                                             "usage": {"output_tokens": self.usage.completion,
                                                       **_server_tools(self.usage)},
                                             "delta": {"stop_reason": "end_turn", "stop_sequence": None}})
                    + self.sse("message_stop", {"type": "message_stop"}))
        if self.api == "responses":
            text = "".join(self.text)
            item = _output_message(self.item_id, "completed", text)
            where = {"item_id": self.item_id, "output_index": 0, "content_index": 0}
            self.response = response_object(self.response_id, self.model, "completed", [item],
                                            _usage("responses", self.usage), self.metadata)
            return (self.typed("response.output_text.done", {**where, "text": text, "logprobs": []})
                    + self.typed("response.content_part.done", {**where, "part": _output_text(text)})
                    + self.typed("response.output_item.done", {"output_index": 0, "item": item})
                    + self.typed("response.completed", {"response": self.response}))
        out = b""
        if include_usage:
            out += self.sse(None, {"id": f"chatcmpl-{self.id}", "object": "chat.completion.chunk",
                               "created": self.created, "model": self.model, "choices": [],
                               "usage": _usage("chat", self.usage)})
        return out + b"data: [DONE]\n\n"
