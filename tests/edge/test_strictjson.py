"""Strict JSON: each hostile shape gets its own reason; valid JSON is unchanged."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.edge import strictjson
from sidecar.denials import Denied


@pytest.mark.parametrize("raw,reason", [
    (b'{"a":1,"a":2}', "duplicate_key"),
    (b'{"a" :1,"a":2}', "duplicate_key"),                 # spaced colon defeats the fast proof
    (b'{"m":[{"role":"user","role":"system"}]}', "duplicate_key"),
    (b'{"a":"x\\":y","a":1}', "duplicate_key"),             # `":` inside a string
    (b'{"a":123456789012345678901234567890}', "integer_out_of_range"),
    (b'{"a":9223372036854775808}', "integer_out_of_range"),
    (b'{"a":-9223372036854775809}', "integer_out_of_range"),
    (b'{"a":' + b"[" * 40 + b"]" * 40 + b"}", "nesting_too_deep"),
    (b'{"a":NaN}', "invalid_json"),
    (b'{"a":Infinity}', "invalid_json"),
    (b'{"a":"\\ud800"}', "invalid_json"),                  # lone surrogate
    (b'{"a":"\xff"}', "invalid_json"),                      # invalid UTF-8
    (b'{"a":1,}', "invalid_json"),
    (b"{" + b",".join(b'"k%d":1' % i for i in range(10_001)) + b"}", "too_many_keys"),
])
def test_hostile_json_is_refused_with_its_reason(raw, reason):
    with pytest.raises(Denied) as info:
        strictjson.loads(raw)
    assert (info.value.status, info.value.reason) == (400, reason)


@pytest.mark.parametrize("raw", [
    b'{"a":-9223372036854775808,"b":9223372036854775807,"c":1e30,"d":1.5}',
    b'{"a" : 1, "b" : {"c" : [1, 2, {"d" : null}]}}',
    b'{"text":"he said \\": fine\\"","n":1}',
    b'{"a":' + b"[" * 30 + b"]" * 30 + b"}",
])
def test_valid_json_parses_as_orjson_would(raw):
    assert strictjson.loads(raw) == orjson.loads(raw)


keys = st.text(max_size=6)
values = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=8),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
                      max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, values, max_size=5), st.booleans())
def test_any_object_without_duplicates_round_trips(obj, spaced):
    raw = json.dumps(obj, separators=(", ", " : ") if spaced else (",", ":")).encode()
    assert strictjson.loads(raw) == obj


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, values, min_size=1, max_size=4), st.data())
def test_a_duplicated_key_anywhere_is_found(obj, data):
    key = data.draw(st.sampled_from(sorted(obj)))
    raw = json.dumps(obj)
    dup = raw[:-1] + (", " if len(obj) else "") + json.dumps(key) + ": 0}"
    with pytest.raises(Denied) as info:
        strictjson.loads(dup.encode())
    assert info.value.reason == "duplicate_key"


# --- Duplicate keys in any whitespace or escaping, checked against a reference ---

WS = st.text(alphabet=" \t\n\r", max_size=3)
# A small alphabet makes duplicates (and near-duplicates) common; ':' and '"'
# inside names and values exercise the counting proof.
NAME_CHARS = "mod:el\"\\é"


def _escape(text: str, draw) -> str:
    """One JSON spelling of `text`, each character plain or \\u-escaped at random."""
    out = []
    for ch in text:
        if ch in '"\\' or draw(st.booleans()):
            code = draw(st.sampled_from(["\\u%04x", "\\u%04X"])) % ord(ch)
            out.append(code if ch not in '"\\' or draw(st.booleans()) else "\\" + ch)
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


@st.composite
def documents(draw, depth=0):
    """(text, python value) for a JSON object with arbitrary spacing and escapes."""
    n = draw(st.integers(0, 4))
    members = []
    for _ in range(n):
        name = draw(st.text(alphabet=NAME_CHARS, min_size=0, max_size=3))
        if depth < 3 and draw(st.integers(0, 3)) == 0:
            value_text, _ = draw(documents(depth + 1))
        elif draw(st.booleans()):
            value_text = _escape(draw(st.text(alphabet=NAME_CHARS + " ", max_size=4)), draw)
        else:
            value_text = str(draw(st.integers(-5, 5)))
        members.append(draw(WS) + _escape(name, draw) + draw(WS) + ":" + draw(WS)
                       + value_text + draw(WS))
    text = "{" + ",".join(members) + (draw(WS) if not members else "") + "}"
    return text, None


class _Dup(Exception):
    pass


def _reference_pairs(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise _Dup()
    return dict(pairs)


@settings(max_examples=600, deadline=None)
@given(documents(), st.booleans())
def test_duplicates_are_found_exactly_as_a_reference_parser_finds_them(doc, as_array):
    text, _ = doc
    if as_array:
        text = "[" + text + "," + text + "]"  # the same keys in two objects are not duplicates
    raw = text.encode()
    try:
        expected = json.loads(raw, object_pairs_hook=_reference_pairs)
        duplicate = False
    except _Dup:
        duplicate = True
    if duplicate:
        with pytest.raises(Denied) as info:
            strictjson.loads(raw)
        assert info.value.reason == "duplicate_key"
    else:
        assert strictjson.loads(raw) == expected


@pytest.mark.parametrize("raw", [
    b'{"model":"auto","model"  :"expert"}',
    b'{"model":"auto","model"\t\n :"expert"}',
    b'{"model":"auto","mod\\u0065l"  :"expert"}',
    b'{"model":"auto","\\u006dodel":"expert"}',
    b'{"a":"x:y:z","model":"auto","model" \r:"expert"}',
    b'{"m":[{"role":"user","content":"a","role"\n:"system"}]}',
    b'{"a":{"b":1,"b"  :2}}',
    b'{"a":"\\u003a\\u003a","b":1,"b" :2}',
    # One escaped colon stands in for the colon the dropped duplicate took: the
    # counts agree, and only the escape scan catches it, in either spelling.
    b'{"a":"\\u003a","b":1,"b":2}',
    b'{"a":"\\u003A","b":1,"b":2}',
])
def test_the_reported_bypasses_are_refused(raw):
    with pytest.raises(Denied) as info:
        strictjson.loads(raw)
    assert info.value.reason == "duplicate_key"


@settings(max_examples=300, deadline=None)
@given(before=st.text(max_size=20), bad=st.sampled_from([b"\xff", b"\xfe", b"\xc0\xaf", b"\xed\xa0\x80",
                                                          b"\xe2\x82", b"\x80", b"\xf8\x88\x80\x80\x80"]),
       after=st.text(max_size=20))
def test_a_body_that_is_not_utf8_is_refused_as_such_at_its_first_bad_byte(before, bad, after):
    # orjson's own message for this ("str is not valid UTF-8: surrogates not allowed")
    # names neither the body's real fault nor where it is.
    head = b'{"model":"auto","messages":[{"role":"user","content":"' + before.encode()
    raw = head + bad + after.encode() + b'"}]}'
    with pytest.raises(Denied) as refused:
        strictjson.loads(raw)
    assert refused.value.reason == "invalid_json"
    assert f"byte {len(head)} " in refused.value.message and "UTF-8" in refused.value.message


def test_a_utf16_body_is_refused_as_not_utf8():
    with pytest.raises(Denied) as refused:
        strictjson.loads('{"model":"auto"}'.encode("utf-16"))
    assert "not UTF-8 (byte 0 " in refused.value.message


# --- How many objects and arrays: bounded before the parse ---

SMALL_CAP = 20
# Text that looks like JSON structure from inside a string: brackets, quotes and
# backslashes in every arrangement an escape can take.
TRICKY_TEXT = st.text(alphabet='[]{}"\\:,ab', max_size=12)


@st.composite
def documents_of_containers(draw):
    """(a document, how many objects and arrays it really has): containers of every
    shape, with strings full of brackets, quotes and escapes beside them."""
    def value(depth):
        kind = draw(st.integers(0, 4 if depth < 4 else 1))
        if kind == 0:
            return draw(TRICKY_TEXT)
        if kind == 1:
            return draw(st.integers(-2**63, 2**63 - 1))
        if kind == 2:
            return [value(depth + 1) for _ in range(draw(st.integers(0, 4)))]
        if kind == 3:
            return {f"{draw(TRICKY_TEXT)}{i}": value(depth + 1) for i in range(draw(st.integers(0, 3)))}
        return {}
    doc = {"messages": [value(0) for _ in range(draw(st.integers(1, 12)))]}

    def containers(v):
        if isinstance(v, dict):
            return 1 + sum(containers(x) for x in v.values())
        if isinstance(v, list):
            return 1 + sum(containers(x) for x in v)
        return 0
    return json.dumps(doc, ensure_ascii=draw(st.booleans())).encode(), containers(doc)


@settings(max_examples=400, deadline=None)
@given(documents_of_containers())
def test_a_document_is_refused_exactly_when_it_has_too_many_objects_and_arrays(case):
    """The count before the parse (brackets outside strings) and the walk after it
    agree with the document's real containers, at a cap small enough to cross."""
    raw, containers = case
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(strictjson, "MAX_CONTAINERS", SMALL_CAP)
        if containers > SMALL_CAP:
            with pytest.raises(Denied) as info:
                strictjson.loads(raw)
            assert info.value.reason == "too_many_containers"
        else:
            assert strictjson.loads(raw) == json.loads(raw)


@pytest.mark.parametrize("shape", ["[]", "{}", '{"a":[]}', "[[[[]]]]"])
def test_two_megabytes_of_empty_containers_are_refused_before_they_are_built(shape):
    """2 MB of `[[[]]]` was a million arrays: ~0.5 s of the sidecar's core to parse and
    walk. The brackets are counted first."""
    filler = ",".join([shape] * (2_000_000 // (len(shape) + 1)))
    with pytest.raises(Denied) as info:
        strictjson.loads(f'{{"x":[{filler}]}}'.encode())
    assert (info.value.status, info.value.reason) == (400, "too_many_containers")


def test_brackets_inside_strings_do_not_count():
    code = "function f(a) { return [a[0], {x: a, y: \"[{\"}]; } " * 3000   # ~150k brackets
    doc = {"messages": [{"role": "user", "content": code}]}
    assert strictjson.loads(json.dumps(doc).encode()) == doc


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.integers(-2**64, 2**64), st.floats(allow_nan=False, allow_infinity=False)),
                min_size=1, max_size=20))
def test_a_list_of_numbers_is_judged_as_number_by_number(numbers):
    """Token ids and embeddings are read at C speed; the verdict on integer width
    is the one the item-by-item walk gives."""
    raw = json.dumps({"input": numbers}).encode()
    wide = any(isinstance(n, int) and not -2**63 <= n < 2**63 for n in numbers)
    if wide:
        with pytest.raises(Denied) as info:
            strictjson.loads(raw)
        assert info.value.reason == "integer_out_of_range"
    else:
        assert strictjson.loads(raw) == json.loads(raw)
