"""`policy diff`'s account of keys that change no rule but change what a request costs."""

from __future__ import annotations

import pytest

from sidecar.tools.policy_diff import structure


@pytest.mark.parametrize("key,old,new", [
    ("response_cache", None, {"ttl": "10m"}),
    ("response_cache", {"ttl": "5m"}, {"ttl": "10m"}),
    ("shadow", {"endpoint": "a", "share": 0.05}, None),
])
def test_a_changed_top_level_key_is_named(key, old, new):
    a, b = ({key: v} if v is not None else {} for v in (old, new))
    assert [line for line in structure(a, b) if line.startswith(f"{key}:")] == [f"{key}: {old!r} -> {new!r}"]
    assert structure(a, a) == []
