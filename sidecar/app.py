"""The sidecar's HTTP face: nginx asks `POST /_decide` for every request.

`decide()` is the whole pipeline as one synchronous function (parse → features →
policy → decision); `create_app()` wraps it in aiohttp and adds /healthz and
/metrics. Nothing here reads the environment or starts anything.
"""

from __future__ import annotations

import logging
import time

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sidecar import constitution, decision, features
from sidecar.denials import Denied
from sidecar.metrics import Metrics
from sidecar.policy import Policy

log = logging.getLogger("sidecar")


class PolicyRef:
    """The one reference to the live policy; a reload swaps it whole (STYLE 5)."""

    __slots__ = ("policy",)

    def __init__(self, policy: Policy):
        self.policy = policy


def decide(policy: Policy, method: str, uri: str, headers, raw: bytes, *, ip: str = "",
           lua_mode: bool = False):
    """Everything the router decides about one request → (status, headers, body).
    Raises Denied for any refusal."""
    path = uri.split("?", 1)[0]
    if path not in features.ROUTED_PATHS:
        raise Denied("unknown_url", f"unknown URL {path!r}; the router serves "
                     f"{', '.join(features.ROUTED_PATHS)}")
    if method != "POST":
        raise Denied("method_not_allowed", f"{method} is not allowed on {path}; use POST",
                     headers=(("Allow", "POST"),))
    constitution.check(headers.getall(constitution.HEADER, []), policy.constitutional_hash)
    body = features.parse_body(raw, headers.get("Content-Type", ""))
    feats = features.extract(features.Features(method, path, headers, ip), body)
    route = policy.route(feats)
    out_headers, out_body = decision.allow(route, feats, lua_mode, path[3:])
    return route, out_headers, out_body


def create_app(ref: PolicyRef, metrics: Metrics) -> web.Application:
    async def handle_decide(request: web.Request) -> web.Response:
        started = time.perf_counter()
        policy = ref.policy
        raw = await request.read()
        headers = request.headers
        try:
            route, out_headers, out_body = decide(
                policy, headers.get("X-Original-Method", ""), headers.get("X-Original-URI", ""),
                headers, raw, ip=headers.get("X-Real-IP", ""),
                lua_mode=headers.get("X-Route-Mode") == "lua")
        except Denied as denied:
            metrics.count_denied(denied.reason)
            status, out_headers, out_body = decision.deny(denied)
            return web.Response(status=status, headers=out_headers, body=out_body)
        except Exception:  # a bug: log it, count it, never show it
            metrics.errors.inc()
            log.exception("decision failed request_id=%s", headers.get("X-Request-Id", "-"))
            return web.Response(status=500, headers={"Content-Type": "application/json"},
                                body=decision.error_body("internal router error", "server_error",
                                                         "internal_error"))
        metrics.count_routed(route.endpoint.tier.name, route.endpoint.name, route.rule)
        metrics.decision_seconds.observe(time.perf_counter() - started)
        return web.Response(status=200, headers=out_headers, body=out_body)

    async def handle_healthz(request: web.Request) -> web.Response:
        policy = ref.policy
        body = {"status": "ok", "policy": policy.source, "policy_version": policy.version,
                "endpoints_down": sorted(policy.health.down_until)}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def handle_metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/metrics", handle_metrics)
    # nginx sends every decision here: lua mode as POST /_decide, stock mode with the
    # client's own method and path (the original is in X-Original-*).
    app.router.add_route("*", "/{tail:.*}", handle_decide)
    return app
