"""Latency of the complexity signal and the feature cache (benchmark, not a test).

    python loadtests/bench_complexity.py [--data ../shared/data/routing/train.jsonl]

Prompts of ~1 KB, ~20 KB and ~200 KB are assembled from the labelled prompts
(or from a built-in text when the data is absent). Prints p50/p99 of one
assessment, a full decision with a cache hit and with a miss, the model file
size and its load time; medians over several rounds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from multidict import CIMultiDict  # noqa: E402

from sidecar.complexity import complexity  # noqa: E402
from sidecar.edge.app import Runtime, decide  # noqa: E402
from sidecar.edge.features import FeatureCache  # noqa: E402
from sidecar.policy.spec import load_policy  # noqa: E402

FALLBACK = ("Compare the two approaches described above and explain which one scales better "
            "when the number of users doubles every month; justify your answer. ")


def corpus(path: Path) -> str:
    if path.exists():
        with path.open() as f:
            return "\n".join(json.loads(line)["prompt"] for _, line in zip(range(3000), f))
    return FALLBACK * 3000


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]


def time_each(fn, items, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        for item in items:
            start = time.perf_counter()
            fn(item)
            out.append((time.perf_counter() - start) * 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "routing" / "train.jsonl"))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    text = corpus(Path(args.data))
    model = complexity.default_model()
    sizes = {"1 KB": 1024, "20 KB": 20 * 1024, "200 KB": 200 * 1024}
    prompts = {name: [text[i * 997 % (len(text) - size): i * 997 % (len(text) - size) + size]
                      for i in range(40)] for name, size in sizes.items()}
    # Worst case: one paragraph, so no final question is split off and the
    # windows are read in full.
    for name in ("20 KB", "200 KB"):
        prompts[f"{name}, one paragraph"] = [p.replace("\n", " ") for p in prompts[name]]
    sizes = {name: 0 for name in prompts}
    policy = load_policy(ROOT / "policies" / "demo.yaml", {})
    headers = CIMultiDict({"Content-Type": "application/json", "X-Constitutional-Hash": policy.constitutional_hash})
    bodies = [orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": p}]})
              for p in prompts["1 KB"]]
    results = {name: [] for name in [*sizes, "decision, cache miss (1 KB)", "decision, cache hit (1 KB)"]}
    for _ in range(args.rounds):
        for name, items in prompts.items():
            results[name].append(percentiles(time_each(model.assess, items, 5 if name != "200 KB" else 2)))
        misses = time_each(lambda b: decide(policy, "POST", "/v1/chat/completions", headers, b), bodies, 5)
        results["decision, cache miss (1 KB)"].append(percentiles(misses))
        cache = FeatureCache()
        # One request a second on the runtime's clock: the demo policy's limits
        # are checked on every decision (their cost is measured) but never deny.
        rt = Runtime(cache=cache, clock_ns=itertools.count(time.time_ns(), 10**9).__next__)
        for b in bodies:
            decide(policy, "POST", "/v1/chat/completions", headers, b, runtime=rt)
        hits = time_each(lambda b: decide(policy, "POST", "/v1/chat/completions", headers, b, runtime=rt),
                         bodies, 5)
        results["decision, cache hit (1 KB)"].append(percentiles(hits))
    print(f"medians of {args.rounds} rounds (µs)")
    for name, rounds in results.items():
        p50 = statistics.median(r[0] for r in rounds)
        p99 = statistics.median(r[1] for r in rounds)
        label = f"complexity, {name}" if name in sizes else name
        print(f"  {label:34} p50 {p50:8.1f}   p99 {p99:8.1f}")
    cache = FeatureCache()
    lookups = []
    key = ("/v1/chat/completions", 1)
    from sidecar.edge.features import Features
    f = Features("POST", "/v1/chat/completions", headers)
    cache.entries[key] = tuple(range(13))
    for _ in range(20000):
        start = time.perf_counter()
        cache.fill(f, key)
        lookups.append((time.perf_counter() - start) * 1e6)
    print(f"  {'feature cache lookup alone':34} p50 {percentiles(lookups)[0]:8.1f}")
    start = time.perf_counter()
    complexity.load(complexity.DEFAULT_MODEL)
    print(f"model file {complexity.DEFAULT_MODEL.stat().st_size / 1024:.0f} KiB, "
          f"load {(time.perf_counter() - start) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
