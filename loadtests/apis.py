"""The three APIs the kit speaks: OpenAI Chat Completions, OpenAI Responses and
Anthropic Messages. A scenario is drawn once, as a chat request; `shape` turns it
into the API's own body, and `usage` and `StreamReader` read each API's answer
into one form (prompt and completion tokens), so the report adds them up alike.
"""

from __future__ import annotations

import json

PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "messages": "/v1/messages"}
MESSAGES_MAX_TOKENS = 1024  # Anthropic requires max_tokens; this is what its examples send


def shape(api: str, body: dict, previous_response_id: str | None = None) -> dict:
    """A chat-shaped body as `api` spells it. `previous_response_id` (Responses
    only) continues an earlier answer."""
    if api == "chat":
        return body
    system = "\n".join(m["content"] for m in body["messages"] if m["role"] == "system")
    turns = [m for m in body["messages"] if m["role"] != "system"]
    functions = [t["function"] for t in body.get("tools") or ()]
    out = {"model": body["model"]}
    if api == "responses":
        out["input"] = turns
        if system:
            out["instructions"] = system
        if functions:
            out["tools"] = [{"type": "function", **f} for f in functions]
        if previous_response_id:
            out["previous_response_id"] = previous_response_id
    elif api == "messages":
        out["max_tokens"] = MESSAGES_MAX_TOKENS
        out["messages"] = turns
        if system:
            out["system"] = system
        if functions:
            out["tools"] = [{"name": f["name"], "description": f.get("description", ""),
                             "input_schema": f["parameters"]} for f in functions]
    else:
        raise ValueError(f"unknown API {api!r}; expected one of {', '.join(PATHS)}")
    if body.get("stream"):
        out["stream"] = True
    return out


def usage(api: str, answer: dict) -> dict:
    """An answer's usage as prompt and completion tokens; {} when it reported none.
    Anthropic counts cached prompt tokens apart from `input_tokens`; they are
    prompt tokens all the same."""
    reported = answer.get("usage") or {}
    if api == "chat":
        prompt, completion = reported.get("prompt_tokens"), reported.get("completion_tokens")
    else:
        prompt, completion = reported.get("input_tokens"), reported.get("output_tokens")
    if prompt is None:
        return {}
    if api == "messages":
        prompt += (reported.get("cache_creation_input_tokens") or 0) + (reported.get("cache_read_input_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion or 0}


class StreamReader:
    """An answer's server-sent events as they arrive: how many chunks of text
    each read brought (for time to first token and inter-token latency), the
    text's length, the usage and, for Responses, the answer's id."""

    def __init__(self, api: str):
        self.api, self.pending = api, b""
        self.chars, self.usage, self.response_id = 0, {}, None
        self._started = {}  # Anthropic: message_start's usage, until message_delta completes it

    def feed(self, chunk: bytes) -> int:
        self.pending += chunk
        *lines, self.pending = self.pending.split(b"\n")
        texts = 0
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data and data != b"[DONE]":
                texts += self._event(json.loads(data))
        return texts

    def _event(self, event: dict) -> int:
        if self.api == "chat":
            if event.get("usage"):
                self.usage = usage("chat", event)
            if not event.get("choices"):
                return 0
            self.chars += len(event["choices"][0].get("delta", {}).get("content") or "")
            return 1
        kind = event.get("type")
        if self.api == "responses":
            if kind == "response.output_text.delta":
                self.chars += len(event.get("delta") or "")
                return 1
            if kind in ("response.created", "response.completed"):
                self.response_id = event["response"].get("id") or self.response_id
                if kind == "response.completed":
                    self.usage = usage("responses", event["response"])
            return 0
        if kind == "message_start":
            self._started = event["message"].get("usage") or {}
        elif kind == "message_delta":  # the final output count; a stream cut before it reported none
            self.usage = usage("messages", {"usage": {**self._started, **(event.get("usage") or {})}})
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            self.chars += len(delta.get("text") or delta.get("partial_json") or "")
            return 1
        return 0
