"""Where a cache-miss decision's time goes, stage by stage (benchmark, not a test).

    python loadtests/profile_decision.py [--requests 20000] [--rounds 5] [--limits] [--reference]

Runs the sidecar's pipeline in-process on distinct short chat bodies (every
decision a feature-cache miss, as in real traffic), with the overhead
benchmark's policy (demo rules + constitutional hash, `--limits`: + an API key
and three limits), and times each stage on its own over the same requests:
the wire protocol (parsing nginx's request, writing the answer), the JSON parse,
reading the body's fields, the complexity signal (signals, then the model),
the rules, limits and admission, and building the answer. Then the whole
decision as the socket runs it, so the stages can be checked against the sum.
Prints medians of per-request means over rounds, in µs. The same numbers for a
long prompt with `--size 200000`. `--reference` serves the complexity model
from its pure-Python reference instead of the compiled scorer (what a machine
without a C compiler runs, and what the router ran before it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import xxhash  # noqa: E402
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from multidict import CIMultiDict  # noqa: E402

from loadtests import prompt_mix  # noqa: E402
from loadtests.bench_overhead import HASH, KEY, bench_policy  # noqa: E402
from sidecar.access import clients  # noqa: E402
from sidecar.complexity import complexity, signals  # noqa: E402
from sidecar.edge import admission, decision, features, strictjson, wire  # noqa: E402
from sidecar.edge.app import PolicyRef, Runtime, Sidecar  # noqa: E402
from sidecar.edge.features import FeatureCache  # noqa: E402
from sidecar.edge.metrics import Metrics  # noqa: E402
from sidecar.policy.spec import load_policy  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402


def nginx_request(body: bytes, with_key: bool) -> bytes:
    """The request nginx sends the sidecar for one client request (both modes
    send these headers; sidecar.tools.nginx_render)."""
    headers = [("Host", "hir_sidecar"), ("X-Original-URI", "/v1/chat/completions"),
               ("X-Original-Method", "POST"), ("X-Peer-Addr", "127.0.0.1"),
               ("X-Request-Id", "5d1c0e6f9a2b4c3d8e7f6a5b4c3d2e1f"), ("X-Route-Mode", "lua"),
               ("X-Hir-Internal-Id", "0f1e2d3c4b5a69788796a5b4c3d2e1f0"),
               ("Content-Type", "application/json"), ("X-Constitutional-Hash", HASH),
               ("User-Agent", "wrk"), ("Content-Length", str(len(body)))]
    if with_key:
        headers.append(("Authorization", f"Bearer {KEY}"))
    head = "".join(f"{k}: {v}\r\n" for k, v in headers)
    return f"POST /_decide HTTP/1.1\r\n{head}\r\n".encode() + body


class _Transport:
    """Enough of an asyncio transport for HttpProtocol: keeps the last answer."""

    def __init__(self):
        self.last = b""

    def write(self, data: bytes) -> None:
        self.last = data

    def close(self) -> None:
        pass


def _per_request(fn, items) -> float:
    started = time.perf_counter_ns()
    for item in items:
        fn(item)
    return (time.perf_counter_ns() - started) / len(items) / 1000


def stages(policy, bodies, with_key: bool, compiled: bool):
    """{stage: fn(item)} and the items each takes, prepared from `bodies`."""
    requests = [nginx_request(b, with_key) for b in bodies]
    headers = []
    for raw in requests:
        proto = wire.HttpProtocol(lambda *a: (200, {}, b""), 1 << 24)
        proto.buffer = raw
        headers.append(proto._parse_one()[2])
    parsed = [strictjson.loads(b) for b in bodies]
    client = clients.identify(policy.clients, headers[0], "127.0.0.1")

    def fresh(i):
        f = features.Features("POST", "/v1/chat/completions", headers[i], client.ip)
        f.sticky = client.id
        return f

    filled = []
    for i, body in enumerate(parsed):
        filled.append(features.extract(fresh(i), body))
    texts = [f.text for f in filled]
    model = complexity.default_model()
    dense = [signals.extract(t) for t in texts]
    routes = [policy.route(f) for f in filled]
    runtime = Runtime()
    admitted = [admission.admit(policy, client, r, f, runtime.store, time.time_ns())
                for r, f in zip(routes, filled)]

    proto = wire.HttpProtocol(lambda m, t, h, b: (200, {"X-Accel-Redirect": "@buffered_small"}, b""),
                              1 << 24)
    proto.connection_made(_Transport())

    def read_fields(i):
        f = fresh(i)
        f.body = parsed[i]
        f.model = parsed[i].get("model", "")
        read = features.bodies.READERS[f.api](parsed[i])
        f.text = read.text
        f.prompt = head = signals.windows(read.text)
        f.code = features._CODE_SCAN(head) is not None
        f.math = features._MATH_SCAN(head) is not None

    table = {
        "wire: parse nginx's request + write the answer": (proto.data_received, requests),
        "hash the body (feature-cache key)": (lambda b: xxhash.xxh3_64_intdigest(b), bodies),
        "JSON parse (orjson + strictness walk)": (strictjson.loads, bodies),
        "read the body's fields (per-API reader)": (read_fields, range(len(bodies))),
        **({"complexity: read and scored in C (model.assess)": (model.assess, texts)} if compiled else {
            "complexity: signals": (signals.extract, texts),
            "complexity: model score + calibration": (lambda d: model.calibrate(model.raw_score(*d)),
                                                      dense)}),
        "client identity (key digest, address)": (
            lambda h: clients.identify(policy.clients, h, "127.0.0.1"), headers),
        "rules (policy.route)": (policy.route, filled),
        "admission (tenant tiers, budget, limits)": (
            lambda rf: admission.admit(policy, client, rf[0], rf[1], runtime.store, time.time_ns()),
            list(zip(routes, filled))),
        "answer: decision.allow (headers, lua body rewrite)": (
            lambda af: decision.allow(af[0].route, af[1], True, "/chat/completions",
                                      af[0].admission.headers), list(zip(admitted, filled))),
    }
    return table, requests


# A live sample's stage: the first of these found in its stack, outermost first
# (so "rules" wins over anything the rules call). Matched against py-spy's
# "function (file:line)" frames.
LIVE_STAGES = (
    ("feedback log (a datagram per request: health, outcomes, settlement)", ("feedback.py",)),
    ("complexity signal", ("signals.py", "complexity.py")),
    ("JSON parse (orjson + strictness walk)", ("parse_body (",)),
    ("read the body's fields", ("extract (sidecar/edge/features.py",)),
    ("rules (policy.route)", ("Policy.route (",)),
    ("admission (tenant tiers, budget, limits)", ("admit (",)),
    ("answer: decision.allow", ("allow (sidecar/edge/decision.py",)),
    ("client identity + constitutional hash", ("identify (", "check (sidecar/edge/constitution")),
    ("feature cache (hash, store, fill)", ("FeatureCache.",)),
    ("decide: the rest (glue, metrics)", ("decide (sidecar/edge/app.py",)),
    ("wire: parse nginx's request", ("_parse_one (",)),
    ("wire: render the answer", ("render_response (",)),
    ("wire: write to the socket + loop glue", ("data_received (",)),
)


def live_breakdown(raw: Path) -> list[tuple[str, float]]:
    """py-spy's raw (collapsed-stack) output → (stage, share of samples)."""
    counts: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        stage = next((name for name, marks in LIVE_STAGES if any(
            mark in frame for frame in frames for mark in marks)),
            "event loop: uvloop, syscalls, idle callbacks")
        counts[stage] = counts.get(stage, 0) + int(n)
        total += int(n)
    return sorted(((stage, n / total) for stage, n in counts.items()), key=lambda sn: -sn[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--limits", action="store_true", help="API key + three limits")
    parser.add_argument("--reference", action="store_true",
                        help="the complexity model's pure-Python reference, not the compiled scorer")
    parser.add_argument("--size", type=int, default=0,
                        help="prompt bytes (default: short chat prompts)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hir-profile-"))
    policy = load_policy(bench_policy(tmp, 9, args.limits), {})
    bodies = prompt_mix.short_bodies(args.requests)
    if args.size:
        filler = prompt_mix._document(__import__("random").Random(1), args.size)
        bodies = [b.replace(b'"content":"', b'"content":"' + filler.encode() + b"\\n\\n", 1)
                  for b in bodies[:max(50, args.requests // 200)]]
    model = complexity.default_model()
    if args.reference:
        model.compiled = None
    print(f"complexity model: {'compiled scorer' if model.compiled is not None else 'Python reference'}")
    table, requests = stages(policy, bodies, args.limits, model.compiled is not None)
    times = {name: [] for name in table}
    whole = []
    for _ in range(args.rounds):
        for name, (fn, items) in table.items():
            times[name].append(_per_request(fn, items))
        sidecar = Sidecar(PolicyRef(policy), Metrics(CollectorRegistry()),
                          Runtime(cache=FeatureCache()))
        proto = wire.HttpProtocol(sidecar.handle, 1 << 24)
        transport = _Transport()
        proto.connection_made(transport)
        whole.append(_per_request(proto.data_received, requests))
        if b"X-Accel-Redirect" not in transport.last:
            raise SystemExit(f"the decision was not a route:\n{transport.last[:400]!r}")
    size = statistics.mean(map(len, bodies))
    print(f"{len(bodies)} distinct bodies (mean {size:.0f} bytes), medians of {args.rounds} rounds, "
          f"µs per request")
    total = 0.0
    for name, samples in times.items():
        value = statistics.median(samples)
        total += value
        print(f"  {value:7.2f}  {name}")
    print(f"  {total:7.2f}  sum of the stages")
    print(f"  {statistics.median(whole):7.2f}  the whole decision through the socket protocol "
          f"(stages + metrics + glue)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
