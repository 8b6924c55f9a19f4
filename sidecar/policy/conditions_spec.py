"""Rule conditions (`when:`) in the policy → compiled matchers (sidecar.policy.matchers)."""

from __future__ import annotations

import re

from sidecar.policy import matchers as m
from sidecar.policy.strict_yaml import join, show, typed

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


def when(ctx, spec, path):
    if not isinstance(spec, dict) or not spec:
        raise ctx.error(path, f"expected a mapping of conditions, got {show(spec)}")
    items = []
    for key, value in spec.items():
        where = join(path, key)
        if key in INT_FIELDS:
            items.append(_range(ctx, INT_FIELDS[key], value, where, integer=True))
        elif key in FLOAT_FIELDS:
            items.append(_range(ctx, FLOAT_FIELDS[key], value, where, integer=False))
        elif key in BOOL_FIELDS:
            items.append(m.FieldIs(BOOL_FIELDS[key], typed(ctx, value, bool, "true or false", where)))
        elif key in TEXT_FIELDS:
            upper = key == "method"
            items.append(m.FieldText(TEXT_FIELDS[key], _text(ctx, value, where, upper)))
        elif key == "headers":
            if not isinstance(value, dict) or not value:
                raise ctx.error(where, f"expected a mapping of header name to match, got {show(value)}")
            for name, want in value.items():
                text = None if want is True else _text(ctx, want, join(where, name), False)
                items.append(m.Header(str(name).lower(), text))
        elif key in ("all", "any"):
            if not isinstance(value, list) or not value:
                raise ctx.error(where, f"expected a non-empty list of conditions, got {show(value)}")
            inner = [when(ctx, v, f"{where}[{i}]") for i, v in enumerate(value)]
            items.append(m.All(inner) if key == "all" else m.Any(inner))
        elif key == "not":
            items.append(m.Not(when(ctx, value, where)))
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
            raise ctx.error(path, f"expected {kind}, got {show(value)}")
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
    raise ctx.error(path, f"expected a range like {example}, got {show(value)}")


def _text(ctx, value, path, upper):
    norm = (lambda s: s.upper()) if upper else (lambda s: s)
    if isinstance(value, str):
        return m.Text(exact=[norm(value)], text=f"is {show(value)}")
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return m.Text(exact=[norm(v) for v in value], text=f"in {show(value)}")
    if isinstance(value, dict) and len(value) == 1:
        (kind, arg), = value.items()
        where = join(path, kind)
        if kind in ("exact", "prefix"):
            args = [arg] if isinstance(arg, str) else arg
            if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
                raise ctx.error(where, f"expected a string or a list of strings, got {show(arg)}")
            args = [norm(a) for a in args]
            if kind == "exact":
                return m.Text(exact=args, text=f"is {show(arg)}")
            return m.Text(prefixes=args, text=f"starts with {show(arg)}")
        if kind == "regex":
            typed(ctx, arg, str, "a regular expression", where)
            try:
                re.compile(arg)
            except re.error as exc:
                raise ctx.error(where, f"invalid regular expression: {exc}") from None
            return m.Text(regex=arg, text=f"matches /{arg}/")
    raise ctx.error(path, "expected a string, a list of strings, or one of "
                    f"{{exact: ...}}, {{prefix: ...}}, {{regex: ...}}, got {show(value)}")
