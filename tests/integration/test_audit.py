"""`audit` against the real stack in both modes (it must score 100%), with a key
policy, and against an edge that is not hardened (it must say so and fail)."""

from __future__ import annotations

import json
import subprocess
import sys


from conftest import free_port, shifted_policy
from sidecar.tools.stack import Stack

KEY = "hir-audit-test-key-0123456789abcdef"


def audit(*args) -> tuple[int, dict]:
    out = subprocess.run([sys.executable, "-m", "sidecar", "audit", *args, "--json"],
                         capture_output=True, text=True, timeout=240)
    return out.returncode, json.loads(out.stdout)


def test_the_local_stack_scores_100_in_both_modes(tls_both):
    code, report = audit(f"http://{tls_both.listen}", "--https",
                         f"https://localhost:{tls_both.tls_listen.rpartition(':')[2]}",
                         "--cacert", str(tls_both.run_dir / "tls" / "localhost.crt"), "--burst", "200")
    failed = [f for f in report["findings"] if not f["ok"]]
    assert failed == [] and report["score"] == 100.0 and code == 0
    areas = {f["area"] for f in report["findings"]}
    assert areas == {"hash", "responses", "limits", "keys", "smuggling", "tls"}


def test_with_keys_required_the_refusals_are_checked_too(tmp_path):
    from sidecar.access.clients import digest
    extra = (f"clients:\n  require_key: true\n  tenants:\n    acme: {{keys: [\"{digest(KEY)}\"]}}\n"
             "limits:\n  - {name: per-tenant, per: [tenant], requests: {rate: 600, per: 1m, burst: 100}}\n")
    policy, _ = shifted_policy(tmp_path, extra=extra)
    text = policy.read_text().replace("    /v1/completions: {endpoint: nano-qwen3-0-6b}\n", "")
    policy.write_text(text)  # keys cannot fail open (check refuses it)
    with Stack(policy, tmp_path / "run", mode="lua", listen=f"127.0.0.1:{free_port()}", latency_scale=0) as st:
        code, report = audit(f"http://{st.listen}", "--key", KEY)
        keys = [f for f in report["findings"] if f["area"] == "keys" or "key" in f["check"]]
        assert [f for f in report["findings"] if not f["ok"]] == []
        assert code == 0 and report["score"] == 100.0
        assert len(keys) >= 9  # three refusals, each checked for status, headers and body
        code, report = audit(f"http://{st.listen}", "--key", "hir-not-the-key")
        assert code == 1
        assert any(not f["ok"] and f["check"] == "routed request: status 200" for f in report["findings"])


def test_an_edge_that_is_not_hardened_fails_the_audit(tls_both):
    # A simulated endpoint is a plain aiohttp server: no security headers, no hash, no limits.
    port = tls_both.policy.endpoints[0].port
    code, report = audit(f"http://127.0.0.1:{port}", "--min-score", "60")
    assert code == 1 and report["score"] < 60
    failed = {f["check"] for f in report["findings"] if not f["ok"]}
    assert "routed request: security headers" in failed
    assert "RateLimit-Policy on a routed answer" in failed


def test_the_burst_meets_the_limit_at_realistic_endpoint_latency(tmp_path):
    # One request at a time, each waiting for a simulated endpoint at its real
    # latency, the limit (120 at once, 10 a second) refilled faster than 200
    # requests spent it: the local stack of the README scored 99.2%.
    policy, _ = shifted_policy(tmp_path)
    with Stack(policy, tmp_path / "run", mode="stock", listen=f"127.0.0.1:{free_port()}", latency_scale=1) as st:
        code, report = audit(f"http://{st.listen}", "--burst", "200")
        limits = {f["check"]: f["ok"] for f in report["findings"] if f["area"] == "limits"}
        assert limits.get("a 429 says when to retry") and limits.get("a 429 carries RateLimit headers"), limits
        assert code == 0 and report["score"] == 100.0
