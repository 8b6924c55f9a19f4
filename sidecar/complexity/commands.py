"""Commands for the complexity model: build-data, train, eval, classify."""

from __future__ import annotations

import sys
from pathlib import Path


def _read_jsonl(path: str) -> list[dict]:
    import orjson
    stream = sys.stdin.buffer if path == "-" else open(path, "rb")
    with stream:
        return [orjson.loads(line) for line in stream if line.strip()]


def _read_all(paths) -> list[dict]:
    return [row for path in ([paths] if isinstance(paths, str) else paths)
            for row in _read_jsonl(path)]


def build_data(args) -> int:
    import orjson
    from sidecar.complexity import public_data
    try:
        rows = public_data.build(Path(args.repos), allow_clone=args.clone)
    except (FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with open(args.out, "wb") as f:
        for row in rows:
            f.write(orjson.dumps(row) + b"\n")
    print(f"wrote {args.out} ({len(rows)} rows)")
    return 0


def _part(rows: list[dict], part: str) -> list[dict]:
    """A reproducible 80/20 split by row identity (xxh3 of file and id)."""
    if part == "all":
        return rows
    import xxhash
    held = [xxhash.xxh3_64_intdigest(f"{r.get('file')}/{r.get('id')}".encode()) % 5 == 0 for r in rows]
    return [r for r, h in zip(rows, held) if h == (part == "heldout")]


def train(args, views=None) -> int:
    """views: {name: model → scorer} for the leave-one-kind-out report (the
    CLI adds the tier a policy routes to; that needs the policy layer)."""
    try:
        from sidecar.complexity import training
    except ImportError as exc:
        print(f"error: training needs the train extra (pip install -e '.[train]'): {exc}",
              file=sys.stderr)
        return 2
    from sidecar.complexity.complexity import ComplexityModel
    from sidecar.complexity.evaluation import HEADER, evaluate, leave_kinds_out, macro, metric_row
    rows = _part(_read_all(args.data), args.part)
    options = {"known_sources": args.known_sources}
    if args.reference_share is not None:
        options["reference_share"] = args.reference_share
    if args.cut_shift is not None:
        options["cut_shift"] = args.cut_shift
    if args.holdout_kinds:
        print(leave_kinds_out(lambda train_rows: ComplexityModel(training.train(train_rows, **options)),
                              rows, views), flush=True)
    if args.loso:
        files = sorted({r.get("file", "unknown") for r in rows})
        print(f"leave-one-source-out over {len(files)} files")
        print(f"{'held-out file':30} {'n':>6} {HEADER}")
        totals = []
        for held in files:
            model = ComplexityModel(training.train([r for r in rows if r.get("file") != held],
                                                   **options))
            m = evaluate(model, [r for r in rows if r.get("file") == held])["files"][held]
            totals.append(m)
            print(metric_row(held, m, m["n"]), flush=True)
        print(metric_row("macro", macro(totals)))
    if args.out:
        Path(args.out).write_text(training.dump(training.train(rows, **options)))
        print(f"wrote {args.out} (trained on {len(rows)} rows)")
    return 0


def evaluate(args, view=None) -> int:
    """view: model → scorer (the CLI's tier-a-policy-routes-to, for --policy)."""
    from sidecar.complexity import complexity, evaluation
    model = complexity.load(args.model) if args.model else complexity.default_model()
    if view is not None:
        model = view(model)
    result = evaluation.evaluate(model, _part(_read_all(args.data), args.part))
    print(evaluation.report(result))
    if args.plot:
        evaluation.plot(result, args.plot)
        print(f"\nwrote {args.plot}")
    return 0


def classify(args) -> int:
    import orjson
    from sidecar.complexity import complexity
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
