"""The benchmarks' own parts whose answers are known: bodies that never repeat,
the wrk script that sends them, the floor targets' replayed decisions, and the
live profile's sum by stage."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadtests import prompt_mix  # noqa: E402
from loadtests.bench_overhead import FLOOR, wrk_script  # noqa: E402
from sidecar.edge import wire  # noqa: E402
from loadtests.profile_decision import live_breakdown  # noqa: E402


def prompt_of(body: bytes) -> str:
    return orjson.loads(body)["messages"][-1]["content"]


def test_short_bodies_never_repeat_and_are_chat_requests():
    bodies = prompt_mix.short_bodies(5000)
    assert len(set(bodies)) == len(bodies)
    assert all(orjson.loads(b)["model"] == "auto" for b in bodies)
    assert max(len(prompt_of(b)) for b in bodies) < 400
    assert prompt_mix.short_bodies(50, seed=3) == prompt_mix.short_bodies(50, seed=3)


class Transport:
    def __init__(self):
        self.out = b""

    def write(self, data):
        self.out += data

    def close(self):
        pass


def test_the_floor_decides_once_per_path_and_replays_only_allows(monkeypatch):
    monkeypatch.setattr(wire, "HttpProtocol", wire.HttpProtocol)  # restored after the test
    exec(FLOOR, {})
    calls = []

    def decide(method, target, headers, body):
        calls.append(body)
        status = 403 if body == b"deny" else 200
        return status, {"X-Body": body.decode()}, b""

    def ask(target, body):
        transport = Transport()
        proto = wire.HttpProtocol(decide, 1024)
        proto.connection_made(transport)
        proto.data_received(f"POST {target} HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n"
                            .encode() + body)
        return transport.out

    assert b"403" in ask("/a", b"deny") and b"403" in ask("/a", b"deny")
    first = ask("/a", b"one")
    assert ask("/a", b"two") == first and b"X-Body: one" in first
    assert b"X-Body: three" in ask("/b", b"three")
    assert calls == [b"deny", b"deny", b"one", b"three"]


def test_mixed_bodies_follow_the_size_mix_and_never_repeat():
    bodies = prompt_mix.mixed_bodies(5000)
    assert len(set(bodies)) == len(bodies)
    sizes = [len(prompt_of(b)) for b in bodies]
    for share, size in prompt_mix.MIX:
        # Each class is its document's size plus a short question after it.
        count = sum(size <= s < size + 400 for s in sizes)
        assert count / len(sizes) == pytest.approx(share, abs=0.02), (size, count)


def test_the_unique_wrk_script_reads_one_request_body_per_line(tmp_path):
    script = wrk_script(tmp_path, "unique").read_text()
    pool = (tmp_path / "unique.bodies").read_bytes().splitlines()
    assert f'io.lines("{tmp_path / "unique.bodies"}")' in script
    assert len(pool) == len(set(pool)) > 4096  # more than the feature cache holds
    assert all(orjson.loads(line)["messages"] for line in pool[:500])
    with pytest.raises(SystemExit, match="unknown --bodies kind"):
        wrk_script(tmp_path, "sometimes")


def test_live_samples_are_summed_by_their_outermost_stage(tmp_path):
    raw = tmp_path / "spy.raw"
    raw.write_text(
        "run (uvloop);data_received (sidecar/edge/wire.py:70);decide (sidecar/edge/app.py:97);"
        "extract (sidecar/edge/features.py:116);assess (sidecar/complexity/complexity.py:190) 6\n"
        # Feedback read in the drain after an answer is feedback, not the wire.
        "run (uvloop);data_received (sidecar/edge/wire.py:80);drain (sidecar/edge/feedback.py:227);"
        "settle (sidecar/edge/settlement.py:60) 3\n"
        "run (uvloop);data_received (sidecar/edge/wire.py:75) 1\n"
        "run (uvloop) 2\n")
    shares = dict(live_breakdown(raw))
    assert shares == {"complexity signal": 0.5,
                      "feedback log (a datagram per request: health, outcomes, settlement)": 0.25,
                      "wire: write to the socket + loop glue": 1 / 12,
                      "event loop: uvloop, syscalls, idle callbacks": 2 / 12}
