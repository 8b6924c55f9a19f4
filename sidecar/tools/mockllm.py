"""Simulated OpenAI-compatible model endpoints: one process, one port per endpoint.

Serves every loopback endpoint of a policy with per-tier latency (the seed's
measured averages by default), SSE streaming with a final usage chunk, and fault
injection, and echoes which endpoint and model served each request.

Faults, per request with header `X-Mock-Fault`, or per endpoint at run time with
`POST /_mock/faults {"fault": ...}` on that endpoint's port:
    status=503        answer with that status
    delay=2000        wait that many ms before answering
    drop              close the connection without answering
    accel             answer 200 with an X-Accel-Redirect header (must be ignored)
    garbage           write bytes that are not HTTP, then close
    bare              write a JSON body with no status line or headers, then close
and `POST /_mock/faults {"headers": {name: value}}` adds response headers (what a
compromised or careless provider might send).
Received requests are kept (last 1,000) for tests: GET/DELETE /_mock/requests.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import orjson
from aiohttp import web

TIER_LATENCY_MS = {1: 42, 2: 78, 3: 156, 4: 485, 5: 742}
# What real providers send about themselves; the router must not pass these on.
PROVIDER_HEADERS = {"X-Powered-By": "Express", "Via": "1.1 provider-edge", "CF-Ray": "8c1f-AMS",
                    "Openai-Organization": "org-secret", "X-Groq-Region": "us-east",
                    "X-Ratelimit-Remaining-Requests": "4999", "Server": "uvicorn",
                    "X-Mock-Internal": "internal"}
CHUNKS = 8


class MockEndpoint:
    def __init__(self, name: str, model: str, latency_ms: float):
        self.name = name
        self.model = model
        self.latency_ms = latency_ms
        self.fault = ""
        self.extra_headers: dict = {}
        self.received: deque = deque(maxlen=1000)


def _parse_fault(text: str) -> dict:
    fault = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        fault[key] = value
    return fault


def _completion(ep: MockEndpoint, body: dict, prompt_tokens: int) -> dict:
    content = f"served by {ep.name} ({ep.model})"
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}", "object": "chat.completion",
        "created": int(time.time()), "model": body.get("model", ep.model),
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": CHUNKS,
                  "total_tokens": prompt_tokens + CHUNKS},
    }


def create_endpoint_app(ep: MockEndpoint) -> web.Application:
    async def completions(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        ep.received.append({"path": request.path, "headers": dict(request.headers),
                            "body": raw.decode("utf-8", "replace"), "at": time.time()})
        fault = _parse_fault(request.headers.get("X-Mock-Fault", "") or ep.fault)
        if "delay" in fault:
            await asyncio.sleep(float(fault["delay"]) / 1000)
        if "drop" in fault or "garbage" in fault or "bare" in fault:
            if "garbage" in fault:
                request.transport.write(b"\x00\x16\x03garbage, not HTTP\r\n\r\n<html>pwned</html>")
            elif "bare" in fault:
                request.transport.write(b'{"id":"x","choices":[{"message":{"content":"unframed"}}]}')
            request.transport.close()
            raise asyncio.CancelledError
        echo = {"X-Mock-Endpoint": ep.name, "X-Mock-Model": ep.model, **PROVIDER_HEADERS,
                **ep.extra_headers}
        if "status" in fault:
            status = int(fault["status"])
            body = {"error": {"message": f"injected fault on {ep.name}", "type": "server_error",
                              "code": status}}
            return web.json_response(body, status=status, headers=echo)
        if "accel" in fault:
            echo["X-Accel-Redirect"] = "/_mock/secret"
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            return web.json_response({"error": {"message": "invalid JSON"}}, status=400)
        prompt_tokens = max(1, len(raw) // 4)
        if ep.latency_ms:
            await asyncio.sleep(ep.latency_ms / 1000)
        if not body.get("stream"):
            return web.Response(body=orjson.dumps(_completion(ep, body, prompt_tokens)),
                                content_type="application/json", headers=echo)
        return await _stream(request, ep, body, prompt_tokens, echo)

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": ep.model, "object": "model", "owned_by": "mockllm"}]})

    async def set_fault(request: web.Request) -> web.Response:
        spec = await request.json()
        ep.fault = spec.get("fault", "")
        ep.extra_headers = dict(spec.get("headers") or {})
        return web.json_response({"endpoint": ep.name, "fault": ep.fault})

    async def list_received(request: web.Request) -> web.Response:
        return web.json_response(list(ep.received))

    async def clear_received(request: web.Request) -> web.Response:
        ep.received.clear()
        return web.json_response({"cleared": True})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/{prefix:.*}/chat/completions", completions)
    app.router.add_post("/{prefix:.*}/completions", completions)
    app.router.add_get("/{prefix:.*}/models", models)
    app.router.add_post("/_mock/faults", set_fault)
    app.router.add_get("/_mock/requests", list_received)
    app.router.add_delete("/_mock/requests", clear_received)
    return app


async def _stream(request, ep: MockEndpoint, body: dict, prompt_tokens: int, echo: dict):
    response = web.StreamResponse(headers={**echo, "Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
    await response.prepare(request)
    created = int(time.time())
    # Spread generation over roughly the tier's latency again, so chunks arrive over time.
    gap = max(0.005, ep.latency_ms / 1000 / CHUNKS) if ep.latency_ms else 0
    words = f"served by {ep.name} ({ep.model})".split() + ["."] * CHUNKS
    for i in range(CHUNKS):
        chunk = {"id": "chatcmpl-stream", "object": "chat.completion.chunk", "created": created,
                 "model": body.get("model", ep.model),
                 "choices": [{"index": 0, "delta": {"content": words[i] + " "},
                              "finish_reason": "stop" if i == CHUNKS - 1 else None}]}
        await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        if gap:
            await asyncio.sleep(gap)
    options = body.get("stream_options") or {}
    if isinstance(options, dict) and options.get("include_usage"):
        usage = {"id": "chatcmpl-stream", "object": "chat.completion.chunk", "created": created,
                 "model": body.get("model", ep.model), "choices": [],
                 "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": CHUNKS,
                           "total_tokens": prompt_tokens + CHUNKS}}
        await response.write(b"data: " + orjson.dumps(usage) + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def endpoints_from_policy(policy, latency_scale: float = 1.0) -> list[tuple[MockEndpoint, str, int]]:
    """The policy's loopback endpoints as (mock, host, port)."""
    out = []
    for e in policy.endpoints:
        if e.scheme == "http" and e.host in ("127.0.0.1", "localhost", "::1"):
            latency = TIER_LATENCY_MS.get(e.tier.rank, 100) * latency_scale
            out.append((MockEndpoint(e.name, e.model, latency), e.host, e.port))
    return out


async def serve(policy, latency_scale: float = 1.0, fault: str = "") -> list[web.AppRunner]:
    runners = []
    for ep, host, port in endpoints_from_policy(policy, latency_scale):
        ep.fault = fault
        runner = web.AppRunner(create_endpoint_app(ep), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_address=True).start()
        runners.append(runner)
    return runners
