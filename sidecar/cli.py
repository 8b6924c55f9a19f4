"""Command line: serve, check, explain, render-nginx, mockllm, stack.

The only module that reads the environment, installs uvloop, configures logging
and runs servers (STYLE 10).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

log = logging.getLogger("sidecar")
MAX_BODY = 16 * 1024 * 1024  # above any client_max_body_size nginx is configured with


def _load(path: str):
    from sidecar.policy_spec import PolicyError, load_policy
    try:
        return load_policy(path, os.environ)
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_check(args) -> int:
    from sidecar import golden
    failures = 0
    for path in args.policy:
        policy = _load(path)
        suite = Path(args.suite) if args.suite else golden.suite_for(Path(path))
        print(f"{path}: ok (version {policy.version}, {len(policy.tiers)} tiers, "
              f"{len(policy.endpoints)} endpoints, {len(policy.rules)} rules)")
        if policy.missing_env:
            print(f"{path}: note: unset credentials: {', '.join(policy.missing_env)}")
        if not suite.exists():
            print(f"{path}: no golden suite at {suite}")
            continue
        problems = golden.run_suite(policy, suite)
        for problem in problems:
            print(f"FAIL {problem}")
        failures += len(problems)
        if not problems:
            print(f"{suite}: all cases pass")
    return 1 if failures else 0


def cmd_explain(args) -> int:
    from sidecar import explain
    policy = _load(args.policy)
    raw = Path(args.request).read_bytes() if args.request != "-" else sys.stdin.buffer.read()
    headers = dict(h.split(":", 1) for h in args.header)
    print(explain.explain(policy, raw, path=args.path,
                          headers={k.strip(): v.strip() for k, v in headers.items()}))
    return 0


def cmd_render(args) -> int:
    from sidecar import nginx_render
    policy = _load(args.policy)
    if not args.out:
        sys.stdout.write(nginx_render.render_upstreams(policy))
        return 0
    if args.tls_listen and not (args.tls_cert and args.tls_key):
        print("error: --tls-listen needs --tls-cert and --tls-key", file=sys.stderr)
        return 2
    opts = nginx_render.NginxOptions(mode=args.mode, listen=args.listen,
                                     sidecar_sockets=args.sidecar_socket or ["/tmp/hir-sidecar.sock"],
                                     run_dir=str(Path(args.out).resolve()), max_body=args.max_body,
                                     tls_listen=args.tls_listen, tls_cert=args.tls_cert,
                                     tls_key=args.tls_key, redirect_http=args.redirect_http,
                                     client_timeout=args.client_timeout, user=args.user,
                                     feedback_sockets=args.feedback_socket)
    print(nginx_render.write_config(policy, opts))
    return 0


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; this is a safety net
        log.warning("uvloop is not installed; using asyncio's default loop")
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def cmd_serve(args) -> int:
    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from sidecar.app import PolicyRef, Runtime, Sidecar, create_admin_app
    from sidecar.features import FeatureCache
    from sidecar.metrics import Metrics
    from sidecar.policy_spec import PolicyError, load_policy
    from sidecar.wire import HttpProtocol

    policy = _load(args.policy)
    if policy.missing_env:
        log.warning("unset credentials: %s", ", ".join(policy.missing_env))
    socket_path, children = args.socket, []
    if args.workers > 1:
        # One process per socket; nginx hashes each client to one of them, so
        # per-client limits stay exact without shared state.
        index, children = _fork_workers(args.workers)
        socket_path = _worker_socket(args.socket, index)
        if args.feedback_socket:
            args.feedback_socket = _worker_socket(args.feedback_socket, index)

    def tell_children(sig) -> None:
        for pid in children:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    _install_uvloop()
    ref = PolicyRef(policy)
    metrics = Metrics(CollectorRegistry())
    store = None
    if args.redis:
        from sidecar.redis_store import RedisStore
        store = RedisStore.from_url(args.redis, deadline_ms=args.redis_deadline_ms,
                                    on_degraded=lambda reason: metrics.store_degraded.labels(reason).inc())
    sidecar = Sidecar(ref, metrics, Runtime(cache=FeatureCache(), store=store))

    def reload() -> None:
        try:
            new = load_policy(args.policy, os.environ)
        except PolicyError as exc:
            metrics.reloads.labels("error").inc()
            log.error("reload failed, keeping policy %s: %s", ref.policy.version, exc)
            return
        new.health = ref.policy.health  # endpoint health outlives a policy edit
        ref.policy = new
        metrics.reloads.labels("ok").inc()
        log.info("policy reloaded: version %s", new.version)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        servers, runner = [], None
        if socket_path:
            Path(socket_path).unlink(missing_ok=True)
            servers.append(await loop.create_unix_server(
                lambda: HttpProtocol(sidecar.handle, MAX_BODY), socket_path))
            os.chmod(socket_path, 0o666)
        if args.feedback_socket:
            from sidecar import feedback
            listener = feedback.Feedback(lambda: ref.policy.health, args.health_threshold,
                                         args.health_down_seconds)
            servers.append(await feedback.listen(args.feedback_socket, listener))
        if args.tcp and args.workers <= 1:
            runner = web.AppRunner(create_admin_app(sidecar), access_log=None,
                                   handle_signals=False, shutdown_timeout=1)
            await runner.setup()
            host, _, port = args.tcp.rpartition(":")
            await web.TCPSite(runner, host or "127.0.0.1", int(port)).start()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, lambda: (reload(), tell_children(signal.SIGHUP)))
        loop.add_signal_handler(signal.SIGTERM, lambda: (stop.set(), tell_children(signal.SIGTERM)))
        loop.add_signal_handler(signal.SIGINT, lambda: (stop.set(), tell_children(signal.SIGTERM)))
        log.info("sidecar ready: policy %s version %s on %s", policy.source, policy.version,
                 " and ".join(filter(None, (socket_path, args.tcp))))
        await stop.wait()
        for server in servers:
            server.close()
        if runner is not None:
            await runner.cleanup()

    asyncio.run(run())
    return 0


def _worker_socket(path: str, index: int) -> str:
    base, dot, ext = path.rpartition(".")
    return f"{base}-{index}.{ext}" if dot else f"{path}-{index}"


def _fork_workers(n: int) -> tuple[int, list[int]]:
    """Fork n-1 children (before any event loop exists). Returns (this process's
    worker index, child pids); the parent, index 0, passes signals on to them."""
    children = []
    for index in range(1, n):
        pid = os.fork()
        if pid == 0:
            return index, []
        children.append(pid)
    return 0, children


def cmd_mockllm(args) -> int:
    from sidecar import mockllm
    policy = _load(args.policy)
    _install_uvloop()

    async def run() -> None:
        runners = await mockllm.serve(policy, args.latency_scale, args.fault)
        log.info("mockllm serving %d endpoints", len(runners))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()
        for runner in runners:
            await runner.cleanup()

    asyncio.run(run())
    return 0


def _read_jsonl(path: str) -> list[dict]:
    import orjson
    stream = sys.stdin.buffer if path == "-" else open(path, "rb")
    with stream:
        return [orjson.loads(line) for line in stream if line.strip()]


def _part(rows: list[dict], part: str) -> list[dict]:
    """A reproducible 80/20 split by row identity (xxh3 of file and id)."""
    if part == "all":
        return rows
    import xxhash
    held = [xxhash.xxh3_64_intdigest(f"{r.get('file')}/{r.get('id')}".encode()) % 5 == 0 for r in rows]
    return [r for r, h in zip(rows, held) if h == (part == "heldout")]


def cmd_train(args) -> int:
    try:
        from sidecar import training
    except ImportError as exc:
        print(f"error: training needs the train extra (pip install -e '.[train]'): {exc}",
              file=sys.stderr)
        return 2
    from sidecar.complexity import ComplexityModel
    from sidecar.evaluation import evaluate
    rows = _part(_read_jsonl(args.data), args.part)
    if args.loso:
        files = sorted({r.get("file", "unknown") for r in rows})
        print(f"leave-one-source-out over {len(files)} files")
        print(f"{'held-out file':28} {'n':>6} {'exact':>7} {'within1':>8} {'mae':>6}")
        totals = []
        for held in files:
            model = ComplexityModel(training.train([r for r in rows if r.get("file") != held]))
            m = evaluate(model, [r for r in rows if r.get("file") == held])["files"][held]
            totals.append(m)
            print(f"{held:28} {m['n']:6d} {m['exact']:7.3f} {m['within_one']:8.3f} {m['mae']:6.3f}",
                  flush=True)
        print(f"{'macro':28} {'':6} " + " ".join(
            f"{sum(t[k] for t in totals) / len(totals):{w}.3f}"
            for k, w in (("exact", 7), ("within_one", 8), ("mae", 6))))
    if args.out:
        Path(args.out).write_text(training.dump(training.train(rows)))
        print(f"wrote {args.out} (trained on {len(rows)} rows)")
    return 0


def cmd_eval(args) -> int:
    from sidecar import complexity, evaluation
    model = complexity.load(args.model) if args.model else complexity.default_model()
    result = evaluation.evaluate(model, _part(_read_jsonl(args.data), args.part))
    print(evaluation.report(result))
    if args.plot:
        evaluation.plot(result, args.plot)
        print(f"\nwrote {args.plot}")
    return 0


def cmd_classify(args) -> int:
    import orjson
    from sidecar import complexity
    model = complexity.load(args.model) if args.model else complexity.default_model()
    out = sys.stdout.buffer
    for number, line in enumerate(sys.stdin.buffer, start=1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
            prompt = row["prompt"]
            if not isinstance(prompt, str):
                raise TypeError("'prompt' must be a string")
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            print(f"error: line {number}: expected a JSON object with a 'prompt' string: {exc}",
                  file=sys.stderr)
            return 2
        score, tier = model.assess(prompt, row.get("messages", 1) if isinstance(row.get("messages"), int) else 1)
        row["tier_pred"], row["score"] = tier, round(score, 6)
        out.write(orjson.dumps(row) + b"\n")
    return 0


def cmd_key_digest(args) -> int:
    """Print the digest a policy stores for an API key. The key is read from
    stdin (not argv, so it stays out of shell history and `ps`)."""
    import secrets

    from sidecar.clients import digest
    if args.generate:
        key = "hir-" + secrets.token_urlsafe(32)
        print(f"key:    {key}\ndigest: {digest(key)}")
        return 0
    key = sys.stdin.readline().strip()
    if not key:
        print("error: give the key on stdin, e.g. `printf %s \"$KEY\" | python -m sidecar key-digest`",
              file=sys.stderr)
        return 2
    print(digest(key))
    return 0


def cmd_stack(args) -> int:
    from sidecar import stack
    return stack.run(args.policy, mode=args.mode, listen=args.listen, run_dir=args.run_dir,
                     latency_scale=args.latency_scale, tls_listen=args.https_listen,
                     redirect_http=args.redirect_http)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sidecar", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the sidecar")
    p.add_argument("--policy", required=True)
    p.add_argument("--socket", help="unix socket path (what nginx talks to)")
    p.add_argument("--tcp", help="admin listener HOST:PORT (healthz, metrics, debugging)")
    p.add_argument("--workers", type=int, default=1,
                   help="N processes, sockets PATH-0 .. PATH-(N-1) (render nginx with each)")
    p.add_argument("--feedback-socket", help="unix datagram socket for nginx's access log "
                   "(endpoint health); render nginx with the same path")
    p.add_argument("--health-threshold", type=int, default=3,
                   help="consecutive endpoint failures that mark it down")
    p.add_argument("--health-down-seconds", type=float, default=10.0)
    p.add_argument("--redis", help="redis://... or unix://...: limits shared across hosts")
    p.add_argument("--redis-deadline-ms", type=int, default=25,
                   help="past this, a decision uses the in-process store instead")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("check", help="load, compile and run the golden suites of policies")
    p.add_argument("policy", nargs="+")
    p.add_argument("--suite", help="golden suite (default: tests/<policy file name> beside it)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("explain", help="show how the policy routes one request body")
    p.add_argument("policy")
    p.add_argument("request", help="request body JSON file, or - for stdin")
    p.add_argument("--path", default="/v1/chat/completions")
    p.add_argument("--header", action="append", default=[], help="'Name: value' (repeatable)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("render-nginx", help="print the upstream include, or write a full config")
    p.add_argument("policy")
    p.add_argument("--out", help="write nginx.conf + upstreams.conf into this directory")
    p.add_argument("--mode", choices=("lua", "stock"), default="lua")
    p.add_argument("--listen", default="127.0.0.1:8080")
    p.add_argument("--sidecar-socket", action="append")
    p.add_argument("--feedback-socket", action="append", default=[],
                   help="sidecar feedback socket(s) to send the access log to")
    p.add_argument("--max-body", default="1m")
    p.add_argument("--tls-listen", default="", help="HTTPS listener, e.g. 0.0.0.0:443")
    p.add_argument("--tls-cert", default="")
    p.add_argument("--tls-key", default="")
    p.add_argument("--redirect-http", action="store_true", help="plain listener answers 308 to https")
    p.add_argument("--client-timeout", default="10s", help="shed clients slower than this")
    p.add_argument("--user", default="", help="nginx worker user")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("mockllm", help="serve the policy's loopback endpoints (simulated models)")
    p.add_argument("--policy", required=True)
    p.add_argument("--latency-scale", type=float, default=1.0, help="0 for benchmarks")
    p.add_argument("--fault", default="", help="fault for every request, e.g. status=503")
    p.set_defaults(func=cmd_mockllm)

    p = sub.add_parser("train", help="train the complexity model on labelled prompts (JSONL)")
    p.add_argument("--data", required=True, help='JSONL with "prompt", "tier" and "file"')
    p.add_argument("--out", help="model file to write (JSON)")
    p.add_argument("--loso", action="store_true", help="report leave-one-source-out accuracy")
    p.add_argument("--part", choices=("all", "train", "heldout"), default="all",
                   help="all rows, or the reproducible 80%% / 20%% split")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="accuracy per source file, confusion, cost/quality (APGR)")
    p.add_argument("--data", required=True)
    p.add_argument("--model", help="model file (default: the shipped one)")
    p.add_argument("--part", choices=("all", "train", "heldout"), default="all")
    p.add_argument("--plot", help="draw the confusion matrix and cost/quality curve to a PNG")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("classify", help='add "tier_pred" and "score" to {"prompt": ...} JSONL lines')
    p.add_argument("--model", help="model file (default: the shipped one)")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("key-digest", help="the digest to put in a policy for an API key (key on stdin)")
    p.add_argument("--generate", action="store_true", help="make a new random key and print both")
    p.set_defaults(func=cmd_key_digest)

    p = sub.add_parser("stack", help="run the local stack: endpoints + sidecar + nginx")
    p.add_argument("--policy", default="policies/demo.yaml")
    p.add_argument("--mode", choices=("lua", "stock"), default="lua")
    p.add_argument("--listen", default="127.0.0.1:8080")
    p.add_argument("--run-dir", default=".run")
    p.add_argument("--latency-scale", type=float, default=1.0)
    p.add_argument("--https-listen", default="127.0.0.1:8443",
                   help="HTTPS listener (certificate generated on first run); '' for none")
    p.add_argument("--redirect-http", action="store_true",
                   help="the plain listener answers 308 to https (as a public port should)")
    p.set_defaults(func=cmd_stack)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("HIR_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return args.func(args)
