"""The policy's keys for the API surface: what an endpoint serves and how it
fails over, model names and aliases, CORS, the retry budget, the shadow endpoint
and the response cache."""

from __future__ import annotations

import re

from sidecar.policy.apis import APIS, AUTH_STYLES, DEFAULT_SERVES
from sidecar.policy.access_spec import duration, unpriced_allowed
from sidecar.policy.compiled import FAILOVER_STATUSES, Cors, Models, ResponseCache
from sidecar.policy.headers_spec import TOKEN
from sidecar.policy.strict_yaml import join, mapping, show, typed

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$")
ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
# Request headers a browser client of this API sends; a policy adds its own.
CORS_REQUEST_HEADERS = ("Authorization", "Content-Type", "X-Constitutional-Hash", "X-Request-Id",
                        "OpenAI-Beta", "x-api-key", "anthropic-version", "anthropic-beta")
# Response headers a page may read besides the CORS-safelisted ones.
CORS_EXPOSE = ("X-Request-Id", "X-Constitutional-Hash", "X-Policy-Version", "X-Route-Tier",
               "X-Route-Model", "RateLimit", "RateLimit-Policy", "Retry-After", "Server-Timing",
               "X-Cache-Status")


def endpoint_surface(ctx, spec, where) -> dict:
    """serves, auth, context_tokens, failover_on of one endpoint (defaults filled)."""
    serves = spec.get("serves", list(DEFAULT_SERVES))
    if not isinstance(serves, list) or not serves or not all(isinstance(s, str) for s in serves):
        raise ctx.error(join(where, "serves"), f"expected a list of APIs, got {show(serves)}")
    for api in serves:
        if api not in APIS:
            raise ctx.error(join(where, "serves"), f"unknown API {show(api)}; expected any of "
                            f"{', '.join(APIS)}")
    auth = spec.get("auth", "bearer")
    if auth not in AUTH_STYLES:
        raise ctx.error(join(where, "auth"), f"expected one of {', '.join(AUTH_STYLES)}, got {show(auth)}")
    context = typed(ctx, spec.get("context_tokens", 0), int, "a number of tokens",
                    join(where, "context_tokens"))
    if context < 0:
        raise ctx.error(join(where, "context_tokens"), f"expected a positive number, got {context}")
    failover_on = spec.get("failover_on", sorted(FAILOVER_STATUSES))
    if not isinstance(failover_on, list) or not all(s in FAILOVER_STATUSES for s in failover_on):
        raise ctx.error(join(where, "failover_on"), "expected a list of statuses from "
                        f"{', '.join(map(str, sorted(FAILOVER_STATUSES)))}, got {show(failover_on)}")
    return {"serves": frozenset(serves), "auth": auth, "context_tokens": context,
            "failover_on": frozenset(failover_on)}


def models(ctx, value, tiers, endpoints, path="models") -> Models:
    if value is None:
        return Models()
    spec = mapping(ctx, value, path, optional=("unknown", "status", "aliases"))
    unknown = spec.get("unknown", "route")
    if unknown not in ("route", "reject"):
        raise ctx.error(join(path, "unknown"), f'expected "route" or "reject", got {show(unknown)}')
    status = typed(ctx, spec.get("status", 404), int, "404 or 400", join(path, "status"))
    if status not in (400, 404):
        raise ctx.error(join(path, "status"), f"expected 404 or 400, got {status}")
    aliases = []
    raw = spec.get("aliases") or {}
    if not isinstance(raw, dict):
        raise ctx.error(join(path, "aliases"), f"expected a mapping of name to target, got {show(raw)}")
    for name, target in raw.items():
        where = join(join(path, "aliases"), str(name))
        if not isinstance(name, str) or not MODEL_NAME.match(name):
            raise ctx.error(where, f"expected a model name, got {show(name)}")
        if name == "auto" or name in tiers:
            raise ctx.error(where, f"'{name}' is already a model name of the router (auto or a tier)")
        target = mapping(ctx, target, where, optional=("tier", "endpoint"))
        if len(target) != 1:
            raise ctx.error(where, "expected exactly one target: {tier: NAME} or {endpoint: NAME}")
        if "tier" in target:
            tier = tiers.get(target["tier"])
            if tier is None:
                raise ctx.error(join(where, "tier"), f"unknown tier {show(target['tier'])}")
            aliases.append((name, tier, None))
        else:
            endpoint = endpoints.get(target["endpoint"])
            if endpoint is None:
                raise ctx.error(join(where, "endpoint"), f"unknown endpoint {show(target['endpoint'])}")
            aliases.append((name, None, endpoint))
    return Models(unknown == "reject", status, tuple(aliases))


def cors(ctx, value, path="cors") -> Cors | None:
    if value is None:
        return None
    spec = mapping(ctx, value, path, required=("origins",),
                   optional=("headers", "expose", "max_age", "credentials"))
    origins = spec["origins"]
    if not isinstance(origins, list) or not origins:
        raise ctx.error(join(path, "origins"), f"expected a list of origins, got {show(origins)}")
    for i, origin in enumerate(origins):
        if origin != "*" and not (isinstance(origin, str) and ORIGIN.match(origin)):
            raise ctx.error(f"{path}.origins[{i}]", "expected \"*\" or an origin like "
                            f"https://app.example.com (scheme, host, port; no path), got {show(origin)}")
    if "*" in origins and len(origins) > 1:
        raise ctx.error(join(path, "origins"), '"*" already allows every origin; list it alone')
    credentials = typed(ctx, spec.get("credentials", False), bool, "true or false",
                        join(path, "credentials"))
    if credentials and "*" in origins:
        raise ctx.error(join(path, "credentials"), 'browsers refuse credentials with origin "*"; '
                        "list the origins")
    max_age = typed(ctx, spec.get("max_age", 600), int, "seconds", join(path, "max_age"))
    extra = {}
    for key in ("headers", "expose"):
        names = spec.get(key) or []
        if not isinstance(names, list) or not all(isinstance(n, str) and TOKEN.match(n) for n in names):
            raise ctx.error(join(path, key), f"expected a list of header names, got {show(names)}")
        extra[key] = tuple(names)
    return Cors(tuple(origins), _unique(CORS_REQUEST_HEADERS + extra["headers"]),
                _unique(CORS_EXPOSE + extra["expose"]), max_age, credentials)


def _unique(names) -> tuple:
    seen, out = set(), []
    for name in names:
        if name.lower() not in seen:
            seen.add(name.lower())
            out.append(name)
    return tuple(out)


def retry_budget(ctx, value, path="retry_budget") -> tuple[float, float]:
    if value is None:
        return (0.2, 10.0)
    spec = mapping(ctx, value, path, optional=("ratio", "min_per_second"))
    out = []
    for key, default, top in (("ratio", 0.2, 10.0), ("min_per_second", 10.0, 1e6)):
        v = spec.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= top:
            raise ctx.error(join(path, key), f"expected a number from 0 to {top:g}, got {show(v)}")
        out.append(float(v))
    return out[0], out[1]


def shadow(ctx, value, endpoints, path="shadow"):
    """shadow: {endpoint: NAME, share: 0.05}: that share of routed requests is also
    sent to NAME; its answers are discarded and counted apart."""
    if value is None:
        return None
    spec = mapping(ctx, value, path, required=("endpoint", "share"))
    endpoint = endpoints.get(spec["endpoint"])
    if endpoint is None:
        raise ctx.error(join(path, "endpoint"), f"unknown endpoint {show(spec['endpoint'])}")
    share = spec["share"]
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
        raise ctx.error(join(path, "share"), f"expected a share from 0 to 1, got {show(share)}")
    return endpoint, float(share)


# APIs whose answers may be given again: stateless ones. A Responses answer is
# stored under its own id and continued by it; a repeat must make a new one.
CACHEABLE_APIS = ("chat", "completions", "embeddings", "messages")


def response_cache(ctx, value, path="response_cache"):
    """response_cache: {ttl: 5m, max_size_mb: 64, apis: [...], shared: false}: a
    non-streamed answer (200) is kept that long and given again to an exact repeat."""
    if value is None:
        return None
    spec = mapping(ctx, value, path, optional=("ttl", "max_size_mb", "apis", "shared"))
    ttl = duration(ctx, spec.get("ttl", "5m"), join(path, "ttl"))
    # 64 MB by default: in the image and the Kubernetes pod the run directory is in
    # memory (deploy/k8s/deployment.yaml gives it 256Mi for everything).
    size = typed(ctx, spec.get("max_size_mb", 64), int, "a size in MB", join(path, "max_size_mb"))
    if not 1 <= size <= 1_000_000:
        raise ctx.error(join(path, "max_size_mb"), f"expected 1 to 1000000 (MB), got {size}")
    apis = spec.get("apis", list(CACHEABLE_APIS))
    if not isinstance(apis, list) or not apis or not all(a in CACHEABLE_APIS for a in apis):
        raise ctx.error(join(path, "apis"), f"expected a list of any of {', '.join(CACHEABLE_APIS)} "
                        f"(Responses answers are stored and continued by id: never cached), got {show(apis)}")
    shared = typed(ctx, spec.get("shared", False), bool, "true or false", join(path, "shared"))
    return ResponseCache(ttl, size, frozenset(apis), shared)


def conversations(ctx, value, path="conversations") -> bool:
    """conversations: {unknown: route | reject}: whether a Responses follow-up naming
    an answer the router never saw is routed by the rules (route, the default) or
    refused, since whose answer it is cannot be checked (reject)."""
    if value is None:
        return False
    spec = mapping(ctx, value, path, optional=("unknown",))
    unknown = spec.get("unknown", "route")
    if unknown not in ("route", "reject"):
        raise ctx.error(join(path, "unknown"), f'expected "route" or "reject", got {show(unknown)}')
    return unknown == "reject"


def unpriced(ctx, setting: str, value) -> frozenset:
    """provider_tools: {allow: [web_search, ...]}, service_tier: {allow: [priority]}: what
    a provider bills beside the tokens that clients may ask for (default: none;
    sidecar.edge.unpriced)."""
    if value is None:
        return frozenset()
    spec = mapping(ctx, value, setting, optional=("allow",))
    return unpriced_allowed(ctx, setting, spec.get("allow", []), join(setting, "allow"))
