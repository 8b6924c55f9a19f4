"""Throughput drift: does one sidecar process slow down over a long run?

    python loadtests/bench_drift.py [--minutes 30] [--window 60] [--mode stock]

One router (demo rules + constitutional hash + API key + three limits, every
endpoint pointed at a zero-latency nginx endpoint) under wrk at 8 connections,
a new short prompt on every request, in back-to-back windows. After each window
nginx alone gets a short run of its own, so a change of the box's speed (it is
shared) shows as a change of both and the router/direct ratio stays put, while
a real drift moves the ratio. Each window's row also carries the sidecar's own
process_* and python_gc_* series and its mean time per decision (from
router_decision_seconds), i.e. the usual suspects: memory growth, collections,
a decision that gets slower (a table that grows) rather than a box that does,
and the share of decisions whose feedback datagram never arrived.

It also splits the CPU each request costs, from /proc: the sidecar, the
router's nginx (client, subrequest or socket round trip, proxying) and nginx
alone proxying (the direct run's CPU less the zero-latency endpoint's share), so
the router's nginx side is `router nginx - nginx alone`.

`--profile FILE`: py-spy (pip install py-spy; not a dependency) samples the
sidecar through the first window, and the samples are summed by stage
(loadtests/profile_decision.py: LIVE_STAGES).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtests.profile_decision import live_breakdown  # noqa: E402
from loadtests.bench_overhead import (bench_policy, cpu_seconds, direct_nginx, free_port,  # noqa: E402
                                      wrk, wrk_script)
from sidecar.tools.stack import Stack  # noqa: E402

# Installed beside this Python (pip install py-spy) or on PATH.
PY_SPY = next((str(p) for p in [Path(sys.executable).with_name("py-spy")] if p.exists()), "py-spy")
SERIES = {
    "rss_mb": r'^process_resident_memory_bytes ([\d.e+]+)$',
    "gc0": r'^python_gc_collections_total\{generation="0"\} ([\d.e+]+)$',
    "gc2": r'^python_gc_collections_total\{generation="2"\} ([\d.e+]+)$',
    "decisions": r'^router_decision_seconds_count ([\d.e+]+)$',
    "decide_s": r'^router_decision_seconds_sum ([\d.e+]+)$',
    "feedback": r'^router_feedback_datagrams_total\{result="ok"\} ([\d.e+]+)$',
}


def workers(master: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()]


def scrape(stack: Stack) -> dict:
    text = stack.sidecar_get("/metrics").decode()
    found = {name: re.search(pattern, text, re.M) for name, pattern in SERIES.items()}
    sample = {name: float(m.group(1)) if m else float("nan") for name, m in found.items()}
    sample["rss_mb"] /= 2 ** 20
    return sample


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--window", type=float, default=60, help="seconds of router load per window")
    parser.add_argument("--control", type=float, default=5, help="seconds of nginx alone per window")
    parser.add_argument("--mode", default="stock", choices=("stock", "lua"))
    parser.add_argument("--bodies", default="unique", choices=("repeated", "unique", "mix"))
    parser.add_argument("--profile", type=Path, help="py-spy the sidecar in window 1 into FILE")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="hir-drift-"))
    script = wrk_script(tmp, args.bodies)
    echo_port, direct_port, port = free_port(), free_port(), free_port()
    direct = direct_nginx(tmp / "direct", echo_port, direct_port)
    stack = Stack(bench_policy(tmp, echo_port, True), tmp / "router", mode=args.mode,
                  listen=f"127.0.0.1:{port}")
    stack.run_dir.mkdir(parents=True)
    try:
        stack.start_sidecar(0)
        stack.start_nginx()
        wrk(port, 8, 2, script)  # warm-up
        windows = max(1, round(args.minutes * 60 / (args.window + args.control)))
        rows, before, profile = [], scrape(stack), None
        print("decide: µs per decision (router_decision_seconds); CPU µs per request of the "
              "sidecar, the router's nginx and nginx alone proxying; lost %: decisions whose "
              "feedback datagram never arrived; RSS and collections: the sidecar's")
        print(f"{'window':>6} {'router rps':>10} {'direct rps':>10} {'ratio':>6} {'c8 p99':>7} "
              f"{'decide':>9} {'sidecar':>7} {'nginx':>7} {'alone':>7} {'lost %':>6} {'RSS MB':>7} "
              f"{'gc0':>7} {'gc2':>4}")
        sidecar_pid = stack.procs["sidecar-0"].pid
        router_nginx, direct_nginx_pids = workers(stack.procs["nginx"].pid), workers(direct.pid)
        for w in range(windows):
            cpu = [cpu_seconds([sidecar_pid]), cpu_seconds(router_nginx),
                   cpu_seconds(direct_nginx_pids)]
            spy = None
            if args.profile and w == 0:
                spy = subprocess.Popen([PY_SPY, "record", "--pid", str(sidecar_pid), "--rate", "500",
                                        "--duration", f"{max(1, int(args.window) - 1)}",
                                        "--format", "raw", "--output", str(args.profile)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            routed = wrk(port, 8, args.window, script)
            if spy is not None and spy.wait() == 0:
                profile = live_breakdown(args.profile)
            mid = cpu_seconds(direct_nginx_pids)
            alone = wrk(direct_port, 8, args.control, script)
            now = scrape(stack)
            served, proxied = routed["rps"] * args.window, alone["rps"] * args.control
            echo_us = 1e6 * (mid - cpu[2]) / served  # the endpoint's share of each request
            row = {"rps": routed["rps"], "direct": alone["rps"], "p99": routed["p99"], **now,
                   "ratio": routed["rps"] / alone["rps"],
                   "decide_us": 1e6 * (now["decide_s"] - before["decide_s"])
                   / max(1.0, now["decisions"] - before["decisions"]),
                   # Decisions whose feedback datagram never arrived (nginx dropped it).
                   "lost_pct": 100 * (1 - (now["feedback"] - before["feedback"])
                                      / max(1.0, now["decisions"] - before["decisions"])),
                   "sidecar_cpu_us": 1e6 * (cpu_seconds([sidecar_pid]) - cpu[0]) / served,
                   "nginx_cpu_us": 1e6 * (cpu_seconds(router_nginx) - cpu[1]) / served,
                   "alone_cpu_us": 1e6 * (cpu_seconds(direct_nginx_pids) - mid) / proxied - echo_us}
            rows.append(row)
            before = now
            print(f"{w + 1:6} {row['rps']:10.0f} {row['direct']:10.0f} {row['ratio']:6.3f} "
                  f"{row['p99']:7.2f} {row['decide_us']:9.1f} {row['sidecar_cpu_us']:7.0f} "
                  f"{row['nginx_cpu_us']:7.0f} {row['alone_cpu_us']:7.0f} {row['lost_pct']:6.2f} "
                  f"{row['rss_mb']:7.1f} "
                  f"{row['gc0']:7.0f} {row['gc2']:4.0f}", flush=True)
        third = max(1, len(rows) // 3)
        for key, label in (("rps", "router req/s"), ("ratio", "router/direct"),
                           ("decide_us", "µs per decision"),
                           ("sidecar_cpu_us", "sidecar CPU µs per request"),
                           ("nginx_cpu_us", "router's nginx CPU µs per request"),
                           ("alone_cpu_us", "nginx alone CPU µs per request (proxying)"),
                           ("lost_pct", "feedback lost %")):
            first = statistics.median(r[key] for r in rows[:third])
            last = statistics.median(r[key] for r in rows[-third:])
            change = f" ({100 * (last / first - 1):+.1f}%)" if first else ""
            print(f"{label}: first third median {first:.3f}, last third {last:.3f}{change}")
        print(f"RSS {rows[0]['rss_mb']:.1f} → {rows[-1]['rss_mb']:.1f} MB")
        if profile:
            print(f"\nwhere the sidecar's time went in window 1 (py-spy, {args.profile}):")
            for stage, share in profile:
                print(f"  {100 * share:5.1f}%  {stage}")
    finally:
        stack.stop()
        direct.terminate()
        direct.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
