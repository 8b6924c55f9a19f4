"""Routed requests through real nginx (both modes), the sidecar and the mock endpoints."""

from __future__ import annotations

import http.client
import json
import random
import time

import pytest

import unseen_kinds
from conftest import HASH, user
from sidecar.tools import golden

PROOF = ("Prove rigorously, step by step, that for every integer n >= 1 the sum of the first n "
         "odd numbers equals n^2. Then derive a closed form for \\sum_{k=1}^{n} k^3, prove it by "
         "induction, and analyze why the proof technique generalises. State every lemma you use, "
         "justify each step, and discuss the trade-off between an inductive proof and a direct "
         "combinatorial argument. " * 3)
TIERS = ["nano", "fast", "balanced", "premium", "expert"]


def test_the_sidecar_serves_the_complexity_model_compiled(stack):
    """scripts/setup installs a C compiler, so the sidecar must not fall back to
    the Python reference unnoticed (it would route the same, 4-8x slower)."""
    started = (stack.run_dir / "sidecar-0.log").read_text()
    assert "complexity scorer compiled" in started
    assert "serving from the Python reference" not in started


@pytest.mark.parametrize("tier", TIERS)
def test_a_pinned_tier_lands_on_an_endpoint_of_that_tier(clean, tier):
    status, headers, body = clean.client.chat({"model": tier, "messages": [
        {"role": "user", "content": "hi"}]})
    assert status == 200, body
    assert headers["X-Route-Tier"] == tier
    served_by = headers["X-Mock-Endpoint"]
    assert headers["X-Route-Endpoint"] == served_by
    assert served_by.startswith(tier)
    assert headers["X-Route-Model"] == clean.policy.endpoint_by_name[served_by].model
    assert len(headers["X-Request-Id"]) == 32


def test_a_greeting_goes_to_nano_and_a_proof_goes_higher(clean):
    _, low, _ = clean.client.chat(user("hi"))
    _, high, _ = clean.client.chat(user(PROOF))
    assert low["X-Route-Tier"] == "nano"
    rank = {t: i for i, t in enumerate(TIERS)}
    assert rank[high["X-Route-Tier"]] >= rank["balanced"]


def test_stock_mode_forwards_the_body_byte_identical_lua_mode_rewrites_only_the_model(clean):
    raw = (b'{ "messages" : [ {"role":"user", "content":"caf\\u00e9 \xe2\x98\x95"} ],\n'
           b'  "temperature": 0.70, "model": "auto", "n": 1, "x_extra": {"deep": [1, 2.50, null]} }')
    status, headers, _ = clean.client.chat(raw, headers={"X-Test-Pin": "fast-llama-3-1-8b"})
    assert status == 200
    (got,) = clean.mocks.received("fast-llama-3-1-8b")
    if clean.mode == "stock":
        assert got["body"].encode() == raw
    else:
        sent, original = json.loads(got["body"]), json.loads(raw)
        assert sent.pop("model") == "llama-3.1-8b-instant"
        original.pop("model")
        assert sent == original
        assert list(json.loads(got["body"])) == list(json.loads(raw))  # key order kept


# Names the demo policy does not know: another tier's model id, a provider's model id,
# a known name one keystroke off (case, a space, an invisible character, a prefix).
UNKNOWN_NAMES = ["grok-4", "llama-3.3-70b-versatile", "AUTO", "gpt-4o ", "nano\u200b", "openai/gpt-4o"]
BODIES = {"/v1/chat/completions": lambda model: user("hi", model=model),
          "/v1/messages": lambda model: {**user("hi", model=model), "max_tokens": 16},
          "/v1/embeddings": lambda model: {"model": model, "input": "hi"}}


@pytest.mark.parametrize("path", sorted(BODIES))
def test_an_endpoint_is_asked_only_for_its_own_model_or_a_listed_name(clean, path):
    """Lua mode rewrites the body, so an unknown name is routed by the rules and the
    endpoint is asked for its own model. Stock mode forwards the body as written:
    the endpoint would serve the model the client named (any its provider account
    has) at the routed model's price and past the client's tiers, so an unknown name
    is refused there before any endpoint sees it."""
    for model in UNKNOWN_NAMES:
        status, headers, body = clean.client.chat(BODIES[path](model), path=path)
        if clean.mode == "stock":
            assert status == 404, (model, body)
            error = json.loads(body)["error"]
            assert (error["code"], error["type"]) == ("model_not_found", "invalid_request_error")
            assert headers["X-Content-Type-Options"] == "nosniff" and "X-Route-Endpoint" not in headers
            continue
        assert status == 200, (model, body)
        (got,) = clean.mocks.received(headers["X-Mock-Endpoint"])[-1:]
        assert json.loads(got["body"])["model"] == headers["X-Route-Model"] == \
            clean.policy.endpoint_by_name[headers["X-Mock-Endpoint"]].model
    if clean.mode == "stock":
        assert clean.mocks.total_received() == 0
    listed = {"/v1/chat/completions": ["auto", "fast", "gpt-4o-mini"], "/v1/messages": ["auto", "premium"],
              "/v1/embeddings": ["auto", "text-embedding-3-small"]}[path]
    for model in listed:   # the names GET /v1/models lists pass in both modes
        status, headers, body = clean.client.chat(BODIES[path](model), path=path)
        assert status == 200, (model, body)
        (got,) = clean.mocks.received(headers["X-Mock-Endpoint"])[-1:]
        sent = json.loads(got["body"])["model"]
        assert sent == (model if clean.mode == "stock" else headers["X-Route-Model"])


def test_client_route_headers_cannot_pick_the_upstream(clean):
    status, headers, _ = clean.client.chat(user("hi"), headers={
        "X-Route-Endpoint": "expert-grok-4", "X-Route-Fallback": "expert-grok-4",
        "X-Route-Path": "/_mock/requests", "X-Route-Auth": "Bearer stolen"})
    assert status == 200
    assert headers["X-Route-Tier"] == "nano"
    assert clean.mocks.received("expert-grok-4") == []
    (got,) = clean.mocks.received(headers["X-Mock-Endpoint"])
    assert got["path"] == "/v1/chat/completions"
    assert "Bearer stolen" not in json.dumps(got["headers"])


def test_an_upstream_x_accel_redirect_is_ignored(clean):
    clean.mocks.fault("nano-qwen3-4b", "accel")
    status, headers, body = clean.client.chat(user("hi"), headers={"X-Test-Pin": "nano-qwen3-4b"})
    assert status == 200
    assert json.loads(body)["choices"][0]["message"]["content"].startswith("served by nano-qwen3-4b")
    assert "X-Accel-Redirect" not in headers


def test_internal_decision_headers_never_reach_the_client(clean):
    _, headers, _ = clean.client.chat(user("hi"))
    internal = {"x-route-auth", "x-route-path", "x-route-fallback", "x-route-fallback2",
                "x-route-rule", "x-route-decision", "x-accel-redirect", "x-route-model-at"}
    assert not internal & {k.lower() for k in headers}


def test_sse_chunks_reach_the_client_as_they_are_produced(clean):
    conn = http.client.HTTPConnection("127.0.0.1", clean.client.port, timeout=10)
    body = json.dumps({"model": "expert", "stream": True, "stream_options": {"include_usage": True},
                       "min_tokens": 128, "max_tokens": 128,
                       "messages": [{"role": "user", "content": "hi"}]})
    conn.request("POST", "/v1/chat/completions", body=body, headers={
        "Content-Type": "application/json", "X-Constitutional-Hash": HASH})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    arrivals = []
    while True:
        line = resp.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            arrivals.append((time.monotonic(), line[6:].strip()))
    conn.close()
    assert arrivals[-1][1] == b"[DONE]"
    usage = json.loads(arrivals[-2][1])
    assert usage["usage"]["completion_tokens"] == 128
    # The mock spreads 32 chunks over ~200 ms at this latency scale; buffering would
    # deliver them all at once.
    assert arrivals[-1][0] - arrivals[0][0] > 0.1


@pytest.mark.parametrize("fault", ["status=503", "status=502", "drop"])
def test_a_failing_endpoint_falls_back_with_the_same_body(clean, fault):
    clean.mocks.fault("balanced-qwen3-32b", fault)
    raw = json.dumps({"model": "auto", "temperature": 0.2, "messages": [
        {"role": "user", "content": "fall back please"}]}).encode()
    status, headers, body = clean.client.chat(raw, headers={"X-Test-Pin": "balanced-qwen3-32b"})
    assert status == 200, body
    assert headers["X-Route-Endpoint"] == "balanced-qwen3-32b-b"
    assert headers["X-Mock-Endpoint"] == "balanced-qwen3-32b-b"
    (first,) = clean.mocks.received("balanced-qwen3-32b")
    (second,) = clean.mocks.received("balanced-qwen3-32b-b")
    assert first["body"] == second["body"]
    if clean.mode == "stock":
        assert second["body"].encode() == raw


def test_fallback_crosses_to_the_next_tier_with_that_endpoints_model(clean):
    clean.mocks.fault("balanced-qwen3-32b", "status=503")
    clean.mocks.fault("balanced-qwen3-32b-b", "status=504")
    status, headers, _ = clean.client.chat(user("next tier"), headers={"X-Test-Pin": "balanced-qwen3-32b"})
    assert status == 200
    assert headers["X-Route-Tier"] == "premium"
    served = headers["X-Mock-Endpoint"]
    assert headers["X-Route-Endpoint"] == served
    (got,) = clean.mocks.received(served)
    if clean.mode == "lua":
        assert json.loads(got["body"])["model"] == clean.policy.endpoint_by_name[served].model


def test_when_every_hop_fails_the_client_gets_a_json_502(clean):
    for name in ("expert-grok-4",):
        clean.mocks.fault(name, "status=503")
    status, headers, body = clean.client.chat({"model": "expert", "messages": [
        {"role": "user", "content": "hi"}]})
    assert status == 502
    assert json.loads(body)["error"]["code"] == "upstream_failed"
    assert headers["X-Constitutional-Hash"] == HASH
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_an_upstream_4xx_is_passed_through_not_retried(clean):
    clean.mocks.fault("fast-llama-3-1-8b", "status=400")
    status, _, body = clean.client.chat(user("x"), headers={"X-Test-Pin": "fast-llama-3-1-8b"})
    assert status == 400
    assert "injected fault" in json.loads(body)["error"]["message"]
    assert clean.mocks.received("fast-deepseek-r1-8b") == []


def test_provider_internals_in_upstream_headers_are_removed(clean):
    from sidecar.tools.mockllm import PROVIDER_HEADERS
    status, headers, _ = clean.client.chat(user("hi"))
    assert status == 200
    leaked = {name for name in PROVIDER_HEADERS if name in headers and name != "Server"}
    assert not leaked
    assert headers.get("Server") in (None, "nginx")  # lua mode removes it; stock says only "nginx"
    assert headers["Cache-Control"] == "no-store" and len(headers.get_all("Cache-Control")) == 1


KINDS = {"exam questions": unseen_kinds.exam_question,
         "reasoning puzzles": unseen_kinds.reasoning_puzzle,
         "hard user prompts": unseen_kinds.hard_chat_prompt,
         "long-document tasks": lambda rng: unseen_kinds.long_document_task(rng, 40_000)}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_generated_prompts_of_each_kind_route_through_nginx_as_the_policy_decides(clean, kind):
    # Issue 12's classes, through the real edge: the tier nginx forwards to is the
    # one the decision code picks in-process, and at least the kind's floor
    # (the same floors as tests/complexity/test_complexity.py's KINDS).
    floor = {"exam questions": "nano", "long-document tasks": "balanced"}.get(kind, "fast")
    for seed in range(6):
        body = user(KINDS[kind](random.Random(seed)))
        status, headers, _ = clean.client.chat(body)
        assert status == 200
        assert headers["X-Route-Tier"] == golden.outcome(clean.policy, {"body": body})["tier"]
        assert TIERS.index(headers["X-Route-Tier"]) >= TIERS.index(floor)
