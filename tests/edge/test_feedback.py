"""Feedback from nginx's access log: which hops failed, and passive health."""

from __future__ import annotations

import pytest

from sidecar.edge.feedback import Feedback, hop_statuses
from sidecar.policy.compiled import Health


@pytest.mark.parametrize("entry,hops", [
    ({"mode": "lua", "endpoints": ["a", "b", ""], "upstream_status": "503 : 200"}, [("a", "503"), ("b", "200")]),
    ({"mode": "stock", "endpoints": ["a", "b", "c"], "upstream_status": "200 : 502 : 504 : 200"},
     [("a", "502"), ("b", "504"), ("c", "200")]),
    ({"mode": "stock", "endpoints": ["", "", ""], "upstream_status": "429"}, []),   # a denial
    ({"mode": "lua", "endpoints": ["a", "", ""], "upstream_status": ""}, []),
    ({"mode": "lua", "endpoints": ["a", "b", ""], "upstream_status": "502, 200"}, [("a", "200")]),
])
def test_hop_statuses(entry, hops):
    assert hop_statuses(entry) == hops


class Clock:
    now = 100.0

    def __call__(self):
        return self.now


def test_consecutive_failures_mark_an_endpoint_down_and_success_resets():
    clock = Clock()
    health = Health(clock)
    fb = Feedback(lambda: health, threshold=3, down_seconds=10)
    fail = b'<190>Nov 26 05:45:00 hir: {"mode":"lua","endpoints":["a","b",""],"upstream_status":"503 : 200"}'
    ok = b'<190>Nov 26 05:45:00 hir: {"mode":"lua","endpoints":["a","",""],"upstream_status":"200"}'
    fb.datagram(fail)
    fb.datagram(fail)
    fb.datagram(ok)                       # success in between: the count starts over
    fb.datagram(fail)
    fb.datagram(fail)
    assert not health.down_until
    fb.datagram(fail)
    assert "a" in health.down_until and "b" not in health.down_until
    clock.now += 10
    assert health.down_until["a"] <= clock.now
    fb.datagram(b"garbage without json")
    fb.datagram(b"<190>hir: {not json")
    assert fb.received == 6
