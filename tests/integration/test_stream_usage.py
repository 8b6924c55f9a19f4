"""Streams: the router asks for usage on the client's behalf (lua mode) and the
client sees exactly what it asked for; the usage is counted either way."""

from __future__ import annotations

import json

import pytest

from conftest import user


def events(raw: bytes) -> list[dict]:
    return [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: {")]


@pytest.mark.parametrize("spaced", [False, True], ids=["compact", "spaced"])
@pytest.mark.parametrize("asked", [False, True])
def test_the_client_sees_the_usage_chunk_only_when_it_asked(clean, asked, spaced):
    """Also from a server that writes '"choices": []' (JSON with spaces)."""
    if spaced:
        clean.mocks.fault("fast-llama-3-1-8b", "spaced")
    body = user("stream please", model="fast", stream=True, min_tokens=40, max_tokens=40)
    if asked:
        body["stream_options"] = {"include_usage": True}
    status, headers, raw = clean.client.chat(body, headers={"X-Test-Pin": "fast-llama-3-1-8b"})
    assert status == 200 and raw.rstrip().endswith(b"data: [DONE]")
    seen = events(raw)
    usage_events = [e for e in seen if e.get("usage")]
    text = "".join(e["choices"][0]["delta"]["content"] for e in seen if e.get("choices"))
    assert len(text.split()) == 40                     # every token arrived
    assert len(usage_events) == (1 if asked else 0)
    (got,) = clean.mocks.received("fast-llama-3-1-8b")
    sent = json.loads(got["body"])
    if clean.mode == "lua":   # asked on the client's behalf, so the usage can be counted
        assert sent["stream_options"]["include_usage"] is True
    else:                     # stock mode cannot rewrite the body
        assert sent.get("stream_options", {}).get("include_usage", False) is asked
