"""Simulated OpenAI-compatible model endpoints: one process, one port per endpoint.

Each serves chat and text completions, embeddings, the Responses API (and the
operations on the answers it stored: sidecar.tools.mock_stored) and Anthropic
Messages, streamed where the API streams (sidecar.tools.mock_apis), and both
token-count endpoints.

Serves every loopback endpoint of a policy like a provider under load: per-tier
time to first token and tokens per second drawn from distributions
(sidecar.tools.mock_generation), real `usage` (cached input from a simulated prompt
cache: sidecar.tools.mock_cache), SSE streaming (with the usage
chunk when `stream_options.include_usage` asks), fault injection by rate or on
demand, and headers saying which endpoint and model served a request and how
long the endpoint itself took (X-Mock-Service-Ms).

Faults, per request with header `X-Mock-Fault`, or per endpoint at run time with
`POST /_mock/faults {"fault": ...}` on that endpoint's port:
    status=503        answer with that status
    status=404,html   ... with an HTML page, as a reverse proxy or CDN in front of a model does
    html              answer 200 with an HTML page (a captive portal's, a WAF's)
    delay=2000        wait that many ms before answering
    drop              close the connection without answering
    accel             answer 200 with an X-Accel-Redirect header (must be ignored)
    garbage           write bytes that are not HTTP, then close
    bare              write a JSON body with no status line or headers, then close
    cut               (streams) close the connection after the first event
    spaced            write JSON with spaces after ',' and ':' (as Python's json module does)
    hang              (streams) go silent after the first event (30 s)
    overloaded        (streams) after the first event, an error event and a clean end
    split=100         (streams) send the opening events' first 100 bytes, pause, then the rest
`POST /_mock/faults {"headers": {name: value}}` adds response headers (what a
compromised or careless provider might send), and `{"rates": {"429": 0.01,
"503": 0.01, "stall": 0.002, "drop": 0.002}}` (or `mockllm --fault-rates`) makes
faults happen at random at those rates: 429 with Retry-After, 5xx, a stall before
the first byte (30 s), a dropped connection.
Received requests are kept (last 1,000) for tests: GET/DELETE /_mock/requests.
Like OpenAI, an endpoint answers a Responses request whose previous_response_id it did
not issue with 404 previous_response_not_found.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque

import orjson
from aiohttp import web

from sidecar.tools import mock_apis
from sidecar.tools.mock_cache import PromptCache
from sidecar.tools.mock_stored import StoredResponses
from sidecar.tools.mock_generation import TOKENS_PER_CHUNK, Model, parse_rates

STALL_S = 30.0
# What real providers send about themselves; the router must not pass these on.
PROVIDER_HEADERS = {"X-Powered-By": "Express", "Via": "1.1 provider-edge", "CF-Ray": "8c1f-AMS",
                    "Openai-Organization": "org-secret", "X-Groq-Region": "us-east",
                    "X-Ratelimit-Remaining-Requests": "4999", "Server": "uvicorn",
                    "X-Mock-Internal": "internal", "Openai-Project": "proj_secret",
                    "Anthropic-Organization-Id": "a1b2c3d4-org", "Request-Id": "req_011CSHoEeqs5C35K2UUqR7Fy",
                    "Anthropic-Ratelimit-Tokens-Remaining": "39000",
                    "X-Envoy-Upstream-Service-Time": "412", "Apim-Request-Id": "0f6a2c1e",
                    "X-Ms-Region": "East US"}


class MockEndpoint:
    def __init__(self, name: str, model: str, generator: Model):
        self.name = name
        self.model = model
        self.generator = generator
        self.fault = ""
        self.extra_headers: dict = {}
        self.received: deque = deque(maxlen=1000)
        self.prompt_cache = PromptCache()
        self.stored = StoredResponses()   # the Responses answers it produced


def _parse_fault(text: str) -> dict:
    fault = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        fault[key] = value
    return fault


def _text(ep: MockEndpoint, tokens: int) -> list[str]:
    """`tokens` words, the first ones saying who served the request."""
    words = f"served by {ep.name} ({ep.model})".split()
    return (words + ["lorem"] * tokens)[:tokens]


def create_endpoint_app(ep: MockEndpoint) -> web.Application:
    def received(request: web.Request, raw: bytes) -> dict:
        entry = {"method": request.method, "path": request.path_qs, "headers": dict(request.headers),
                 "body": raw.decode("utf-8", "replace"), "at": time.time()}
        ep.received.append(entry)
        return entry

    async def completions(request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        raw = await request.read()
        entry = received(request, raw)
        fault = _parse_fault(request.headers.get("X-Mock-Fault", "") or ep.fault)
        drawn = ep.generator.fault()
        if drawn:
            fault.setdefault(drawn if drawn in ("stall", "drop") else "status", drawn)
        if "delay" in fault:
            await asyncio.sleep(float(fault["delay"]) / 1000)
        if "stall" in fault:
            await asyncio.sleep(STALL_S)
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
            if status == 401:   # as OpenAI words it: the key's last characters quoted back
                key = request.headers.get("Authorization", "").removeprefix("Bearer ") or \
                    request.headers.get("x-api-key", "")
                body["error"] = {"message": f"Incorrect API key provided: {key[:3]}****{key[-4:]}. "
                                 "You can find your API key at https://platform.openai.com/account/api-keys.",
                                 "type": "invalid_request_error", "code": "invalid_api_key"}
            if status == 429:
                echo.setdefault("Retry-After", "1")   # unless the fault set its own
            if "html" in fault:
                page = f"<html><head><title>{status}</title></head><body><h1>{status}</h1><hr>nginx</body></html>"
                return web.Response(text=page, status=status, content_type="text/html", headers=echo)
            return web.json_response(body, status=status, headers=echo)
        if "html" in fault:
            return web.Response(text="<html><body>Please sign in to continue.</body></html>",
                                content_type="text/html", headers=echo)
        if "accel" in fault:
            echo["X-Accel-Redirect"] = "/_mock/secret"
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            return web.json_response({"error": {"message": "invalid JSON"}}, status=400)
        prompt_tokens = max(1, len(raw) // 4)
        gen = ep.generator.generation(body)
        api = mock_apis.api_of(request.path)
        model = body.get("model", ep.model)
        previous = body.get("previous_response_id") if api == "responses" else None
        if previous and (not isinstance(previous, str) or previous not in ep.stored):
            # As OpenAI answers: only the endpoint that produced an answer holds it.
            return web.json_response({"error": {
                "message": f"Previous response with id '{previous}' not found.",
                "type": "invalid_request_error", "param": "previous_response_id",
                "code": "previous_response_not_found"}}, status=404, headers=echo)
        if api == "embeddings":
            await asyncio.sleep(gen.ttft_s)
            answer = mock_apis.embeddings(model, body, prompt_tokens)
        else:
            read, written = ep.prompt_cache.lookup(api, body, raw, prompt_tokens)
            usage = mock_apis.Usage(prompt_tokens, gen.tokens, read, written,
                                    web_searches=mock_apis.web_searches(api, body),
                                    cache_written_1h=written if mock_apis.cached_an_hour(api, body) else 0)
            if body.get("stream"):
                response = await _stream(request, ep, body, usage, echo, gen, api, fault)
                entry["streamed_to_the_end"] = True   # not cut by the client hanging up
                return response
            await asyncio.sleep(gen.ttft_s + gen.tokens * gen.seconds_per_token)
            answer = mock_apis.answer(api, model, _text(ep, gen.tokens), usage, body.get("metadata"))
            if api == "responses":
                answer = ep.stored.store(answer, body)
        echo["X-Mock-Service-Ms"] = f"{(time.monotonic() - started) * 1000:.3f}"
        dumps = mock_apis.spaced_json if "spaced" in fault else orjson.dumps
        return web.Response(body=dumps(answer), content_type="application/json", headers=echo)

    async def count_tokens(request: web.Request) -> web.Response:
        """Anthropic's count_tokens and OpenAI's input_tokens: the input as it counts it."""
        raw = await request.read()
        received(request, raw)
        count = {"input_tokens": max(1, len(raw) // 4)}
        if request.path.endswith("/input_tokens"):
            count = {"object": "response.input_tokens", **count}
        return web.json_response(count, headers={"X-Mock-Endpoint": ep.name, "X-Mock-Model": ep.model})

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": ep.model, "object": "model", "owned_by": "mockllm"}]})

    async def set_fault(request: web.Request) -> web.Response:
        spec = await request.json()
        ep.fault = spec.get("fault", "")
        ep.extra_headers = dict(spec.get("headers") or {})
        ep.generator.fault_rates = {k: float(v) for k, v in (spec.get("rates") or {}).items()}
        return web.json_response({"endpoint": ep.name, "fault": ep.fault})

    async def list_received(request: web.Request) -> web.Response:
        return web.json_response(list(ep.received))

    async def clear_received(request: web.Request) -> web.Response:
        ep.received.clear()
        return web.json_response({"cleared": True})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    for suffix in ("chat/completions", "completions", "embeddings", "responses", "messages"):
        app.router.add_post("/{prefix:.*}/" + suffix, completions)
    app.router.add_post("/{prefix:.*}/messages/count_tokens", count_tokens)
    app.router.add_post("/{prefix:.*}/responses/input_tokens", count_tokens)
    app.router.add_get("/{prefix:.*}/models", models)
    ep.stored.routes(app, received, {"X-Mock-Endpoint": ep.name, "X-Mock-Model": ep.model})
    app.router.add_post("/_mock/faults", set_fault)
    app.router.add_get("/_mock/requests", list_received)
    app.router.add_delete("/_mock/requests", clear_received)
    return app


async def _stream(request, ep: MockEndpoint, body: dict, usage: mock_apis.Usage, echo: dict, gen,
                  api: str, fault: dict):
    await asyncio.sleep(gen.ttft_s)
    response = web.StreamResponse(headers={**echo, "Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
    await response.prepare(request)
    events = mock_apis.StreamEvents(api, body.get("model", ep.model), usage,
                                    mock_apis.spaced_json if "spaced" in fault else orjson.dumps,
                                    body.get("metadata"))
    words = _text(ep, gen.tokens)
    step = TOKENS_PER_CHUNK
    opening = events.start()
    if "split" in fault:   # the first read ends at that byte: an id may straddle two reads
        at = int(fault["split"])
        await response.write(opening[:at])
        await asyncio.sleep(0.05)
        opening = opening[at:]
    await response.write(opening)
    if api == "responses":   # held from its first event (a follow-up may name it at once)
        ep.stored.store(events.response, body)
    for i in range(0, len(words), step):
        last = i + step >= len(words)
        await response.write(events.deltas(words[i:i + step], last))
        if i == 0 and "cut" in fault:
            request.transport.close()
            raise asyncio.CancelledError
        if i == 0 and "overloaded" in fault:
            await response.write(events.failed())
            await response.write_eof()
            return response
        if i == 0 and "hang" in fault:
            await asyncio.sleep(STALL_S)
        if not last and gen.seconds_per_token:
            await asyncio.sleep(gen.seconds_per_token * step)
    options = body.get("stream_options") or {}
    await response.write(events.end(isinstance(options, dict) and options.get("include_usage") is True))
    if api == "responses":
        ep.stored.store(events.response, body)
    await response.write_eof()
    return response


def endpoints_from_policy(policy, latency_scale: float = 1.0, fault_rates: dict | None = None,
                          seed: int | None = None) -> list[tuple[MockEndpoint, str, int]]:
    """The policy's loopback endpoints as (mock, host, port)."""
    out = []
    for i, e in enumerate(policy.endpoints):
        if e.scheme == "http" and e.host in ("127.0.0.1", "localhost", "::1"):
            rng = random.Random(None if seed is None else seed + i)
            model = Model(e.tier.rank, latency_scale, dict(fault_rates or {}), rng)
            out.append((MockEndpoint(e.name, e.model, model), e.host, e.port))
    return out


async def serve(policy, latency_scale: float = 1.0, fault: str = "", fault_rates: str = "",
                seed: int | None = None, host: str = "") -> list[web.AppRunner]:
    runners = []
    for ep, own_host, port in endpoints_from_policy(policy, latency_scale, parse_rates(fault_rates), seed):
        ep.fault = fault
        runner = web.AppRunner(create_endpoint_app(ep), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host or own_host, port, reuse_address=True).start()
        runners.append(runner)
    return runners
