"""One command for a load test: against the local stack or any URL, headless,
with Locust's HTML report and the kit's own (per-tier table, cost comparison,
charts) in one directory.

    python loadtests/run.py --stack [--latency-scale 0.2] [--users 20] [--duration 60s]
    python loadtests/run.py --host https://router.example.com --key KEY --hash HASH
    python loadtests/run.py --stack --find-limit [--workers 2]   # the README's capacity numbers

--stack starts the simulated endpoints, the sidecar (--workers N processes) and
nginx (--mode lua|stock) on loopback, optionally with --fault-rates so the run
measures fallbacks too. --find-limit runs rising constant loads (or open-loop
--rates) and reports throughput and the router's added p99 at each, stopping
when that p99 passes --limit-ms (5 ms, the seed's bound).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def start_stack(args, run_dir: Path):
    from sidecar.tools.stack import Stack
    port = _free_port()
    stack = Stack(ROOT / args.policy, run_dir, mode=args.mode, listen=f"127.0.0.1:{port}",
                  latency_scale=args.latency_scale, workers=args.workers, fault_rates=args.fault_rates)
    stack.start()
    return stack, f"http://127.0.0.1:{port}"


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def locust(args, host: str, out: Path, users: int, duration: str, rate: float = 0) -> int:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"),
           "--headless", "--host", host, "-u", str(users), "-r", str(max(1, users)), "-t", duration,
           "--only-summary", "--html", str(out / "locust.html"), "--kit-out", str(out),
           "--kit-policy", str(ROOT / args.policy), "--kit-hash", args.hash, "--kit-rate", str(rate),
           "--kit-seed", str(args.seed), "--stop-timeout", "10"]
    if args.key:
        cmd += ["--kit-key", args.key]
    if args.mix:
        cmd += ["--kit-mix", args.mix]
    if args.apis:
        cmd += ["--kit-apis", args.apis]
    if args.followup_share is not None:
        cmd += ["--kit-followup-share", str(args.followup_share)]
    if args.repeat_share is not None:
        cmd += ["--kit-repeat-share", str(args.repeat_share)]
    if args.processes > 1:
        cmd += ["--processes", str(args.processes)]
    return subprocess.run(cmd, cwd=ROOT).returncode


def find_limit(args, host: str, out: Path) -> int:
    rows = []
    levels = [float(v) for v in args.rates.split(",")] if args.rates else [int(v) for v in args.levels.split(",")]
    for level in levels:
        step = out / f"level-{level}"
        if args.rates:
            # Enough users that pacing, not answers, sets the rate (the slowest tiers take ~1 s).
            locust(args, host, step, users=max(16, int(level // 4)), duration=args.duration, rate=level)
        else:
            locust(args, host, step, users=int(level), duration=args.duration)
        summary = json.loads((step / "summary.json").read_text())
        seconds = _seconds(args.duration)
        rows.append({"level": level, "rps": summary["routed"] / seconds,
                     "added_p50_ms": summary["router_added_p50_ms"], "added_p99_ms": summary["router_added_p99_ms"],
                     "errors": summary["error_rate"]})
        print(f"{'rate' if args.rates else 'users'} {level}: {rows[-1]['rps']:.0f} routed req/s, router added "
              f"p50 {rows[-1]['added_p50_ms']:.2f} ms, p99 {rows[-1]['added_p99_ms']:.2f} ms", flush=True)
        if rows[-1]["added_p99_ms"] > args.limit_ms:
            break
    (out / "capacity.json").write_text(json.dumps(rows, indent=2))
    return 0


def _seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(duration[:-1]) * units[duration[-1]] if duration[-1] in units else float(duration)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--stack", action="store_true", help="start the local stack for the run")
    where.add_argument("--host", help="a running router, e.g. https://router.example.com")
    p.add_argument("--policy", default="policies/demo.yaml")
    p.add_argument("--mode", choices=("lua", "stock"), default="lua")
    p.add_argument("--workers", type=int, default=1, help="sidecar processes (--stack)")
    p.add_argument("--latency-scale", type=float, default=1.0, help="simulated model latency (--stack)")
    p.add_argument("--fault-rates", default="", help="e.g. 429=0.01,503=0.01,stall=0.002 (--stack)")
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--duration", default="60s")
    p.add_argument("--processes", type=int, default=1, help="Locust worker processes")
    p.add_argument("--key", default="")
    p.add_argument("--hash", default="cdd01ef066bc6cf2")
    p.add_argument("--mix", default="", help="e.g. chat=5,code=2 (default: the profile's)")
    p.add_argument("--apis", default="", help="e.g. chat=7,responses=2,messages=1 (default: the profile's)")
    p.add_argument("--followup-share", type=float, default=None,
                   help="share of Responses requests that continue an answer (default: the profile's; "
                        "0 for --stack --mode stock, which cannot pin conversations)")
    p.add_argument("--repeat-share", type=float, default=None,
                   help="share of requests that repeat the user's last non-streamed one (default: the "
                        "profile's); a policy's response_cache answers them")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="default: loadtests/reports/<time>")
    p.add_argument("--find-limit", action="store_true")
    p.add_argument("--levels", default="4,8,16,32,64", help="users per step for --find-limit")
    p.add_argument("--rates", default="", help="open-loop req/s per step instead of --levels")
    p.add_argument("--limit-ms", type=float, default=5.0)
    args = p.parse_args()
    if args.stack and args.mode == "stock" and args.followup_share is None:
        # Stock nginx cannot read an answer's id, so a follow-up reaches the endpoint
        # holding its conversation only by chance (docs/policy.md, "Responses conversations").
        print("stock mode: Responses follow-ups off (--followup-share to send them anyway)")
        args.followup_share = 0.0
    out = Path(args.out or ROOT / "loadtests" / "reports" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    stack = None
    try:
        if args.stack:
            stack, host = start_stack(args, out / "stack")
        else:
            host = args.host
        if args.find_limit:
            return find_limit(args, host, out)
        code = locust(args, host, out, args.users, args.duration)
        print(f"reports: {out / 'report.html'} and {out / 'locust.html'}")
        return code
    finally:
        if stack is not None:
            stack.stop()


if __name__ == "__main__":
    raise SystemExit(main())
