"""Golden suites next to the policies, run the way `check` runs them."""

from __future__ import annotations

import subprocess
import sys

from sidecar.tools.golden import run_suite, suite_for
from sidecar.policy.spec import load_policy
from conftest import DEMO, ROOT


def test_shipped_golden_suites_pass():
    for name in ("demo.yaml", "production.yaml"):
        path = ROOT / "policies" / name
        assert run_suite(load_policy(path, {}), suite_for(path)) == []


def test_a_wrong_expectation_is_reported(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text("cases:\n  - name: greeting\n    request: {body: {model: auto, messages: "
                     "[{role: user, content: hi}]}}\n    expect: {tier: expert}\n")
    failures = run_suite(load_policy(DEMO, {}), suite)
    assert len(failures) == 1
    assert failures[0].startswith("suite.yaml: greeting: expected tier 'expert', got 'nano'")


def test_check_exits_non_zero_on_a_failing_suite_and_on_a_bad_policy(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text("cases:\n  - request: {body: {model: auto, messages: [{role: user, content: hi}]}}\n"
                     "    expect: {deny: {status: 403, code: nope}}\n")
    run = [sys.executable, "-m", "sidecar", "check"]
    ok = subprocess.run(run + [str(DEMO)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    failing = subprocess.run(run + [str(DEMO), "--suite", str(suite)], capture_output=True, text=True)
    assert failing.returncode == 1 and "FAIL suite.yaml" in failing.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 2\n")
    broken = subprocess.run(run + [str(bad)], capture_output=True, text=True)
    assert broken.returncode == 2
    assert "bad.yaml: missing required key 'tiers'" in broken.stderr
