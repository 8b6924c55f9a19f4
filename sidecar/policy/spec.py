"""YAML policy → compiled `Policy`, strictly.

Every error names the file and the path inside it and says what was expected:
    demo.yaml: rules[3].when.tokens: expected a range like "100..4000", got "lots"
Unknown keys, unknown references, duplicate names and unreachable rules are errors.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import xxhash
import yaml

from sidecar.policy import access_spec, conditions_spec, headers_spec, surface_spec
from sidecar.policy import matchers as m
from sidecar.policy.compiled import (DenyAction, Endpoint, Failover, Policy, RouteAction, Rule,
                                     SplitAction, Tier)
from sidecar.policy.strict_yaml import Ctx, PolicyError, StrictLoader, join, mapping, show, typed

DEFAULT_HASH = "cdd01ef066bc6cf2"
NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
HASH = re.compile(r"^[0-9a-f]{16}$")
# USD per token; the prompt cache's reads and writes are input tokens, priced as such
# unless the policy says (providers bill them apart: Anthropic's writes cost more).
PRICE_KEYS = ("input", "output", "cache_read", "cache_write", "web_search", "cache_write_1h")
ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def load_policy(path: str | Path, env=None) -> Policy:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"{path.name}: cannot read: {exc.strerror}") from None
    return compile_policy(raw, path.name, {} if env is None else env)


def compile_policy(raw: bytes, file: str, env) -> Policy:
    ctx = Ctx(file, env)
    try:
        doc = yaml.load(raw, Loader=StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ctx.error("", f"{where}invalid YAML: {problem}") from None
    doc = mapping(ctx, doc, "", required=("version", "tiers", "endpoints", "default"),
                   optional=("constitutional_hash", "previous_hashes", "rules", "failover",
                             "clients", "limits", "pass_headers", "models", "cors", "retry_budget",
                             "shadow", "response_cache", "conversations",
                             *access_spec.UNPRICED_SETTINGS))
    if doc["version"] != 1:
        raise ctx.error("version", f"expected 1, got {show(doc['version'])}")
    chash = doc.get("constitutional_hash", DEFAULT_HASH)
    if not isinstance(chash, str) or not HASH.match(chash):
        raise ctx.error("constitutional_hash", f"expected 16 lowercase hex digits, got {show(chash)}")
    previous = access_spec.previous_hashes(ctx, doc.get("previous_hashes") or [], chash)
    tiers = _tiers(ctx, doc["tiers"])
    endpoints = _endpoints(ctx, doc["endpoints"], tiers)
    rules = _rules(ctx, doc.get("rules") or [], tiers, endpoints)
    default = Rule("default", m.Always(), _action(ctx, doc["default"], "default", tiers, endpoints))
    failover = _failover(ctx, doc.get("failover"), endpoints)
    clients = access_spec.clients(ctx, doc.get("clients"), tiers)
    for f in (f for f in failover if f.endpoint):   # open paths: nginx forwards alone
        where = "failover.default" if not f.path else f"failover.paths.{f.path}"
        if clients.require_key:
            raise ctx.error(where, "an open failover forwards without the sidecar, which is what checks "
                            "API keys, so with clients.require_key: true every path must fail closed")
        if endpoints[f.endpoint].api_key:
            raise ctx.error(where, f"an open failover forwards without the sidecar, which holds "
                            f"endpoint '{f.endpoint}''s api_key: nginx would send it no credential "
                            "(and answer 502). Fail open to an endpoint that needs none, or fail closed")
    limits = access_spec.limits(ctx, doc.get("limits") or [], tiers)
    pass_request, pass_response = headers_spec.pass_headers(ctx, doc.get("pass_headers"))
    models = surface_spec.models(ctx, doc.get("models"), tiers, endpoints)
    return Policy(source=file, version=xxhash.xxh3_64_hexdigest(raw), constitutional_hash=chash,
                  previous_hashes=previous,
                  tiers=tuple(tiers.values()), endpoints=tuple(endpoints.values()),
                  rules=tuple(rules), default=default, failover=failover,
                  clients=clients, limits=limits,
                  pass_request_headers=pass_request, pass_response_headers=pass_response,
                  models=models, cors=surface_spec.cors(ctx, doc.get("cors")),
                  retry_budget=surface_spec.retry_budget(ctx, doc.get("retry_budget")),
                  shadow=surface_spec.shadow(ctx, doc.get("shadow"), endpoints),
                  response_cache=surface_spec.response_cache(ctx, doc.get("response_cache")),
                  reject_unknown_conversations=surface_spec.conversations(ctx, doc.get("conversations")),
                  **{s: surface_spec.unpriced(ctx, s, doc.get(s)) for s in access_spec.UNPRICED_SETTINGS},
                  missing_env=tuple(ctx.missing_env))


def _tiers(ctx, value, path="tiers"):
    if not isinstance(value, dict) or not value:
        raise ctx.error(path, f"expected a mapping of tier name to tier, got {show(value)}")
    tiers, ranks = {}, {}
    for name, spec in value.items():
        where = join(path, name)
        if not isinstance(name, str) or not NAME.match(name):
            raise ctx.error(where, "tier names are lowercase letters, digits and '-'")
        spec = mapping(ctx, spec, where, required=("rank",),
                        optional=("latency_target_ms", "description", "first_byte_timeout_ms",
                                  "max_stream_s"))
        rank = typed(ctx, spec["rank"], int, "an integer rank", join(where, "rank"))
        if rank in ranks:
            raise ctx.error(join(where, "rank"), f"rank {rank} is already used by tier '{ranks[rank]}'")
        ranks[rank] = name
        latency = typed(ctx, spec.get("latency_target_ms", 0), int, "milliseconds as an integer",
                         join(where, "latency_target_ms"))
        description = typed(ctx, spec.get("description", ""), str, "a string",
                             join(where, "description"))
        deadlines = []
        for key in ("first_byte_timeout_ms", "max_stream_s"):
            v = typed(ctx, spec.get(key, 0), int, "a whole number", join(where, key))
            if v < 0:
                raise ctx.error(join(where, key), f"expected a positive number, got {v}")
            deadlines.append(v)
        tiers[name] = Tier(name, rank, latency, description, *deadlines)
    return tiers


def _endpoints(ctx, value, tiers, path="endpoints"):
    if not isinstance(value, list) or not value:
        raise ctx.error(path, f"expected a non-empty list of endpoints, got {show(value)}")
    endpoints = {}
    for i, spec in enumerate(value):
        where = f"{path}[{i}]"
        spec = mapping(ctx, spec, where, required=("name", "tier", "url", "model"),
                        optional=("price", "weight", "api_key", "down", "serves", "auth",
                                  "context_tokens", "failover_on"))
        name = typed(ctx, spec["name"], str, "a string", join(where, "name"))
        if not NAME.match(name):
            raise ctx.error(join(where, "name"), "endpoint names are lowercase letters, digits and "
                            f"'-', starting with a letter, got {show(name)}")
        if name in endpoints:
            raise ctx.error(join(where, "name"), f"duplicate endpoint name '{name}'")
        tier = tiers.get(spec["tier"])
        if tier is None:
            raise ctx.error(join(where, "tier"), f"unknown tier {show(spec['tier'])}; "
                            f"defined tiers: {', '.join(tiers)}")
        scheme, host, port, base = _url(ctx, spec["url"], join(where, "url"))
        model = typed(ctx, spec["model"], str, "a string", join(where, "model"))
        price = mapping(ctx, spec.get("price", {}), join(where, "price"),
                         optional=PRICE_KEYS)
        prices = []
        for key in PRICE_KEYS:
            # A cache price defaults to the input price, an hour's write to a write's.
            unset = prices[3] if key == "cache_write_1h" else prices[0] if key.startswith("cache") else 0
            p = price.get(key, unset)
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < float("inf"):
                unit = "search" if key == "web_search" else "token"
                raise ctx.error(join(where, f"price.{key}"),
                                f"expected a non-negative USD price per {unit}, got {show(p)}")
            prices.append(float(p))
        weight = typed(ctx, spec.get("weight", 1), int, "an integer weight", join(where, "weight"))
        if not 1 <= weight <= 100:
            raise ctx.error(join(where, "weight"), f"expected a weight from 1 to 100, got {weight}")
        api_key = _secret(ctx, spec.get("api_key", ""), join(where, "api_key"))
        down = typed(ctx, spec.get("down", False), bool, "true or false", join(where, "down"))
        endpoints[name] = Endpoint(name, tier, scheme, host, port, base, model, prices[0],
                                   prices[1], weight, api_key, down,
                                   price_cache_read=prices[2], price_cache_write=prices[3],
                                   price_web_search=prices[4], price_cache_write_1h=prices[5],
                                   **surface_spec.endpoint_surface(ctx, spec, where))
    for tier in tiers.values():
        if not any(e.tier == tier for e in endpoints.values()):
            raise ctx.error(path, f"tier '{tier.name}' has no endpoints")
    return endpoints


def _url(ctx, value, path):
    typed(ctx, value, str, "a URL", path)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ctx.error(path, f"expected an http:// or https:// URL, got {show(value)}")
    if parts.query or parts.fragment or parts.username:
        raise ctx.error(path, f"the URL may not carry a query, fragment or user info, got {show(value)}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ctx.error(path, f"invalid port in {show(value)}") from None
    return parts.scheme, parts.hostname, port, parts.path.rstrip("/")


def _secret(ctx, value, path):
    typed(ctx, value, str, "a ${VARIABLE} reference", path)
    if not value:
        return ""
    match = ENV_REF.match(value)
    if not match:
        raise ctx.error(path, "credentials come from the environment: write ${VARIABLE}, "
                        "never the key itself")
    name = match.group(1)
    if not ctx.env.get(name) and name not in ctx.missing_env:
        ctx.missing_env.append(name)
    return ctx.env.get(name, "")


def _rules(ctx, value, tiers, endpoints, path="rules"):
    if not isinstance(value, list):
        raise ctx.error(path, f"expected a list of rules, got {show(value)}")
    rules, names = [], set()
    catch_all = None
    for i, spec in enumerate(value):
        where = f"{path}[{i}]"
        spec = mapping(ctx, spec, where, optional=("name", "when", "tier", "endpoint", "deny", "split"))
        name = typed(ctx, spec.get("name", where), str, "a string", join(where, "name"))
        if name in names:
            raise ctx.error(join(where, "name"), f"duplicate rule name '{name}'")
        names.add(name)
        if catch_all is not None:
            raise ctx.error(where, f"unreachable: {catch_all} matches every request")
        if "when" in spec and spec["when"] != {}:
            when = conditions_spec.when(ctx, spec["when"], join(where, "when"))
        else:
            when = m.Always()
            catch_all = f"{where} ('{name}')"
        action_spec = {k: spec[k] for k in ("tier", "endpoint", "deny", "split") if k in spec}
        rules.append(Rule(name, when, _action(ctx, action_spec, where, tiers, endpoints)))
    return rules


def _action(ctx, spec, path, tiers, endpoints):
    spec = mapping(ctx, spec, path, optional=("tier", "endpoint", "deny", "split"))
    given = [k for k in ("tier", "endpoint", "deny", "split") if k in spec]
    if len(given) != 1:
        raise ctx.error(path, "expected exactly one action: tier, endpoint, split or deny")
    key = given[0]
    if key == "split":
        return _split(ctx, spec["split"], join(path, "split"), tiers, endpoints)
    if key == "tier":
        tier = tiers.get(spec["tier"])
        if tier is None:
            raise ctx.error(join(path, "tier"), f"unknown tier {show(spec['tier'])}; "
                            f"defined tiers: {', '.join(tiers)}")
        return RouteAction(tier, None)
    if key == "endpoint":
        endpoint = endpoints.get(spec["endpoint"])
        if endpoint is None:
            raise ctx.error(join(path, "endpoint"), f"unknown endpoint {show(spec['endpoint'])}")
        return RouteAction(None, endpoint)
    where = join(path, "deny")
    deny = mapping(ctx, spec["deny"], where, required=("status", "code"), optional=("message",))
    status = typed(ctx, deny["status"], int, "an HTTP status", join(where, "status"))
    if not 400 <= status <= 499:
        raise ctx.error(join(where, "status"), f"expected a 4xx status, got {status}")
    code = typed(ctx, deny["code"], str, "an error code", join(where, "code"))
    if not re.match(r"^[a-z][a-z0-9_]{0,63}$", code):
        raise ctx.error(join(where, "code"), f"expected a snake_case error code, got {show(code)}")
    message = typed(ctx, deny.get("message", "request refused by policy"), str, "a string",
                     join(where, "message"))
    return DenyAction(status, code, message)


def _split(ctx, value, path, tiers, endpoints) -> SplitAction:
    """split: [{tier: fast, weight: 90}, {tier: balanced, weight: 10}] (or endpoint:)."""
    if not isinstance(value, list) or len(value) < 2:
        raise ctx.error(path, f"expected a list of at least two {{tier|endpoint, weight}}, got {show(value)}")
    arms, upto = [], 0
    for i, arm in enumerate(value):
        where = f"{path}[{i}]"
        arm = mapping(ctx, arm, where, required=("weight",), optional=("tier", "endpoint"))
        weight = typed(ctx, arm["weight"], int, "an integer weight", join(where, "weight"))
        if not 1 <= weight <= 10_000:
            raise ctx.error(join(where, "weight"), f"expected a weight from 1 to 10000, got {weight}")
        route = _action(ctx, {k: arm[k] for k in ("tier", "endpoint") if k in arm}, where, tiers, endpoints)
        upto += weight
        arms.append((route, (route.tier or route.endpoint).name, upto))
    return SplitAction(tuple(arms), upto)


def _failover(ctx, value, endpoints, path="failover"):
    if value is None:
        return (Failover("", ""),)
    spec = mapping(ctx, value, path, optional=("default", "paths"))

    def one(v, where, route_path):
        if v == "closed":
            return Failover(route_path, "")
        if isinstance(v, dict):
            mapping(ctx, v, where, required=("endpoint",))
            if v["endpoint"] not in endpoints:
                raise ctx.error(join(where, "endpoint"), f"unknown endpoint {show(v['endpoint'])}")
            return Failover(route_path, v["endpoint"])
        raise ctx.error(where, f'expected "closed" or {{endpoint: NAME}}, got {show(v)}')

    out = [one(spec.get("default", "closed"), join(path, "default"), "")]
    paths = spec.get("paths") or {}
    if not isinstance(paths, dict):
        raise ctx.error(join(path, "paths"), f"expected a mapping of path to failover, got {show(paths)}")
    for route_path, v in paths.items():
        if not isinstance(route_path, str) or not route_path.startswith("/") or '"' in route_path:
            raise ctx.error(join(path, "paths"), f"expected an absolute path, got {show(route_path)}")
        out.append(one(v, f"{path}.paths.{route_path}", route_path))
    return tuple(out)


