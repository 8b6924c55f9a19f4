"""Command line: serve, check, explain, render-nginx, key-digest, train, eval,
classify, mockllm, stack, audit.

With sidecar.edge.server, the only code that reads the environment, installs uvloop,
configures logging and runs servers (STYLE 10).
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


def _load(path: str):
    from sidecar.policy.spec import PolicyError, load_policy
    try:
        return load_policy(path, os.environ)
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_check(args) -> int:
    from sidecar.tools import golden
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
    from sidecar.tools import explain
    policy = _load(args.policy)
    raw = Path(args.request).read_bytes() if args.request != "-" else sys.stdin.buffer.read()
    headers = dict(h.split(":", 1) for h in args.header)
    print(explain.explain(policy, raw, path=args.path,
                          headers={k.strip(): v.strip() for k, v in headers.items()}))
    return 0


def cmd_render(args) -> int:
    from sidecar.tools import nginx_render
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
                                     request_timeout_s=args.request_timeout,
                                     feedback_sockets=args.feedback_socket)
    print(nginx_render.write_config(policy, opts))
    return 0


def _share(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N, got {text!r}")
    return int(index), int(count)


def cmd_serve(args) -> int:
    from sidecar.edge import server
    return server.run(args, _load(args.policy))


def cmd_build_data(args) -> int:
    from sidecar.complexity import commands
    return commands.build_data(args)


def cmd_train(args) -> int:
    from sidecar.complexity import commands
    views = {"model tier": lambda model: model}
    if args.policy and not args.holdout_kinds:
        print("error: train --policy reports the routed tier with --holdout-kinds; use it with "
              "that, or `eval --policy` for a trained model", file=sys.stderr)
        return 2
    if args.policy:
        from sidecar.tools.routed import routed_by
        views[f"tier routed by {args.policy}"] = routed_by(args.policy)
    return commands.train(args, views)


def cmd_eval(args) -> int:
    from sidecar.complexity import commands
    if args.policy:
        from sidecar.tools.routed import routed_by
        return commands.evaluate(args, routed_by(args.policy))
    return commands.evaluate(args)


def cmd_classify(args) -> int:
    from sidecar.complexity import commands
    return commands.classify(args)


def cmd_mockllm(args) -> int:
    from sidecar.tools import mockllm
    from sidecar.edge.server import install_uvloop
    policy = _load(args.policy)
    install_uvloop()

    async def run() -> None:
        runners = await mockllm.serve(policy, args.latency_scale, args.fault, args.fault_rates, args.seed,
                                      host=args.host)
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


def cmd_key_digest(args) -> int:
    """Print the digest a policy stores for an API key. The key is read from
    stdin (not argv, so it stays out of shell history and `ps`)."""
    import secrets

    from sidecar.access.clients import digest
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
    from sidecar.tools import stack
    return stack.run(args.policy, mode=args.mode, listen=args.listen, run_dir=args.run_dir,
                     latency_scale=args.latency_scale, tls_listen=args.https_listen,
                     redirect_http=args.redirect_http, fault_rates=args.fault_rates,
                     admin_listen=args.admin_listen, monitoring=args.monitoring)


def cmd_audit(args) -> int:
    from sidecar.tools import audit
    return audit.main(args)


def cmd_policy(args) -> int:
    from sidecar.tools import lifecycle, policy_diff
    if args.action == "diff":
        print(policy_diff.diff(args.a, args.b, args.cases or ()))
        return 0
    if args.action in ("history", "backup", "restore"):
        return getattr(lifecycle, args.action)(args)
    try:
        version = lifecycle.deploy(args) if args.action == "deploy" else lifecycle.rollback(args)
    except lifecycle.DeployFailed as exc:
        print(f"{args.action} failed: {exc}", file=sys.stderr)
        return 1
    print(f"{args.action}: policy {version} is live")
    return 0


def cmd_replay(args) -> int:
    import json

    from sidecar.tools import replay
    result = replay.replay(args.current, args.policy, args.file, args.examples)
    print(json.dumps(result, indent=2) if args.json else replay.report(result))
    return 0


def cmd_container(args) -> int:
    from sidecar.tools import container
    return container.main(args)


def cmd_container_health(args) -> int:
    from sidecar.tools import container
    return container.healthcheck()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sidecar", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the sidecar")
    p.add_argument("--policy", required=True)
    p.add_argument("--socket", help="unix socket path (what nginx talks to)")
    p.add_argument("--tcp", help="admin listener HOST:PORT (healthz and metrics only)")
    p.add_argument("--socket-mode", type=lambda text: int(text, 8), default=0o600,
                   help="permissions of the unix sockets, octal (default 600: the decision "
                        "socket's answers carry the providers' credentials). When nginx's "
                        "workers run as another user, give both a group and use 660")
    p.add_argument("--workers", type=int, default=1,
                   help="N processes, sockets PATH-0 .. PATH-(N-1) (render nginx with each)")
    p.add_argument("--feedback-socket", help="where nginx's access log arrives (health, usage, "
                   "outcomes): loopback HOST:PORT (UDP) or a unix datagram socket path; render "
                   "nginx with the same; with --workers N, ports PORT..PORT+N-1 (paths PATH-i)")
    p.add_argument("--feedback-share", type=_share, default=None, metavar="I/N",
                   help="this is process I of N separate processes that each read every "
                        "feedback line (nginx sends each line to all): it counts the traffic "
                        "metrics of 1/N of the requests, so the processes' metrics sum to the "
                        "traffic (set by --workers; give it when starting N serve processes)")
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
                   help="sidecar feedback address(es) to send the access log to: loopback "
                        "HOST:PORT (UDP) or a unix socket path")
    p.add_argument("--max-body", default="1m")
    p.add_argument("--tls-listen", default="", help="HTTPS listener, e.g. 0.0.0.0:443")
    p.add_argument("--tls-cert", default="")
    p.add_argument("--tls-key", default="")
    p.add_argument("--redirect-http", action="store_true", help="plain listener answers 308 to https")
    p.add_argument("--client-timeout", default="10s", help="shed clients slower than this")
    p.add_argument("--request-timeout", type=int, default=30,
                   help="seconds a request (headers + body) may take to arrive")
    p.add_argument("--user", default="", help="nginx worker user")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("mockllm", help="serve the policy's loopback endpoints (simulated models)")
    p.add_argument("--policy", required=True)
    p.add_argument("--latency-scale", type=float, default=1.0, help="0 for benchmarks")
    p.add_argument("--fault", default="", help="fault for every request, e.g. status=503")
    p.add_argument("--fault-rates", default="",
                   help="random faults per request, e.g. 429=0.01,503=0.005,stall=0.001,drop=0.001")
    p.add_argument("--seed", type=int, default=None, help="seed the latency and fault draws")
    p.add_argument("--host", default="", help="listen on this address instead of each endpoint's own "
                   "(e.g. 0.0.0.0 in a container)")
    p.set_defaults(func=cmd_mockllm)

    p = sub.add_parser("build-data", help="gather the public labelled prompts listed in "
                       "docs/data-card.md from pinned git repositories into one JSONL")
    p.add_argument("--repos", required=True, help="folder holding the repositories (git dirs or "
                   "checkouts, as owner+name/, owner+name/repo/ or name/)")
    p.add_argument("--out", required=True, help="JSONL to write (keep it out of the repository)")
    p.add_argument("--clone", action="store_true", help="git clone the ones that are missing")
    p.set_defaults(func=cmd_build_data)

    p = sub.add_parser("train", help="train the complexity model on labelled prompts (JSONL)")
    p.add_argument("--data", required=True, action="append",
                   help='JSONL with "prompt", "tier" and "file" (and "kind" for gathered rows); '
                        "repeat for several files")
    p.add_argument("--out", help="model file to write (JSON)")
    p.add_argument("--loso", action="store_true", help="report leave-one-source-out accuracy")
    p.add_argument("--holdout-kinds", action="store_true",
                   help="report leave-one-kind-out accuracy over the gathered rows' kinds")
    p.add_argument("--policy", help="with --holdout-kinds: also report the tier this policy routes to")
    p.add_argument("--reference-share", type=float, default=None,
                   help="weight of each reference file (rows without a kind) against a gathered "
                        "one (default: the training default)")
    p.add_argument("--cut-shift", type=float, default=None,
                   help="move every cut point down by this share of the mean gap between them "
                        "after fitting (default: the training default)")
    p.add_argument("--part", choices=("all", "train", "heldout"), default="all",
                   help="all rows, or the reproducible 80%% / 20%% split")
    p.add_argument("--known-sources", action="store_true",
                   help="add per-file corrections for prompts that plainly come from a "
                        "training file (better on your own traffic; ~25 µs more per prompt)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="accuracy per source file, confusion, cost/quality (APGR)")
    p.add_argument("--data", required=True, action="append", help="JSONL; repeat for several")
    p.add_argument("--policy", help="score the tier this policy routes to, not the model's own")
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
    p.add_argument("--fault-rates", default="",
                   help="simulated endpoints fail at random, e.g. 429=0.01,503=0.005,stall=0.001")
    p.add_argument("--admin-listen", default="127.0.0.1:9200",
                   help="the sidecar's /metrics and /healthz (loopback; one port per process)")
    p.add_argument("--monitoring", action="store_true",
                   help="also run Prometheus (127.0.0.1:9090) with the shipped config and alert rules")
    p.set_defaults(func=cmd_stack)
    p = sub.add_parser("audit", help="probe a live edge (headers, hash, keys, limits, errors, TLS) and score it")
    p.add_argument("url", help="the edge's plain (or https) URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--https", default="", help="its HTTPS URL, for the TLS, HSTS and HTTP/2 checks")
    p.add_argument("--key", default="", help="an API key to send (then key refusals are checked too)")
    p.add_argument("--hash", default="", help="the constitutional hash (default: learnt from a response)")
    p.add_argument("--burst", type=int, default=0, help="send up to N requests and expect a 429")
    p.add_argument("--cacert", default="", help="CA file for the HTTPS URL")
    p.add_argument("--insecure", action="store_true", help="do not verify the certificate")
    p.add_argument("--min-score", type=float, default=100.0, help="exit 1 below this (percent)")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("policy", help="deploy, roll back, diff, back up and restore policy versions")
    acts = p.add_subparsers(dest="action", required=True)
    for name in ("deploy", "rollback"):
        a = acts.add_parser(name, help=f"{name} with a health check; a failed one rolls itself back")
        if name == "deploy":
            a.add_argument("candidate", help="the policy file to deploy")
        else:
            a.add_argument("version", nargs="?", default="", help="default: the one applied before")
        a.add_argument("--live", required=True, help="the policy file the router serves")
        a.add_argument("--state", default=".hir-state", help="where versions and history are kept")
        a.add_argument("--health", required=True, help="the sidecar's /healthz URL")
        a.add_argument("--probe", action="append", help="a chat URL that must answer 2xx (repeatable)")
        a.add_argument("--pid-file", default="", help="SIGHUP this process (else a file watcher reloads)")
        a.add_argument("--timeout", type=float, default=20.0)
        a.set_defaults(func=cmd_policy)
    a = acts.add_parser("history", help="the versions applied, and how each deploy ended")
    a.add_argument("--state", default=".hir-state")
    a.set_defaults(func=cmd_policy)
    a = acts.add_parser("diff", help="what routes differently between two policy files, in words")
    a.add_argument("a")
    a.add_argument("b")
    a.add_argument("--cases", action="append", help="golden suites whose requests to compare "
                   "(default: the suites beside A and B)")
    a.set_defaults(func=cmd_policy)
    for name in ("backup", "restore"):
        a = acts.add_parser(name, help=f"{name} the kept versions and (--redis) limit/budget state")
        a.add_argument("archive", help="a .tar.gz")
        a.add_argument("--state", default=".hir-state")
        a.add_argument("--redis", default="")
        a.add_argument("--redis-prefix", default="hir:")
        a.set_defaults(func=cmd_policy)

    p = sub.add_parser("replay", help="what-if: recorded requests through the current and a candidate policy")
    p.add_argument("file", help="the access log (JSON lines) or request bodies (JSONL)")
    p.add_argument("--policy", required=True, help="the candidate")
    p.add_argument("--current", required=True, help="the policy serving now")
    p.add_argument("--examples", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_replay)

    from sidecar.tools.container import add_arguments
    p = sub.add_parser("container", help="supervise nginx + sidecar in a container (the image's entrypoint)")
    add_arguments(p)
    p.set_defaults(func=cmd_container)
    p = sub.add_parser("container-health", help="the image's HEALTHCHECK: nginx and sidecar /healthz")
    p.set_defaults(func=cmd_container_health)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("HIR_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return args.func(args)
