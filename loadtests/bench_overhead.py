"""Overhead benchmark: what the router adds over nginx alone.

    python loadtests/bench_overhead.py [--rounds 5] [--duration 4]

Starts, on loopback: a zero-latency endpoint (nginx answering a fixed chat
completion), nginx proxying straight to it ("direct"), and the router in lua
and stock mode (nginx + one sidecar process) with every policy endpoint pointed
at that same zero-latency endpoint, each once plain and once with an API key
and three limits enforced. Then runs wrk (Debian package) against the
targets, interleaved round by round, and prints medians of p50/p99 latency at 1
and 8 connections and of max requests/s, with the router's numbers as added
latency and ratios against direct. Needs nothing but the repo's setup.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sidecar.tools.stack import Stack, _tcp, wait_for  # noqa: E402

HASH = "cdd01ef066bc6cf2"
BODY = ('{"model":"auto","messages":[{"role":"system","content":"You are terse."},'
        '{"role":"user","content":"What is the capital of France? Answer in one word."}]}')
COMPLETION = ('{"id":"chatcmpl-bench","object":"chat.completion","created":0,"model":"m",'
              '"choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant",'
              '"content":"Paris"}}],"usage":{"prompt_tokens":20,"completion_tokens":1,"total_tokens":21}}')
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def direct_nginx(run: Path, echo_port: int, direct_port: int) -> subprocess.Popen:
    run.mkdir(parents=True, exist_ok=True)
    conf = run / "nginx.conf"
    conf.write_text(textwrap.dedent(f"""\
        worker_processes 2;
        pid {run}/nginx.pid;
        error_log {run}/error.log warn;
        daemon off;
        events {{ worker_connections 4096; }}
        http {{
            access_log off;
            client_body_temp_path {run}/body; proxy_temp_path {run}/proxy;
            fastcgi_temp_path {run}/fcgi; uwsgi_temp_path {run}/uwsgi; scgi_temp_path {run}/scgi;
            upstream echo {{ server 127.0.0.1:{echo_port}; keepalive 32; }}
            server {{
                listen 127.0.0.1:{echo_port};
                location / {{ default_type application/json; return 200 '{COMPLETION}'; }}
            }}
            server {{
                listen 127.0.0.1:{direct_port};
                location /v1/ {{
                    proxy_http_version 1.1;
                    proxy_set_header Connection "";
                    proxy_pass http://echo;
                }}
            }}
        }}
        """))
    proc = subprocess.Popen(["nginx", "-p", str(run), "-c", str(conf)])
    wait_for(_tcp("127.0.0.1", direct_port), "direct nginx", proc=proc)
    wait_for(_tcp("127.0.0.1", echo_port), "echo endpoint", proc=proc)
    return proc


KEY = "bench-key-not-a-secret"


def bench_policy(tmp: Path, echo_port: int, enforcement: bool) -> Path:
    """demo.yaml pointed at the zero-latency endpoint; with `enforcement`, an API
    key mapped to a tenant and three limits (none of which the load exhausts)."""
    from sidecar.access.clients import digest
    text = (ROOT / "policies" / "demo.yaml").read_text().split("\n# Who may call")[0]
    text = re.sub(r"http://127\.0\.0\.1:\d+/v1", f"http://127.0.0.1:{echo_port}/v1", text)
    if enforcement:
        text += textwrap.dedent(f"""
            clients:
              tenants:
                bench: {{keys: ["{digest(KEY)}"]}}
            limits:
              - {{name: requests, per: [tenant], requests: {{rate: 100000000, per: 1s}}}}
              - {{name: tokens, per: [tenant], tokens: {{rate: 1000000000000, per: 1s}}}}
              - {{name: per-tier, per: [tenant, tier], requests: {{rate: 100000000, per: 1s}}}}
            """)
    path = tmp / f"bench-{'limits' if enforcement else 'plain'}.yaml"
    path.write_text(text)
    return path


def wrk(port: int, connections: int, duration: float, script: Path) -> dict:
    threads = 1 if connections == 1 else 2
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency",
                          "-s", str(script), f"http://127.0.0.1:{port}/v1/chat/completions"],
                         capture_output=True, text=True, check=True).stdout
    lat = {m.group(1): float(m.group(2)) * UNITS[m.group(3)]
           for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"port {port}: {non2xx.group(1)} failed requests:\n{out}")
    return {"p50": lat["50"], "p99": lat["99"], "rps": rps}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per wrk run")
    parser.add_argument("--max-connections", type=int, default=32)
    parser.add_argument("--loads", default="c1,c8,max",
                        help="which of c1,c8,max to run (c1 alone gives more rounds per minute)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="hir-bench-"))
    script = tmp / "post.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.body = [[{BODY}]]\n'
                      f'wrk.headers["Content-Type"] = "application/json"\n'
                      f'wrk.headers["X-Constitutional-Hash"] = "{HASH}"\n'
                      f'wrk.headers["Authorization"] = "Bearer {KEY}"\n')
    echo_port, direct_port = free_port(), free_port()
    procs, stacks = [], []
    try:
        procs.append(direct_nginx(tmp / "direct", echo_port, direct_port))
        targets = {"direct": direct_port}
        for mode, enforcement in (("lua", False), ("stock", False), ("lua", True), ("stock", True)):
            name = mode + ("+limits" if enforcement else "")
            policy = bench_policy(tmp, echo_port, enforcement)
            port = free_port()
            stack = Stack(policy, tmp / name, mode=mode, listen=f"127.0.0.1:{port}")
            stack.run_dir.mkdir(parents=True)
            stacks.append(stack)
            stack.start_sidecar(0)
            stack.start_nginx()
            targets[name] = port

        loads = {name: conns for name, conns in (("c1", 1), ("c8", 8), ("max", args.max_connections))
                 if name in args.loads.split(",")}
        results = {t: {load: [] for load in loads} for t in targets}
        for name, port in targets.items():  # warm-up: keepalive pools, Lua code cache
            wrk(port, 8, 1, script)
        order = list(targets.items())
        for r in range(args.rounds):
            for load, conns in loads.items():
                # Rotate the order every round so no target always runs first or last.
                for name, port in order[r % len(order):] + order[:r % len(order)]:
                    results[name][load].append(wrk(port, conns, args.duration, script))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        report(results, args)
    finally:
        for stack in stacks:
            stack.stop()
        for proc in procs:
            proc.terminate()
            proc.wait()
    return 0


def median(runs: list[dict] | None, key: str) -> float:
    return statistics.median(run[key] for run in runs) if runs else float("nan")


def report(results: dict, args) -> None:
    print(f"\nmedians of {args.rounds} interleaved rounds, {args.duration:g}s each "
          f"(latency in ms; added = mode - direct)")
    print(f"{'target':13} {'c1 p50':>8} {'c1 p99':>8} {'c8 p50':>8} {'c8 p99':>8} "
          f"{'max rps':>9} {'rps/direct':>10}")
    direct = results["direct"]
    for name, runs in results.items():
        print(f"{name:13} {median(runs.get('c1'), 'p50'):8.3f} {median(runs.get('c1'), 'p99'):8.3f} "
              f"{median(runs.get('c8'), 'p50'):8.3f} {median(runs.get('c8'), 'p99'):8.3f} "
              f"{median(runs.get('max'), 'rps'):9.0f} "
              f"{median(runs.get('max'), 'rps') / median(direct.get('max'), 'rps'):10.2f}")
    for name in ("lua", "stock", "lua+limits", "stock+limits"):
        runs = results[name]
        print(f"added by {name:12}: c1 p50 +{median(runs.get('c1'), 'p50') - median(direct.get('c1'), 'p50'):.3f} ms, "
              f"c1 p99 +{median(runs.get('c1'), 'p99') - median(direct.get('c1'), 'p99'):.3f} ms, "
              f"c8 p50 +{median(runs.get('c8'), 'p50') - median(direct.get('c8'), 'p50'):.3f} ms")
    for mode in ("lua", "stock"):
        base = median(results[mode].get("c1"), "p50") - median(direct.get("c1"), "p50")
        full = median(results[mode + "+limits"].get("c1"), "p50") - median(direct.get("c1"), "p50")
        print(f"{mode}: hash + key + 3 limits change the added p50 by {100 * (full / base - 1):+.0f}%")


if __name__ == "__main__":
    raise SystemExit(main())
