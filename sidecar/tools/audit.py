"""`python -m sidecar audit URL`: probe a live edge the way a client and an
attacker would, and score it.

Checks the security header set, the constitutional hash and the refusal of a
missing/wrong/malformed one, keys (with --key), rate-limit headers (and a 429
after a burst with --burst N), error bodies (JSON, no internals) for the
errors nginx and the sidecar raise, methods, size limits, smuggling shapes,
and with --https the TLS versions, HSTS and HTTP/2. Prints a report (text or
--json) and exits 1 below --min-score.
"""

from __future__ import annotations

import json
from collections import defaultdict

from sidecar.tools.audit_probes import Finding, run_all
from sidecar.tools.audit_wire import Target


def score(findings: list[Finding]) -> float:
    total = sum(f.weight for f in findings)
    return 100.0 * sum(f.weight for f in findings if f.ok) / total if total else 0.0


def text_report(findings: list[Finding], url: str) -> str:
    by_area = defaultdict(list)
    for f in findings:
        by_area[f.area].append(f)
    lines = [f"audit of {url}: {score(findings):.1f}% "
             f"({sum(f.ok for f in findings)}/{len(findings)} checks)"]
    for area, items in by_area.items():
        failed = [f for f in items if not f.ok]
        lines.append(f"  {area}: {len(items) - len(failed)}/{len(items)}")
        lines += [f"    FAIL {f.check}" + (f" ({f.detail})" if f.detail else "") for f in failed]
    return "\n".join(lines)


def main(args) -> int:
    target = Target.parse(args.url, args.cacert, args.insecure)
    https = Target.parse(args.https, args.cacert, args.insecure) if args.https else None
    if target.tls and https is None:
        https = target
    findings = run_all(target, https, args.hash, args.key, args.burst)
    result = score(findings)
    if args.json:
        print(json.dumps({"url": args.url, "https": args.https, "score": round(result, 1),
                          "passed": result >= args.min_score,
                          "findings": [f.__dict__ for f in findings]}, indent=2))
    else:
        print(text_report(findings, args.url))
    return 0 if result >= args.min_score else 1
