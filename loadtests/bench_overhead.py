"""Overhead benchmark: what the router adds over nginx alone.

    python loadtests/bench_overhead.py [--rounds 5] [--duration 4]

Starts, on loopback: a zero-latency endpoint (nginx answering a fixed chat
completion), nginx proxying straight to it ("direct"), and the router in lua
and stock mode (nginx + one sidecar process) with every policy endpoint pointed
at that same zero-latency endpoint, each once plain and once with an API key
and three limits enforced. Then runs wrk (Debian package) against the
targets, interleaved round by round, and prints medians of p50/p99 latency at 1
and 8 connections, of max requests/s and of the sidecar's CPU time per request
at that load, with the router's numbers as added latency and ratios against
direct. Needs nothing but the repo's setup.

`--bodies` picks what the requests carry, each reported as its own table:
`repeated` is one constant body (after the first request every decision is a
feature-cache hit), `unique` a different short chat prompt on every request,
`mix` different prompts in a realistic size mix (loadtests/prompt_mix.py: 70%
short, 20% ~1 KB, 8% ~8 KB, 2% ~100 KB). Unique bodies come from a pool far
larger than the feature cache, cycled, so every decision is a miss.

`--floor` adds "lua:floor" and "stock:floor": the same router, but the sidecar
answers every decision with the first answer it gave on that path (a lookup;
see FLOOR below). What is left is the floor any decision sits on: nginx's side
of the round trip, the socket, the wire protocol, the event loop and the
feedback log. The gap between a mode and its floor is what the decision itself
costs.
"""

from __future__ import annotations

import argparse
import os
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

from loadtests import prompt_mix  # noqa: E402
from sidecar.tools.nginx_render import LUA_MODULES  # noqa: E402
from sidecar.tools.stack import Stack, _tcp, wait_for  # noqa: E402

HASH = "cdd01ef066bc6cf2"
BODY = ('{"model":"auto","messages":[{"role":"system","content":"You are terse."},'
        '{"role":"user","content":"What is the capital of France? Answer in one word."}]}')
COMPLETION = ('{"id":"chatcmpl-bench","object":"chat.completion","created":0,"model":"m",'
              '"choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant",'
              '"content":"Paris"}}],"usage":{"prompt_tokens":20,"completion_tokens":1,"total_tokens":21}}')
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
# Distinct bodies per pool: well above the feature cache's 4,096 entries, so a
# cycled pool never hits it.
POOL = {"unique": 40_000, "mix": 12_000}
HEADERS = {"Content-Type": "application/json", "X-Constitutional-Hash": HASH}


# Imported by the floor targets' sidecar at start-up (Python imports a
# `sitecustomize` module found on its path), so the product carries no switch for
# it. The first answer per path is a real decision; the rest replay it, feedback
# lines included (their request ids then match no reservation, so settling them
# is a lookup too).
FLOOR = '''
from sidecar.edge import wire


class ReplayingProtocol(wire.HttpProtocol):
    answers = {}

    def __init__(self, handler, max_body, after_answers=None):
        def replay(method, target, headers, body):
            answer = self.answers.get(target)
            if answer is None:
                answer = handler(method, target, headers, body)
                if answer[0] == 200:
                    self.answers[target] = answer
            return answer
        super().__init__(replay, max_body, after_answers)


wire.HttpProtocol = ReplayingProtocol
'''


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def direct_nginx(run: Path, echo_port: int, direct_port: int) -> subprocess.Popen:
    run.mkdir(parents=True, exist_ok=True)
    conf = run / "nginx.conf"
    modules = "".join(f"load_module {m};\n" for m in LUA_MODULES)
    conf.write_text(modules + textwrap.dedent(f"""\
        worker_processes 2;
        pid {run}/nginx.pid;
        error_log {run}/error.log warn;
        daemon off;
        events {{ worker_connections 4096; }}
        http {{
            access_log off;
            client_max_body_size 4m; client_body_buffer_size 4m;  # as the router's nginx
            client_body_temp_path {run}/body; proxy_temp_path {run}/proxy;
            fastcgi_temp_path {run}/fcgi; uwsgi_temp_path {run}/uwsgi; scgi_temp_path {run}/scgi;
            upstream echo {{ server 127.0.0.1:{echo_port}; keepalive 32; }}
            server {{
                listen 127.0.0.1:{echo_port};
                # Reads the body before answering: a `return` leaves a large body
                # unread, closes the keep-alive connection, and the proxy in front
                # then sees "upstream prematurely closed" (502) on its next request.
                location / {{
                    default_type application/json;
                    content_by_lua_block {{ ngx.req.read_body() ngx.print('{COMPLETION}') }}
                }}
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


def wrk_script(tmp: Path, kind: str) -> Path:
    """A wrk script sending `kind` bodies. Unique bodies are read from a file and
    formatted into requests once, in init (wrk's advice: building a request per
    call costs the load generator CPU the box needs for the router)."""
    headers = {**HEADERS, "Authorization": f"Bearer {KEY}"}
    lua_headers = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
    script = tmp / f"{kind}.lua"
    if kind == "repeated":
        script.write_text(f'wrk.method = "POST"\nwrk.body = [[{BODY}]]\n{lua_headers}')
        return script
    if kind not in POOL:
        raise SystemExit(f"unknown --bodies kind {kind!r}; use repeated, unique or mix")
    make = prompt_mix.short_bodies if kind == "unique" else prompt_mix.mixed_bodies
    pool = tmp / f"{kind}.bodies"
    pool.write_bytes(b"\n".join(make(POOL[kind])) + b"\n")
    script.write_text(f'wrk.method = "POST"\n{lua_headers}' + textwrap.dedent(f"""\
        local threads, requests, nextone = 0, {{}}, 1
        function setup(thread)
            threads = threads + 1
            thread:set("offset", threads)
        end
        function init(args)
            for line in io.lines("{pool}") do
                requests[#requests + 1] = wrk.format(nil, nil, nil, line)
            end
            -- Threads start far apart in the pool so they do not send the same bodies.
            nextone = (tonumber(offset or 1) * 7919) % #requests + 1
        end
        function request()
            local r = requests[nextone]
            nextone = nextone % #requests + 1
            return r
        end
        """))
    return script


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
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return {"p50": lat["50"], "p99": lat["99"], "rps": rps, "requests": requests}


def cpu_seconds(pids) -> float:
    """User + system CPU time these processes have used so far (Linux /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per wrk run")
    parser.add_argument("--max-connections", type=int, default=32)
    parser.add_argument("--loads", default="c1,c8,max",
                        help="which of c1,c8,max to run (c1 alone gives more rounds per minute)")
    parser.add_argument("--floor", action="store_true",
                        help="also run each mode with every decision replayed (what the round "
                             "trip costs without the decision)")
    parser.add_argument("--bodies", default="repeated,unique",
                        help="comma-separated: repeated (one constant body), unique (a new short "
                             "prompt every request), mix (new prompts, realistic size mix)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="hir-bench-"))
    scripts = {kind: wrk_script(tmp, kind) for kind in args.bodies.split(",")}
    echo_port, direct_port = free_port(), free_port()
    procs, stacks = [], []
    try:
        procs.append(direct_nginx(tmp / "direct", echo_port, direct_port))
        targets, sidecars = {"direct": direct_port}, {}
        variants = [("lua", False, ""), ("stock", False, ""), ("lua", True, ""), ("stock", True, "")]
        if args.floor:
            (tmp / "floor").mkdir()
            (tmp / "floor" / "sitecustomize.py").write_text(FLOOR)
            variants += [("lua", False, ":floor"), ("stock", False, ":floor")]
        for mode, enforcement, floor in variants:
            name = mode + ("+limits" if enforcement else "") + floor
            policy = bench_policy(tmp, echo_port, enforcement)
            port = free_port()
            env = {"PYTHONPATH": str(tmp / "floor")} if floor else None
            stack = Stack(policy, tmp / name, mode=mode, listen=f"127.0.0.1:{port}", env=env)
            stack.run_dir.mkdir(parents=True)
            stacks.append(stack)
            stack.start_sidecar(0)
            stack.start_nginx()
            targets[name] = port
            sidecars[name] = stack.procs["sidecar-0"].pid

        loads = {name: conns for name, conns in (("c1", 1), ("c8", 8), ("max", args.max_connections))
                 if name in args.loads.split(",")}
        results = {kind: {t: {load: [] for load in loads} for t in targets} for kind in scripts}
        for name, port in targets.items():  # warm-up: keepalive pools, Lua code cache
            wrk(port, 8, 1, scripts[next(iter(scripts))])
        order = list(targets.items())
        for r in range(args.rounds):
            for kind, script in scripts.items():
                for load, conns in loads.items():
                    # Rotate the order every round so no target always runs first or last.
                    for name, port in order[r % len(order):] + order[:r % len(order)]:
                        pid = sidecars.get(name)
                        before = cpu_seconds([pid]) if pid else 0.0
                        run = wrk(port, conns, args.duration, script)
                        if pid:
                            run["sidecar_us"] = (cpu_seconds([pid]) - before) / max(1, run["requests"]) * 1e6
                        results[kind][name][load].append(run)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        for kind in scripts:
            print(f"\n== bodies: {kind}")
            report(results[kind], args)
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
          f"{'max rps':>9} {'rps/direct':>10} {'sidecar µs/req':>14}")
    direct = results["direct"]
    for name, runs in results.items():
        print(f"{name:13} {median(runs.get('c1'), 'p50'):8.3f} {median(runs.get('c1'), 'p99'):8.3f} "
              f"{median(runs.get('c8'), 'p50'):8.3f} {median(runs.get('c8'), 'p99'):8.3f} "
              f"{median(runs.get('max'), 'rps'):9.0f} "
              f"{median(runs.get('max'), 'rps') / median(direct.get('max'), 'rps'):10.2f} "
              f"{median(runs.get('max') if name != 'direct' else None, 'sidecar_us'):14.0f}")
    for name, runs in results.items():
        if name == "direct":
            continue
        print(f"added by {name:12}: c1 p50 +{median(runs.get('c1'), 'p50') - median(direct.get('c1'), 'p50'):.3f} ms, "
              f"c1 p99 +{median(runs.get('c1'), 'p99') - median(direct.get('c1'), 'p99'):.3f} ms, "
              f"c8 p50 +{median(runs.get('c8'), 'p50') - median(direct.get('c8'), 'p50'):.3f} ms")
    for mode in ("lua", "stock"):
        base = median(results[mode].get("c1"), "p50") - median(direct.get("c1"), "p50")
        full = median(results[mode + "+limits"].get("c1"), "p50") - median(direct.get("c1"), "p50")
        print(f"{mode}: hash + key + 3 limits change the added p50 by {100 * (full / base - 1):+.0f}%")
        if mode + ":floor" in results:
            floor = median(results[mode + ":floor"].get("c1"), "p50") - median(direct.get("c1"), "p50")
            print(f"{mode}: the floor is {100 * floor / base:.0f}% of the added p50; the decision "
                  f"{100 * (1 - floor / base):.0f}%")


if __name__ == "__main__":
    raise SystemExit(main())
