"""Measuring a complexity model on labelled prompts (python -m sidecar eval).

Per source file: exact-tier accuracy, within-one-tier accuracy, mean absolute
tier error, then their macro average (every file counts once) and the pooled
confusion matrix. For files with weak/strong correctness labels (`routellm_*`:
both_correct, strong_only, weak_only, both_wrong) the cost/quality curve:
send the top share of prompts by score to the strong model and measure quality,
and APGR as RouteLLM defines it (average performance-gap recovered over shares
0..1; a random router scores 0.5). Pure Python; plotting needs matplotlib.
"""

from __future__ import annotations

from collections import defaultdict

WEAK_CORRECT = {"both_correct", "weak_only"}
STRONG_CORRECT = {"both_correct", "strong_only"}
TIERS = range(1, 6)


METRICS = ("exact", "within_one", "mae", "mean_true", "mean_pred")


def tier_metrics(pairs) -> dict:
    """pairs: (true tier, predicted tier) → exact, within_one, mae, the mean
    labelled and predicted tier (a model squeezed toward cheap tiers shows as
    mean_pred < mean_true), n."""
    n = len(pairs)
    if n == 0:
        return {**dict.fromkeys(METRICS, 0.0), "n": 0}
    errors = [abs(t - p) for t, p in pairs]
    return {"exact": sum(e == 0 for e in errors) / n,
            "within_one": sum(e <= 1 for e in errors) / n,
            "mae": sum(errors) / n, "mean_true": sum(t for t, _ in pairs) / n,
            "mean_pred": sum(p for _, p in pairs) / n, "n": n}


def macro(metrics) -> dict:
    metrics = list(metrics)
    return {k: sum(m[k] for m in metrics) / len(metrics) for k in METRICS} if metrics else {}


def confusion(pairs) -> list[list[int]]:
    matrix = [[0] * 5 for _ in TIERS]
    for t, p in pairs:
        matrix[t - 1][p - 1] += 1
    return matrix


def cost_quality_curve(scored, steps: int = 100) -> list[tuple[float, float]]:
    """scored: (score, label). Returns (share sent to strong, quality) for shares
    0, 1/steps, ..., 1, routing the highest scores to the strong model."""
    ranked = sorted(scored, key=lambda sl: -sl[0])
    n = len(ranked)
    weak = [label in WEAK_CORRECT for _, label in ranked]
    strong = [label in STRONG_CORRECT for _, label in ranked]
    # prefix[k] = quality when the first k prompts go to the strong model.
    prefix, total_weak = [0.0] * (n + 1), sum(weak)
    gained = 0
    for k in range(1, n + 1):
        gained += strong[k - 1] - weak[k - 1]
        prefix[k] = (total_weak + gained) / n
    prefix[0] = total_weak / n
    return [(i / steps, prefix[round(i / steps * n)]) for i in range(steps + 1)]


def apgr(curve) -> float:
    """Average performance gap recovered (RouteLLM): mean over the curve of
    (quality - weak quality) / (strong quality - weak quality), trapezoid rule."""
    q_weak, q_strong = curve[0][1], curve[-1][1]
    if q_strong == q_weak:
        return 0.0
    pgr = [(q - q_weak) / (q_strong - q_weak) for _, q in curve]
    area = sum((pgr[i] + pgr[i + 1]) / 2 * (curve[i + 1][0] - curve[i][0]) for i in range(len(pgr) - 1))
    return area


def evaluate(model, rows) -> dict:
    by_file, scored = defaultdict(list), defaultdict(list)
    for row in rows:
        score, tier = model.assess(row["prompt"], row.get("messages", 1))
        file = row.get("file", "unknown")
        if row.get("tier"):
            by_file[file].append((int(row["tier"]), tier))
        if row.get("label_kind") == "weak_strong_correctness" or file.startswith("routellm_"):
            scored[file].append((score, row.get("label")))
    files = {f: tier_metrics(pairs) for f, pairs in sorted(by_file.items())}
    curves = {f: cost_quality_curve(s) for f, s in scored.items()}
    return {"files": files, "macro": macro(files.values()),
            "confusion": confusion([p for pairs in by_file.values() for p in pairs]),
            "curves": curves, "apgr": {f: apgr(c) for f, c in curves.items()}}


HEADER = f"{'exact':>7} {'within1':>8} {'mae':>6} {'labelled':>9} {'predicted':>9}"


def metric_row(name: str, m: dict, n: int | str = "") -> str:
    return (f"{name:30} {n:>6} {m['exact']:7.3f} {m['within_one']:8.3f} {m['mae']:6.3f} "
            f"{m['mean_true']:9.2f} {m['mean_pred']:9.2f}")


def report(result: dict) -> str:
    lines = [f"{'file':30} {'n':>6} {HEADER}"]
    for f, m in result["files"].items():
        lines.append(metric_row(f, m, m["n"]))
    if result["macro"]:
        lines.append(metric_row("macro", result["macro"]))
    lines.append("\nconfusion (rows: true tier 1-5, columns: predicted 1-5)")
    for t, row in zip(TIERS, result["confusion"]):
        lines.append(f"  {t}: " + " ".join(f"{c:6d}" for c in row))
    for f, value in result["apgr"].items():
        curve = result["curves"][f]
        marks = ", ".join(f"{share:.0%}->{q:.3f}" for share, q in curve[::25])
        lines.append(f"\n{f}: APGR {value:.3f} (random 0.5); share to strong -> quality: {marks}")
    return "\n".join(lines)


def leave_kinds_out(train, rows, views=None) -> str:
    """Validation by kind of traffic: for every kind of the gathered rows (their
    "kind" field), a model trained without that kind (train(rows) → model)
    scored on it. Per file, per kind (macro over its files) and the macro over
    kinds. Rows without a kind (the reference set) are always trained on.
    views: {name: model → scorer}, e.g. the tier a policy routes to; each is
    reported from the same held-out models (default: the model's own tier)."""
    views = views or {"model tier": lambda model: model}
    kinds = sorted({r["kind"] for r in rows if r.get("kind")})
    lines = {name: [] for name in views}
    per_kind = {name: [] for name in views}
    for kind in kinds:
        model = train([r for r in rows if r.get("kind") != kind])
        held = [r for r in rows if r.get("kind") == kind]
        for name, view in views.items():
            result = evaluate(view(model), held)
            per_kind[name].append(result["macro"])
            lines[name].append(metric_row(kind, result["macro"],
                                          sum(m["n"] for m in result["files"].values())))
            lines[name].extend(metric_row(f"  {f}", m, m["n"]) for f, m in result["files"].items())
    out = []
    for name in views:
        out += [f"leave-one-kind-out over {len(kinds)} kinds: {name}",
                f"{'held-out kind / file':30} {'n':>6} {HEADER}", *lines[name],
                metric_row("macro over kinds", macro(per_kind[name])), ""]
    return "\n".join(out).rstrip()


def plot(result: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    ax = axes[0]
    matrix = result["confusion"]
    ax.imshow(matrix, cmap="Blues")
    for i, row in enumerate(matrix):
        for j, c in enumerate(row):
            ax.text(j, i, str(c), ha="center", va="center", fontsize=8)
    ax.set_xticks(range(5), [str(t) for t in TIERS])
    ax.set_yticks(range(5), [str(t) for t in TIERS])
    ax.set_xlabel("predicted tier")
    ax.set_ylabel("true tier")
    ax.set_title("confusion matrix")
    ax = axes[1]
    for f, curve in result["curves"].items():
        ax.plot([s for s, _ in curve], [q for _, q in curve], label=f"{f} (APGR {result['apgr'][f]:.2f})")
        ax.plot([0, 1], [curve[0][1], curve[-1][1]], "--", color="grey", label="random")
    ax.set_xlabel("share of prompts sent to the strong model")
    ax.set_ylabel("quality (share answered correctly)")
    ax.set_title("cost / quality")
    if result["curves"]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
