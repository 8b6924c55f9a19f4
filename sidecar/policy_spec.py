"""YAML policy → compiled `Policy`, strictly.

Every error names the file and the path inside it and says what was expected:
    demo.yaml: rules[3].when.tokens: expected a range like "100..4000", got "lots"
Unknown keys, unknown references, duplicate names and unreachable rules are errors.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import xxhash
import yaml

from sidecar import matchers as m
from sidecar.clients import NO_CLIENTS, Clients, Tenant
from sidecar.gcra import Rate
from sidecar.limits import KEY_PARTS, Limit
from sidecar.policy import DenyAction, Endpoint, Failover, Policy, RouteAction, Rule, Tier

DEFAULT_HASH = "cdd01ef066bc6cf2"
NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
HASH = re.compile(r"^[0-9a-f]{16}$")
ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
RANGE = re.compile(r"^\s*(-?[0-9.]+)?\s*\.\.\s*(-?[0-9.]+)?\s*$")
COMPARE = re.compile(r"^\s*(>=|<=|==|>|<)\s*(-?[0-9.]+)\s*$")
INT_FIELDS = {"tokens": "tokens", "messages": "messages", "max_tokens": "max_tokens",
              "tier_hint": "tier_hint"}
FLOAT_FIELDS = {"complexity": "complexity"}
BOOL_FIELDS = {"system_prompt": "system_prompt", "code": "code", "math": "math",
               "tools": "tools", "stream": "stream"}
TEXT_FIELDS = {"path": "path", "method": "method", "model": "model", "prompt": "prompt"}
WHEN_KEYS = sorted([*INT_FIELDS, *FLOAT_FIELDS, *BOOL_FIELDS, *TEXT_FIELDS,
                    "headers", "all", "any", "not"])


class PolicyError(ValueError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of keeping the last."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Ctx:
    def __init__(self, file: str, env):
        self.file = file
        self.env = env
        self.missing_env: list[str] = []

    def error(self, path: str, message: str) -> PolicyError:
        return PolicyError(f"{self.file}: {path}: {message}" if path else f"{self.file}: {message}")


def _show(value) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _mapping(ctx, value, path, required=(), optional=()):
    if not isinstance(value, dict):
        raise ctx.error(path, f"expected a mapping, got {_show(value)}")
    allowed = set(required) | set(optional)
    for key in value:
        if key not in allowed:
            raise ctx.error(path, f"unknown key '{key}'; expected one of: {', '.join(sorted(allowed))}")
    for key in required:
        if key not in value:
            raise ctx.error(path, f"missing required key '{key}'")
    return value


def _typed(ctx, value, kind, what, path):
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise ctx.error(path, f"expected {what}, got {_show(value)}")
    return value


def _join(path, key):
    return f"{path}.{key}" if path else str(key)


def load_policy(path: str | Path, env=None) -> Policy:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"{path.name}: cannot read: {exc.strerror}") from None
    return compile_policy(raw, path.name, {} if env is None else env)


def compile_policy(raw: bytes, file: str, env) -> Policy:
    ctx = _Ctx(file, env)
    try:
        doc = yaml.load(raw, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ctx.error("", f"{where}invalid YAML: {problem}") from None
    doc = _mapping(ctx, doc, "", required=("version", "tiers", "endpoints", "default"),
                   optional=("constitutional_hash", "previous_hashes", "rules", "failover",
                             "clients", "limits"))
    if doc["version"] != 1:
        raise ctx.error("version", f"expected 1, got {_show(doc['version'])}")
    chash = doc.get("constitutional_hash", DEFAULT_HASH)
    if not isinstance(chash, str) or not HASH.match(chash):
        raise ctx.error("constitutional_hash", f"expected 16 lowercase hex digits, got {_show(chash)}")
    previous = _previous_hashes(ctx, doc.get("previous_hashes") or [], chash)
    tiers = _tiers(ctx, doc["tiers"])
    endpoints = _endpoints(ctx, doc["endpoints"], tiers)
    rules = _rules(ctx, doc.get("rules") or [], tiers, endpoints)
    default = Rule("default", m.Always(), _action(ctx, doc["default"], "default", tiers, endpoints))
    failover = _failover(ctx, doc.get("failover"), endpoints)
    clients = _clients(ctx, doc.get("clients"), tiers)
    limits = _limits(ctx, doc.get("limits") or [], tiers)
    return Policy(source=file, version=xxhash.xxh3_64_hexdigest(raw), constitutional_hash=chash,
                  previous_hashes=previous,
                  tiers=tuple(tiers.values()), endpoints=tuple(endpoints.values()),
                  rules=tuple(rules), default=default, failover=failover,
                  clients=clients, limits=limits,
                  missing_env=tuple(ctx.missing_env))


def _previous_hashes(ctx, value, active, path="previous_hashes"):
    """[{hash, until}] → ((hash, epoch seconds), ...): old hashes accepted until then."""
    if not isinstance(value, list):
        raise ctx.error(path, f"expected a list of {{hash, until}}, got {_show(value)}")
    out = []
    for i, spec in enumerate(value):
        where = f"{path}[{i}]"
        spec = _mapping(ctx, spec, where, required=("hash", "until"))
        old = spec["hash"]
        if not isinstance(old, str) or not HASH.match(old):
            raise ctx.error(_join(where, "hash"), f"expected 16 lowercase hex digits, got {_show(old)}")
        if old == active:
            raise ctx.error(_join(where, "hash"), "is the active constitutional_hash")
        until = spec["until"]
        if isinstance(until, str):
            try:
                until = datetime.fromisoformat(until.replace("Z", "+00:00"))
            except ValueError:
                until = None
        if isinstance(until, datetime):
            if until.tzinfo is None:  # an unquoted YAML timestamp without zone is UTC
                until = until.replace(tzinfo=timezone.utc)
            out.append((old, until.timestamp()))
            continue
        raise ctx.error(_join(where, "until"),
                        f'expected a UTC time like "2026-12-31T00:00:00Z", got {_show(spec["until"])}')
    return tuple(out)


def _tiers(ctx, value, path="tiers"):
    if not isinstance(value, dict) or not value:
        raise ctx.error(path, f"expected a mapping of tier name to tier, got {_show(value)}")
    tiers, ranks = {}, {}
    for name, spec in value.items():
        where = _join(path, name)
        if not isinstance(name, str) or not NAME.match(name):
            raise ctx.error(where, "tier names are lowercase letters, digits and '-'")
        spec = _mapping(ctx, spec, where, required=("rank",),
                        optional=("latency_target_ms", "description"))
        rank = _typed(ctx, spec["rank"], int, "an integer rank", _join(where, "rank"))
        if rank in ranks:
            raise ctx.error(_join(where, "rank"), f"rank {rank} is already used by tier '{ranks[rank]}'")
        ranks[rank] = name
        latency = _typed(ctx, spec.get("latency_target_ms", 0), int, "milliseconds as an integer",
                         _join(where, "latency_target_ms"))
        description = _typed(ctx, spec.get("description", ""), str, "a string",
                             _join(where, "description"))
        tiers[name] = Tier(name, rank, latency, description)
    return tiers


def _endpoints(ctx, value, tiers, path="endpoints"):
    if not isinstance(value, list) or not value:
        raise ctx.error(path, f"expected a non-empty list of endpoints, got {_show(value)}")
    endpoints = {}
    for i, spec in enumerate(value):
        where = f"{path}[{i}]"
        spec = _mapping(ctx, spec, where, required=("name", "tier", "url", "model"),
                        optional=("price", "weight", "api_key", "down"))
        name = _typed(ctx, spec["name"], str, "a string", _join(where, "name"))
        if not NAME.match(name):
            raise ctx.error(_join(where, "name"), "endpoint names are lowercase letters, digits and "
                            f"'-', starting with a letter, got {_show(name)}")
        if name in endpoints:
            raise ctx.error(_join(where, "name"), f"duplicate endpoint name '{name}'")
        tier = tiers.get(spec["tier"])
        if tier is None:
            raise ctx.error(_join(where, "tier"), f"unknown tier {_show(spec['tier'])}; "
                            f"defined tiers: {', '.join(tiers)}")
        scheme, host, port, base = _url(ctx, spec["url"], _join(where, "url"))
        model = _typed(ctx, spec["model"], str, "a string", _join(where, "model"))
        price = _mapping(ctx, spec.get("price", {}), _join(where, "price"),
                         optional=("input", "output"))
        prices = []
        for key in ("input", "output"):
            p = price.get(key, 0)
            if isinstance(p, bool) or not isinstance(p, (int, float)) or p < 0:
                raise ctx.error(_join(where, f"price.{key}"),
                                f"expected a non-negative USD price per token, got {_show(p)}")
            prices.append(float(p))
        weight = _typed(ctx, spec.get("weight", 1), int, "an integer weight", _join(where, "weight"))
        if not 1 <= weight <= 100:
            raise ctx.error(_join(where, "weight"), f"expected a weight from 1 to 100, got {weight}")
        api_key = _secret(ctx, spec.get("api_key", ""), _join(where, "api_key"))
        down = _typed(ctx, spec.get("down", False), bool, "true or false", _join(where, "down"))
        endpoints[name] = Endpoint(name, tier, scheme, host, port, base, model, prices[0],
                                   prices[1], weight, api_key, down)
    for tier in tiers.values():
        if not any(e.tier == tier for e in endpoints.values()):
            raise ctx.error(path, f"tier '{tier.name}' has no endpoints")
    return endpoints


def _url(ctx, value, path):
    _typed(ctx, value, str, "a URL", path)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ctx.error(path, f"expected an http:// or https:// URL, got {_show(value)}")
    if parts.query or parts.fragment or parts.username:
        raise ctx.error(path, f"the URL may not carry a query, fragment or user info, got {_show(value)}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ctx.error(path, f"invalid port in {_show(value)}") from None
    return parts.scheme, parts.hostname, port, parts.path.rstrip("/")


def _secret(ctx, value, path):
    _typed(ctx, value, str, "a ${VARIABLE} reference", path)
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
        raise ctx.error(path, f"expected a list of rules, got {_show(value)}")
    rules, names = [], set()
    catch_all = None
    for i, spec in enumerate(value):
        where = f"{path}[{i}]"
        spec = _mapping(ctx, spec, where, optional=("name", "when", "tier", "endpoint", "deny"))
        name = _typed(ctx, spec.get("name", where), str, "a string", _join(where, "name"))
        if name in names:
            raise ctx.error(_join(where, "name"), f"duplicate rule name '{name}'")
        names.add(name)
        if catch_all is not None:
            raise ctx.error(where, f"unreachable: {catch_all} matches every request")
        if "when" in spec and spec["when"] != {}:
            when = _when(ctx, spec["when"], _join(where, "when"))
        else:
            when = m.Always()
            catch_all = f"{where} ('{name}')"
        action_spec = {k: spec[k] for k in ("tier", "endpoint", "deny") if k in spec}
        rules.append(Rule(name, when, _action(ctx, action_spec, where, tiers, endpoints)))
    return rules


def _action(ctx, spec, path, tiers, endpoints):
    spec = _mapping(ctx, spec, path, optional=("tier", "endpoint", "deny"))
    given = [k for k in ("tier", "endpoint", "deny") if k in spec]
    if len(given) != 1:
        raise ctx.error(path, "expected exactly one action: tier, endpoint or deny")
    key = given[0]
    if key == "tier":
        tier = tiers.get(spec["tier"])
        if tier is None:
            raise ctx.error(_join(path, "tier"), f"unknown tier {_show(spec['tier'])}; "
                            f"defined tiers: {', '.join(tiers)}")
        return RouteAction(tier, None)
    if key == "endpoint":
        endpoint = endpoints.get(spec["endpoint"])
        if endpoint is None:
            raise ctx.error(_join(path, "endpoint"), f"unknown endpoint {_show(spec['endpoint'])}")
        return RouteAction(None, endpoint)
    where = _join(path, "deny")
    deny = _mapping(ctx, spec["deny"], where, required=("status", "code"), optional=("message",))
    status = _typed(ctx, deny["status"], int, "an HTTP status", _join(where, "status"))
    if not 400 <= status <= 499:
        raise ctx.error(_join(where, "status"), f"expected a 4xx status, got {status}")
    code = _typed(ctx, deny["code"], str, "an error code", _join(where, "code"))
    if not re.match(r"^[a-z][a-z0-9_]{0,63}$", code):
        raise ctx.error(_join(where, "code"), f"expected a snake_case error code, got {_show(code)}")
    message = _typed(ctx, deny.get("message", "request refused by policy"), str, "a string",
                     _join(where, "message"))
    return DenyAction(status, code, message)


def _when(ctx, spec, path):
    if not isinstance(spec, dict) or not spec:
        raise ctx.error(path, f"expected a mapping of conditions, got {_show(spec)}")
    items = []
    for key, value in spec.items():
        where = _join(path, key)
        if key in INT_FIELDS:
            items.append(_range(ctx, INT_FIELDS[key], value, where, integer=True))
        elif key in FLOAT_FIELDS:
            items.append(_range(ctx, FLOAT_FIELDS[key], value, where, integer=False))
        elif key in BOOL_FIELDS:
            items.append(m.FieldIs(BOOL_FIELDS[key], _typed(ctx, value, bool, "true or false", where)))
        elif key in TEXT_FIELDS:
            upper = key == "method"
            items.append(m.FieldText(TEXT_FIELDS[key], _text(ctx, value, where, upper)))
        elif key == "headers":
            if not isinstance(value, dict) or not value:
                raise ctx.error(where, f"expected a mapping of header name to match, got {_show(value)}")
            for name, want in value.items():
                text = None if want is True else _text(ctx, want, _join(where, name), False)
                items.append(m.Header(str(name).lower(), text))
        elif key in ("all", "any"):
            if not isinstance(value, list) or not value:
                raise ctx.error(where, f"expected a non-empty list of conditions, got {_show(value)}")
            inner = [_when(ctx, v, f"{where}[{i}]") for i, v in enumerate(value)]
            items.append(m.All(inner) if key == "all" else m.Any(inner))
        elif key == "not":
            items.append(m.Not(_when(ctx, value, where)))
        else:
            raise ctx.error(path, f"unknown condition '{key}'; "
                                 f"expected one of: {', '.join(WHEN_KEYS)}")
    return items[0] if len(items) == 1 else m.All(items)


def _number(text, integer):
    try:
        return int(text) if integer else float(text)
    except ValueError:
        return None


def _range(ctx, attr, value, path, integer):
    example = '"100..4000"' if integer else '">= 0.62" or "0.3..0.6"'
    kind = "an integer" if integer else "a number"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if integer and not isinstance(value, int):
            raise ctx.error(path, f"expected {kind}, got {_show(value)}")
        return m.FieldRange(attr, value, value, text=f"== {value}")
    if isinstance(value, str):
        compare = COMPARE.match(value)
        if compare:
            op, n = compare.group(1), _number(compare.group(2), integer)
            if n is not None:
                lo = n if op in (">=", ">", "==") else None
                hi = n if op in ("<=", "<", "==") else None
                return m.FieldRange(attr, lo, hi, op == ">", op == "<", text=f"{op} {n}")
        bounds = RANGE.match(value)
        if bounds and (bounds.group(1) or bounds.group(2)):
            lo = _number(bounds.group(1), integer) if bounds.group(1) else None
            hi = _number(bounds.group(2), integer) if bounds.group(2) else None
            ok = (lo is not None or not bounds.group(1)) and (hi is not None or not bounds.group(2))
            if ok and (lo is None or hi is None or lo <= hi):
                return m.FieldRange(attr, lo, hi, text=f"in {value.strip()}")
    raise ctx.error(path, f"expected a range like {example}, got {_show(value)}")


def _text(ctx, value, path, upper):
    norm = (lambda s: s.upper()) if upper else (lambda s: s)
    if isinstance(value, str):
        return m.Text(exact=[norm(value)], text=f"is {_show(value)}")
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return m.Text(exact=[norm(v) for v in value], text=f"in {_show(value)}")
    if isinstance(value, dict) and len(value) == 1:
        (kind, arg), = value.items()
        where = _join(path, kind)
        if kind in ("exact", "prefix"):
            args = [arg] if isinstance(arg, str) else arg
            if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
                raise ctx.error(where, f"expected a string or a list of strings, got {_show(arg)}")
            args = [norm(a) for a in args]
            if kind == "exact":
                return m.Text(exact=args, text=f"is {_show(arg)}")
            return m.Text(prefixes=args, text=f"starts with {_show(arg)}")
        if kind == "regex":
            _typed(ctx, arg, str, "a regular expression", where)
            try:
                re.compile(arg)
            except re.error as exc:
                raise ctx.error(where, f"invalid regular expression: {exc}") from None
            return m.Text(regex=arg, text=f"matches /{arg}/")
    raise ctx.error(path, "expected a string, a list of strings, or one of "
                    f"{{exact: ...}}, {{prefix: ...}}, {{regex: ...}}, got {_show(value)}")


def _failover(ctx, value, endpoints, path="failover"):
    if value is None:
        return (Failover("", ""),)
    spec = _mapping(ctx, value, path, optional=("default", "paths"))

    def one(v, where, route_path):
        if v == "closed":
            return Failover(route_path, "")
        if isinstance(v, dict):
            _mapping(ctx, v, where, required=("endpoint",))
            if v["endpoint"] not in endpoints:
                raise ctx.error(_join(where, "endpoint"), f"unknown endpoint {_show(v['endpoint'])}")
            return Failover(route_path, v["endpoint"])
        raise ctx.error(where, f'expected "closed" or {{endpoint: NAME}}, got {_show(v)}')

    out = [one(spec.get("default", "closed"), _join(path, "default"), "")]
    paths = spec.get("paths") or {}
    if not isinstance(paths, dict):
        raise ctx.error(_join(path, "paths"), f"expected a mapping of path to failover, got {_show(paths)}")
    for route_path, v in paths.items():
        if not isinstance(route_path, str) or not route_path.startswith("/") or '"' in route_path:
            raise ctx.error(_join(path, "paths"), f"expected an absolute path, got {_show(route_path)}")
        out.append(one(v, f"{path}.paths.{route_path}", route_path))
    return tuple(out)


DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
DURATION = re.compile(r"^(\d+)\s*(s|m|h|d)$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _tier_list(ctx, value, tiers, path):
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        raise ctx.error(path, f"expected a non-empty list of tier names, got {_show(value)}")
    for t in value:
        if t not in tiers:
            raise ctx.error(path, f"unknown tier {_show(t)}; defined tiers: {', '.join(tiers)}")
    return frozenset(value)


def _choice(ctx, value, options, path):
    if value not in options:
        raise ctx.error(path, f"expected one of {', '.join(options)}, got {_show(value)}")
    return value


def _clients(ctx, value, tiers, path="clients"):
    if value is None:
        return NO_CLIENTS
    spec = _mapping(ctx, value, path, optional=("require_key", "trusted_proxies", "tenants"))
    require = _typed(ctx, spec.get("require_key", False), bool, "true or false", _join(path, "require_key"))
    trusted = []
    for i, net in enumerate(spec.get("trusted_proxies") or []):
        try:
            trusted.append(ipaddress.ip_network(str(net), strict=False))
        except ValueError:
            raise ctx.error(f"{path}.trusted_proxies[{i}]",
                            f"expected an address or CIDR range, got {_show(net)}") from None
    by_digest = {}
    tenants = spec.get("tenants") or {}
    if not isinstance(tenants, dict):
        raise ctx.error(_join(path, "tenants"), f"expected a mapping of tenant name to tenant, got {_show(tenants)}")
    for name, t in tenants.items():
        where = f"{path}.tenants.{name}"
        t = _mapping(ctx, t, where, required=("keys",), optional=(
            "tiers", "above_allowed", "budget_usd_per_day", "when_budget_spent"))
        allowed = _tier_list(ctx, t["tiers"], tiers, _join(where, "tiers")) if "tiers" in t else None
        budget = t.get("budget_usd_per_day", 0)
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget < 0:
            raise ctx.error(_join(where, "budget_usd_per_day"), f"expected USD as a number, got {_show(budget)}")
        tenant = Tenant(str(name), allowed,
                        _choice(ctx, t.get("above_allowed", "deny"), ("deny", "downgrade"), _join(where, "above_allowed")),
                        float(budget),
                        _choice(ctx, t.get("when_budget_spent", "deny"), ("deny", "downgrade"),
                                _join(where, "when_budget_spent")))
        keys = t["keys"]
        if not isinstance(keys, list) or not keys:
            raise ctx.error(_join(where, "keys"), "expected a non-empty list of key digests")
        for i, d in enumerate(keys):
            if not isinstance(d, str) or not DIGEST.match(d):
                raise ctx.error(f"{where}.keys[{i}]", "expected a key digest like sha256:<64 hex digits> "
                                "(make one with `python -m sidecar key-digest`), never a key")
            if d in by_digest:
                raise ctx.error(f"{where}.keys[{i}]", f"this key digest already belongs to tenant "
                                f"'{by_digest[d][1].name}'")
            by_digest[d] = (d, tenant)
    return Clients(require, tuple(trusted), by_digest)


def _duration(ctx, value, path):
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = DURATION.match(str(value).strip()) if isinstance(value, str) else None
    if match and int(match.group(1)) > 0:
        return int(match.group(1)) * UNITS[match.group(2)]
    raise ctx.error(path, f'expected a duration like 60, "30s", "1m", "1h" or "1d", got {_show(value)}')


def _limits(ctx, value, tiers, path="limits"):
    if not isinstance(value, list):
        raise ctx.error(path, f"expected a list of limits, got {_show(value)}")
    out, names = [], set()
    for i, spec in enumerate(value):
        where = f"{path}[{i}]"
        spec = _mapping(ctx, spec, where, required=("name", "per"),
                        optional=("requests", "tokens", "shadow", "tiers"))
        name = _typed(ctx, spec["name"], str, "a string", _join(where, "name"))
        if not re.match(r"^[a-z][a-z0-9_-]{0,62}$", name):
            raise ctx.error(_join(where, "name"), f"limit names are lowercase letters, digits, '-' and '_', got {_show(name)}")
        if name in names:
            raise ctx.error(_join(where, "name"), f"duplicate limit name '{name}'")
        names.add(name)
        parts = spec["per"]
        if isinstance(parts, str):
            parts = [parts]
        if not isinstance(parts, list) or not parts or any(p not in KEY_PARTS for p in parts):
            raise ctx.error(_join(where, "per"), f"expected a list of: {', '.join(KEY_PARTS)}; got {_show(spec['per'])}")
        kinds = [k for k in ("requests", "tokens") if k in spec]
        if len(kinds) != 1:
            raise ctx.error(where, "expected exactly one of: requests, tokens")
        kind = kinds[0]
        r = _mapping(ctx, spec[kind], _join(where, kind), required=("rate", "per"), optional=("burst",))
        rate = _typed(ctx, r["rate"], int, "a whole number of units", _join(where, f"{kind}.rate"))
        burst = _typed(ctx, r.get("burst", rate), int, "a whole number of units", _join(where, f"{kind}.burst"))
        if rate < 1 or burst < 1:
            raise ctx.error(_join(where, kind), "rate and burst must be at least 1")
        period = _duration(ctx, r["per"], _join(where, f"{kind}.per"))
        shadow = _typed(ctx, spec.get("shadow", False), bool, "true or false", _join(where, "shadow"))
        scope = _tier_list(ctx, spec["tiers"], tiers, _join(where, "tiers")) if "tiers" in spec else None
        out.append(Limit(name, tuple(parts), kind, Rate(rate, period, burst), shadow, scope))
    return tuple(out)
