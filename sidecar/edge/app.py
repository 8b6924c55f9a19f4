"""The sidecar: nginx asks it about every request; it answers allow or deny.

`decide()` is the whole pipeline as one synchronous function (parse → features →
policy → decision). `Sidecar.handle()` adds the HTTP face (decisions, /healthz,
/metrics) for the lean nginx socket (sidecar.edge.wire) and for the aiohttp admin
listener. Nothing here reads the environment or starts anything.
"""

from __future__ import annotations

import logging
import time

import orjson
import xxhash
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sidecar.edge import (admission, constitution, decision, features, response_cache, stored_responses,
                         token_counts, unpriced)
from sidecar.edge.catalog import Catalog
from sidecar.edge.settlement import Pending
from sidecar.access import clients, limits
from sidecar.denials import Denied
from sidecar.edge.metrics import Metrics
from sidecar.policy.compiled import Policy

log = logging.getLogger("sidecar")
JSON = {"Content-Type": "application/json"}
MODELS_PATH = "/v1/models"
SERVED_PATHS = ", ".join((*features.ROUTED_PATHS, *token_counts.COUNTED, MODELS_PATH,
                          "/v1/responses/{id}"))


class Answer(Exception):
    """The router answers the request itself (a model listing): 200 with this JSON."""

    def __init__(self, body: bytes):
        super().__init__()
        self.body = body


class Runtime:
    """The per-process state decisions read and update: the feature cache, the
    limit and budget store, and the clock (injected in tests)."""

    __slots__ = ("cache", "store", "clock_ns", "shadow_denied", "unpriced", "settlements", "catalog",
                 "retries", "conversations")

    def __init__(self, cache=None, store=None, clock_ns=time.time_ns):
        self.cache = cache
        self.catalog = Catalog()
        self.retries = None                 # retry_budget.RetryBudget when feedback is on
        self.shadow_denied: list[str] = []  # drained into metrics after each decision
        # What routed requests asked a provider for beside tokens: (setting, name), drained too.
        self.unpriced: list[tuple[str, str]] = []
        self.store = store if store is not None else limits.MemoryStore()
        self.clock_ns = clock_ns
        self.settlements = None             # settlement.Settlements when feedback is on
        self.conversations = None           # conversations.Conversations when feedback is on


class PolicyRef:
    """The one reference to the live policy; a reload swaps it whole (STYLE 5)."""

    __slots__ = ("policy",)

    def __init__(self, policy: Policy):
        self.policy = policy


def decide(policy: Policy, method: str, uri: str, headers, raw: bytes, *, peer: str = "",
           lua_mode: bool = False, runtime: Runtime | None = None):
    """Everything the router decides about one request → (route, headers, body).
    Raises Denied for any refusal."""
    runtime = runtime if runtime is not None else Runtime()
    now_ns = runtime.clock_ns()
    path = uri.split("?", 1)[0]
    listing = path == MODELS_PATH or path.startswith(MODELS_PATH + "/")
    counted = token_counts.COUNTED.get(path)
    stored = None
    if path not in features.ROUTED_PATHS and not listing and counted is None:
        stored = stored_responses.operation(path)
        if stored is None:
            raise Denied("unknown_url", f"unknown URL {_readable(path)!r}; the router serves {SERVED_PATHS}")
    wanted = ("GET",) if listing else stored.methods if stored is not None else ("POST",)
    if method not in wanted:
        raise Denied("method_not_allowed", f"{method} is not allowed on {path}; use "
                     f"{' or '.join(wanted)}", headers=(("Allow", ", ".join(wanted)),))
    _check_arrival(headers)
    constitution.check(headers.getall(constitution.HEADER, []), policy.constitutional_hash,
                       policy.previous_hashes, now_ns / 1e9)
    client = clients.identify(policy.clients, headers, peer)
    if listing:
        raise Answer(runtime.catalog.answer(policy, client.tenant, path[len(MODELS_PATH) + 1:]))
    feats = features.Features(method, path, headers, client.ip)
    feats.sticky = client.id
    continued = cached = None
    # Stored answers are the tenant's: the provider account behind them is everyone's.
    owner = client.tenant.name if client.tenant is not None else ""
    if stored is not None:
        proposed, upstream_path = _stored_route(policy, runtime, feats, stored, uri, owner)
    else:
        _read_body(feats, path, headers, raw, runtime.cache, counted)
        if not lua_mode:   # stock mode: the endpoint is sent the model name as written
            policy.check_model_name(feats.model, rewritten=False)
        if feats.unpriced:
            unpriced.check(feats.unpriced, policy, client.tenant)
        if policy.response_cache is not None and counted is None:
            cached = response_cache.key(policy.response_cache, policy, feats, headers, raw, client.id)
            if cached is not None:
                feats.cache_slot = int(cached[0][:8], 16)
        conversations = runtime.conversations
        continued = conversations.route(policy, feats, owner) if conversations else None
        proposed, upstream_path = continued or policy.route(feats), path[3:]
        if conversations and feats.api == "responses":
            conversations.decide(headers.get("X-Hir-Internal-Id", ""))
        if counted is not None:      # generates nothing: reserves and counts nothing
            feats.tokens, feats.choices = 0, 0
    admitted = admission.admit(policy, client, proposed, feats, runtime.store, now_ns)
    runtime.shadow_denied.extend(admitted.admission.shadow_denied)
    route = admitted.route
    if (stored is not None or continued is not None) and route.endpoint is not proposed.endpoint:
        # A downgrade (tenant tiers, budget) would send it where the answer is not.
        raise Denied("tier_not_allowed", f"the response this request names is held by an "
                     f"endpoint of tier '{proposed.endpoint.tier.name}', which this client may "
                     "not use now", status=403)
    if runtime.retries is not None and route.fallbacks and not runtime.retries.allow():
        route = route._replace(fallbacks=())  # the retry budget is spent
    if stored is not None or counted is not None:
        # Routed and admitted as its API's request; logged as what it is, which the
        # feedback log counts no tokens for.
        feats.api = stored_responses.API if stored is not None else token_counts.API
    out_headers, out_body = decision.allow(route, feats, lua_mode, upstream_path,
                                           admitted.admission.headers)
    if policy.shadow is not None and _shadow_answers(policy.shadow[0], feats, stored, counted):
        decision.add_shadow(out_headers, policy.shadow, headers.get("X-Hir-Internal-Id", ""))
    response_cache.add_headers(out_headers, cached)
    if client.tenant is not None:  # for the feedback log: a name from the policy
        out_headers["X-Route-Tenant"] = client.tenant.name
    if feats.unpriced:   # allowed: counted, since nothing prices it
        runtime.unpriced.extend((setting, name) for setting, name, _ in feats.unpriced)
    reservation = admitted.admission.reservation
    if runtime.settlements is not None and (reservation.token_checks or admitted.budget_micros):
        runtime.settlements.hold(headers.get("X-Hir-Internal-Id", ""), Pending(
            reservation, admitted.spend_key, admitted.budget_micros, admitted.route.endpoint.name,
            feats.tokens, now_ns))
    return route, out_headers, out_body


def _shadow_answers(shadow, feats, stored, counted) -> bool:
    """Whether the shadow endpoint can answer this request as the primary does: one of
    its APIs, something to generate (not a token count), and no earlier answer named
    (a stored response's operation, a Responses follow-up): the shadow never holds
    it and would answer 404, at a cost and with nothing to compare. Nor a Responses
    request in a conversation: on the primary's provider account the shadow's answer
    would be added to the client's conversation too."""
    if stored is not None or counted is not None or feats.api not in shadow.serves:
        return False
    if feats.unpriced:   # the shadow's provider would bill its tools or tier again, unpriced
        return False
    return not (feats.api == "responses" and (feats.body.get("previous_response_id") is not None
                                              or feats.body.get("conversation") is not None))


def _read_body(feats, path: str, headers, raw: bytes, cache, counted=None) -> None:
    """The body's features, from the feature cache when this body was seen before. A
    token count's body is read as its API's (max_tokens optional), and routed as that
    API's request would be."""
    content_type = features.content_type(headers)
    features.check_content_coding(headers)
    if counted is not None:
        feats.api = counted[1]
    if cache is None:
        features.extract(feats, features.parse_body(raw, content_type))
    else:
        features.check_media_type(content_type)
        key = (path, xxhash.xxh3_64_intdigest(raw))
        if not cache.fill(feats, key):
            body, values = features.read_body(raw, content_type)
            features.extract(feats, body)
            cache.store(feats, key, len(raw), values)
    if counted is not None:
        feats.api = counted[0]


def _stored_route(policy, runtime: Runtime, feats, stored, uri: str, owner: str):
    """(route, upstream path) of an operation on a stored response, which must be
    `owner`'s: no body, nothing generated, so nothing reserved."""
    feats.api, feats.choices = "responses", 0   # logged as `stored` once admitted
    feats.stream = stored_responses.streamed(uri)
    upstream_path = stored_responses.upstream_path(uri)   # a bad query is refused first
    return stored_responses.route(policy, runtime.conversations, stored.response_id, owner), upstream_path


def _readable(raw: str) -> str:
    """A request line's bytes as the client meant them: nginx hands over the URI's
    raw bytes, which a header reads as latin-1, while clients write UTF-8."""
    return raw.encode("latin-1", "replace").decode("utf-8", "replace")


def _check_arrival(headers) -> None:
    """Stock mode: nginx says how long the request took to arrive (it reads the
    whole body first) and the bound; a request that dripped in is refused, never
    forwarded. Lua mode cuts such a client off itself (nginx/hir.lua)."""
    elapsed = headers.get("X-Request-Elapsed")
    if elapsed is None:
        return
    try:
        late = float(elapsed) > float(headers.get("X-Request-Timeout", "inf"))
    except ValueError:
        late = False
    if late:
        raise Denied("request_timeout", f"the request took {elapsed} s to arrive; the limit is "
                     f"{headers.get('X-Request-Timeout')} s")


class Sidecar:
    def __init__(self, ref: PolicyRef, metrics: Metrics, runtime: Runtime | None = None):
        self.ref = ref
        self.metrics = metrics
        self.runtime = runtime if runtime is not None else Runtime(cache=features.FeatureCache())
        metrics.watch_cache(self.runtime.cache)

    def handle(self, method: str, target: str, headers, body: bytes):
        """One HTTP request → (status, headers, body)."""
        if method == "GET" and target == "/healthz":
            return self.healthz()
        if method == "GET" and target == "/metrics":
            return 200, {"Content-Type": CONTENT_TYPE_LATEST}, generate_latest(self.metrics.registry)
        return self.decide(headers, body)

    def decide(self, headers, body: bytes):
        started = time.perf_counter()
        metrics = self.metrics
        try:
            route, out_headers, out_body = decide(
                self.ref.policy, headers.get("X-Original-Method", ""),
                headers.get("X-Original-URI", ""), headers, body,
                peer=headers.get("X-Peer-Addr", ""), lua_mode=headers.get("X-Route-Mode") == "lua",
                runtime=self.runtime)
        except Answer as answer:
            return 200, decision.ANSWER_HEADERS, answer.body
        except Denied as denied:
            metrics.count_denied(denied.reason, denied.limit)
            return decision.deny(denied, stock_mode=headers.get("X-Route-Mode") == "stock")
        except Exception:  # a bug: log it, count it, never show it
            metrics.errors.inc()
            log.exception("decision failed request_id=%s", headers.get("X-Request-Id", "-"))
            return 500, JSON, decision.error_body("internal router error", "server_error",
                                                  "internal_error")
        metrics.count_routed(route.endpoint.tier.name, route.endpoint.name, route.rule)
        if self.runtime.shadow_denied:
            for name in self.runtime.shadow_denied:
                metrics.shadow_denied.labels(name).inc()
            self.runtime.shadow_denied.clear()
        if self.runtime.unpriced:
            for setting, name in self.runtime.unpriced:
                metrics.count_unpriced(setting, name)
            self.runtime.unpriced.clear()
        metrics.observe_decision(time.perf_counter() - started)
        return 200, out_headers, out_body

    def healthz(self):
        policy = self.ref.policy
        body = {"status": "ok", "policy": policy.source, "policy_version": policy.version,
                "endpoints_down": policy.health.down_now()}
        return 200, JSON, orjson.dumps(body)


ADMIN_PATHS = ("/healthz", "/metrics")


def create_admin_app(sidecar: Sidecar) -> web.Application:
    """aiohttp app for the TCP admin listener: Prometheus scrapes and health
    checks, nothing else. It never decides: an answer carries the providers'
    credentials for nginx, and a decision spends limits on the caller's word for
    its address. The listener is reachable wherever metrics are scraped (the
    image binds it on all interfaces), so decisions stay on nginx's socket."""

    async def handle(request: web.Request) -> web.Response:
        if request.path not in ADMIN_PATHS:
            status, headers, body = 404, JSON, decision.error_body(
                f"unknown URL; this listener serves {' and '.join(ADMIN_PATHS)}",
                "invalid_request_error", "unknown_url")
        elif request.method not in ("GET", "HEAD"):
            status, headers, body = 405, {**JSON, "Allow": "GET"}, decision.error_body(
                f"{request.method} is not allowed on {request.path}; use GET",
                "invalid_request_error", "method_not_allowed")
        else:
            status, headers, body = sidecar.handle("GET", request.path, request.headers, b"")
        return web.Response(status=status, headers=headers, body=body)

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app
