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
