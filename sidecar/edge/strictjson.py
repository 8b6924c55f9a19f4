"""Strict JSON at the edge: what orjson accepts, minus duplicate keys, integers
beyond 64 bits, nesting deeper than MAX_DEPTH and absurd key counts.

orjson already refuses NaN/Infinity, invalid UTF-8 and lone surrogates; it keeps
the last of duplicate keys and turns huge integers into floats, so those are
checked here. One walk over the parsed value counts keys, depth and the colons
inside strings. Outside strings a colon only ever follows a key, so the raw
bytes hold (colons in strings) + (keys, duplicates included) colons. A raw
colon inside a string decodes to itself, and duplicates make orjson drop keys
and values, so when `raw.count(":") - colons in the parsed strings` equals
the parsed key count, no key was dropped: there were no duplicates, whatever
the whitespace or escapes around them. The one way a parsed colon does not
come from a raw one is the escape \u003a; a body with it, or one where the
counts differ, goes to the slow exact check with the standard library.
"""

from __future__ import annotations

import json
import re

import orjson

from sidecar.denials import Denied

MAX_DEPTH = 32
MAX_KEYS = 10_000
# Objects and arrays, whatever their keys: building and walking one costs ~0.5 µs,
# so 2 MB of `[[[]]]` (a million arrays, no key among them) took ~0.5 s of the
# sidecar's one core to refuse or route. 2,048 messages of a few content blocks
# each, or 128 tools with their schemas, stay far below.
MAX_CONTAINERS = 50_000
INT64 = 2 ** 63
# One regex scan for both spellings: ~3× faster than two `in` scans of a 200 KB
# body (64 against 211 µs), whose substring search is slow on prose.
_ESCAPED_COLON = re.compile(rb"\\u003[aA]").search


def _out_of_range(item) -> bool:
    # orjson returns integers up to 2**64 - 1 as int and larger ones as float.
    kind = type(item)
    if kind is int:
        return not -INT64 <= item < INT64
    return kind is float and abs(item) >= INT64


# Every byte but the colons and opening brackets: one pass over a large body keeps
# the few bytes that the checks below count (as fast as counting one of them).
_NOT_COUNTED = bytes(b for b in range(256) if b not in b":{[")


def _check_containers(raw: bytes, brackets: int) -> None:
    """Refuse, before parsing, a document with more objects and arrays than
    MAX_CONTAINERS. Only where its opening brackets are that many (code pasted into
    a prompt has them inside strings) are those outside strings counted: with every
    escaped backslash and then every escaped quote removed, each quote left opens
    or closes a string, so every other piece between quotes is outside one."""
    if brackets <= MAX_CONTAINERS:
        return
    plain = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(plain.split(b'"')[0::2])
    if outside.count(b"{") + outside.count(b"[") > MAX_CONTAINERS:
        raise Denied("too_many_containers", f"the body has more than {MAX_CONTAINERS} JSON objects "
                     "and arrays")


def _numbers(value: list, stats: list) -> bool:
    """A list of numbers only (token ids, an embedding), checked at C speed:
    whether it was, counting it as possibly out of range when it may be."""
    try:
        low, high = min(value), max(value)
        if not (type(low) in (int, float) and type(high) in (int, float)):
            return False
    except TypeError:   # containers, strings or null among them
        return False
    if not -INT64 < low or not high < INT64:
        stats[1] += 1   # the exact check decides (a float at -2**63 may be a rounded -2**63 - 1)
    return True


def _strings(value: list, stats: list) -> bool:
    """A list of strings only, its colons counted at C speed: whether it was."""
    try:
        stats[2] += "".join(value).count(":")
    except TypeError:
        return False
    return True


def _walk(value, depth: int, stats: list) -> None:
    # stats: [keys, numbers that may be out-of-range integers, colons in strings,
    #         values inside containers]. (How many containers was settled before the
    # parse: `_check_containers`.)
    if depth > MAX_DEPTH:
        raise Denied("nesting_too_deep", f"JSON nesting is deeper than {MAX_DEPTH} levels")
    stats[3] += len(value)
    if type(value) is dict:
        stats[0] += len(value)
        if stats[0] > MAX_KEYS:
            raise Denied("too_many_keys", f"the body has more than {MAX_KEYS} object keys")
        for key in value:
            if ":" in key:
                stats[2] += key.count(":")
        items = value.values()
    else:
        items = value
        first = type(value[0]) if value else None
        if (first is int or first is float) and _numbers(value, stats):
            return
        if first is str and _strings(value, stats):
            return
    for item in items:
        kind = type(item)
        if kind is str:
            if ":" in item:
                stats[2] += item.count(":")
        elif kind is dict or kind is list:
            _walk(item, depth + 1, stats)
        elif _out_of_range(item):
            stats[1] += 1


def _pairs(pairs):
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise Denied("duplicate_key", f"duplicate key {key!r} in a JSON object")
        seen.add(key)
    return dict(pairs)


def _int(text: str) -> int:
    value = int(text)
    if not -INT64 <= value < INT64:
        raise Denied("integer_out_of_range", f"integer {text[:24]}{'…' if len(text) > 24 else ''} "
                     "does not fit in 64 bits")
    return value


def _no_constant(name: str):
    raise Denied("invalid_json", f"{name} is not valid JSON")


def loads(raw: bytes):
    """Parse `raw` strictly; raise Denied with a specific reason otherwise."""
    return loads_counted(raw)[0]


def loads_counted(raw: bytes) -> tuple[object, int]:
    """`loads`, and how many values the document holds below its top (what its
    parsed form costs in memory grows with that, up to ~25x the bytes of `[{},{}]`)."""
    if len(raw) > 2 * MAX_CONTAINERS:   # a container takes two bytes: a smaller body has few enough
        counted = raw.translate(None, _NOT_COUNTED)
        _check_containers(raw, counted.count(b"{") + counted.count(b"["))
    else:
        counted = raw
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:   # orjson calls bad bytes "str is not valid UTF-8: surrogates not allowed"
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise Denied("invalid_json", f"request body is not UTF-8 (byte {bad.start} is not part of "
                         "a UTF-8 character); JSON must be sent as UTF-8") from None
        raise Denied("invalid_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(value, (dict, list)):
        return value, 0
    stats = [0, 0, 0, 0]
    _walk(value, 1, stats)
    proven_unique = (counted.count(b":") - stats[2] == stats[0]
                     and _ESCAPED_COLON(raw) is None)
    if proven_unique and not stats[1]:
        return value, stats[3]
    # Exact check: duplicates and integer width, with the standard library's parser.
    return json.loads(raw, object_pairs_hook=_pairs, parse_int=_int, parse_constant=_no_constant), stats[3]
