"""The sidecar over a real unix socket: decisions, denials, bugs, health and metrics."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from sidecar.edge.app import PolicyRef, Sidecar, create_admin_app
from sidecar.edge.metrics import Metrics
from sidecar.edge.features import entry_weight
from sidecar.policy.spec import load_policy
from sidecar.edge.wire import HttpProtocol
from conftest import DEMO, HASH


async def _with_sidecar(tmp_path, fn, policy=None, listener="wire"):
    """Serve on a real unix socket: the lean nginx protocol or the aiohttp admin app."""
    policy = policy or load_policy(DEMO, {})
    metrics = Metrics(CollectorRegistry())
    sidecar = Sidecar(PolicyRef(policy), metrics)
    path = str(tmp_path / "s.sock")
    if listener == "wire":
        server = await asyncio.get_running_loop().create_unix_server(
            lambda: HttpProtocol(sidecar.handle, 1 << 20), path)
    else:
        runner = web.AppRunner(create_admin_app(sidecar))
        await runner.setup()
        await web.UnixSite(runner, path).start()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as session:
            return await fn(session, metrics)
    finally:
        if listener == "wire":
            server.close()
        else:
            await runner.cleanup()


def decide_headers(**extra):
    return {"X-Original-URI": "/v1/chat/completions", "X-Original-Method": "POST",
            "Content-Type": "application/json", "X-Constitutional-Hash": HASH, **extra}


BODY = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})


def test_a_decision_and_its_metrics(tmp_path):
    async def fn(session, metrics):
        async with session.post("http://s/_decide", data=BODY, headers=decide_headers(**{"X-Route-Mode": "lua"})) as r:
            assert r.status == 200
            assert r.headers["X-Accel-Redirect"] == "@buffered_nano"
            assert r.headers["X-Route-Endpoint"].startswith("nano-")
            assert json.loads(await r.read())["model"].startswith("qwen3-")
        async with session.get("http://s/metrics") as r:
            text = await r.text()
        assert 'router_routed_total{endpoint="nano-qwen3-0-6b",rule="default",tier="nano"} 1.0' in text
        assert 'router_feature_cache_lookups_total{result="miss"} 1.0' in text
        assert f'router_feature_cache_bytes {float(entry_weight(len(BODY), 5))}' in text
        assert 'router_decision_seconds_count 1.0' in text
        async with session.get("http://s/healthz") as r:
            health = await r.json()
        assert health["status"] == "ok" and len(health["policy_version"]) == 16
    asyncio.run(_with_sidecar(tmp_path, fn))


@pytest.mark.parametrize("method,path,status", [
    ("POST", "/_decide", 404), ("POST", "/v1/chat/completions", 404), ("GET", "/v1/models", 404),
    ("PUT", "/anything", 404), ("POST", "/metrics", 405), ("DELETE", "/healthz", 405)])
def test_the_admin_listener_never_decides(tmp_path, method, path, status):
    """It is reachable wherever metrics are scraped: a decision there would hand
    out the providers' credentials and spend limits for any address named."""
    async def fn(session, metrics):
        headers = decide_headers(**{"X-Peer-Addr": "203.0.113.9"})
        async with session.request(method, f"http://s{path}", data=BODY, headers=headers) as r:
            assert r.status == status
            assert (await r.json())["error"]["code"] in ("unknown_url", "method_not_allowed")
            assert not [name for name in r.headers if name.lower().startswith("x-route")]
            assert "X-Accel-Redirect" not in r.headers
        async with session.get("http://s/healthz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"
        async with session.get("http://s/metrics") as r:
            assert "router_decision_seconds_count 0.0" in await r.text()
        assert metrics.routed == {} and metrics.denied == {}
    asyncio.run(_with_sidecar(tmp_path, fn, listener="admin"))


def test_a_denial_is_counted_by_reason(tmp_path):
    async def fn(session, metrics):
        async with session.post("http://s/_decide", data="{", headers=decide_headers()) as r:
            assert r.status == 400
            assert r.headers["X-Route-Decision"] == "deny"
            assert (await r.json())["error"]["code"] == "invalid_json"
        assert metrics.denied == {"invalid_json": 1}
        async with session.get("http://s/metrics") as r:
            assert 'router_denied_total{reason="invalid_json"} 1.0' in await r.text()
    asyncio.run(_with_sidecar(tmp_path, fn))


def test_a_bug_is_logged_and_counted_never_shown(tmp_path, caplog):
    policy = load_policy(DEMO, {})

    def broken(features):
        raise RuntimeError("secret internals")
    policy.route = broken

    async def fn(session, metrics):
        async with session.post("http://s/_decide", data=BODY, headers=decide_headers()) as r:
            assert r.status == 500  # nginx maps any 5xx from the sidecar to the failover
            text = await r.text()
        assert "secret internals" not in text and "Traceback" not in text
        assert metrics.errors._value.get() == 1
    asyncio.run(_with_sidecar(tmp_path, fn, policy))
    assert "secret internals" in caplog.text
