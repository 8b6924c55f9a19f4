"""The container supervisor outside a container (the image runs the same code;
scripts/container-smoke checks the image itself): one process, or the two
Kubernetes roles on a shared run directory; a policy file change reloads both
without a restart; either process dying stops the rest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from conftest import ROOT, Client, Mocks, free_port, shifted_policy, user, wait_until


def start(role, policy, run_dir, port, admin):
    env = {**os.environ, "HIR_POLICY": str(policy), "HIR_RUN_DIR": str(run_dir),
           "HIR_LISTEN": f"127.0.0.1:{port}", "HIR_ADMIN_LISTEN": admin, "HIR_WATCH_SECONDS": "0.2"}
    # The supervisor's and its children's output, shown if the test fails (once, in a
    # full run under load, the edge never answered and there was nothing to read).
    with open(run_dir.parent / f"{role}.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "sidecar", "container", "--role", role],
                                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def show_logs(run_dir):
    for log in [*sorted(run_dir.parent.glob("*.log")), run_dir / "error.log"]:
        if not log.exists():
            continue
        print(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}")


def version(admin):
    try:
        return json.loads(urllib.request.urlopen(f"http://{admin}/healthz", timeout=2).read())["policy_version"]
    except OSError:
        return ""


@pytest.fixture
def mocks(tmp_path):
    policy, ports = shifted_policy(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "sidecar", "mockllm", "--policy", str(policy),
                             "--latency-scale", "0"], cwd=ROOT)
    yield policy, Mocks(ports)
    proc.terminate()
    proc.wait(10)


@pytest.mark.parametrize("split", [False, True], ids=["one-container", "two-roles"])
def test_the_supervisor_serves_reloads_on_a_file_change_and_stops_when_a_child_dies(mocks, tmp_path, split):
    policy, _ = mocks
    port, admin, run = free_port(), f"127.0.0.1:{free_port()}", tmp_path / "run"
    procs = ([start("sidecar", policy, run, port, admin), start("nginx", policy, run, port, admin)]
             if split else [start("all", policy, run, port, admin)])
    client = Client(port)
    try:
        assert wait_until(lambda: version(admin) != "", 20)
        assert wait_until(lambda: _ok(client), 20)
        assert client.chat(user("hi"))[1]["X-Route-Tier"] == "nano"
        text = policy.read_text().replace("default: {tier: nano}", "default: {tier: fast}")
        tmp = policy.with_suffix(".new")
        tmp.write_text(text)
        os.replace(tmp, policy)          # as kubelet swaps a ConfigMap: a new file
        assert wait_until(lambda: client.chat(user("hi"))[1].get("X-Route-Tier") == "fast", 10)
        # The sidecar dies: its supervisor stops the rest and exits 1.
        sidecar = subprocess.run(["pgrep", "-f", f"sidecar serve --policy {policy}"], capture_output=True,
                                 text=True).stdout.split()
        os.kill(int(sidecar[0]), signal.SIGKILL)
        assert procs[0].wait(30) == 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)
        show_logs(run)


def _ok(client):
    try:
        return client.chat(user("hi"))[0] == 200
    except OSError:
        return False


def test_sigterm_drains_and_exits_0(mocks, tmp_path):
    policy, _ = mocks
    port, admin = free_port(), f"127.0.0.1:{free_port()}"
    proc = start("all", policy, tmp_path / "run", port, admin)
    try:
        assert wait_until(lambda: _ok(Client(port)), 20)
    finally:
        proc.send_signal(signal.SIGTERM)
        show_logs(tmp_path / "run")
    assert proc.wait(30) == 0
    assert subprocess.run(["pgrep", "-f", str(tmp_path / "run")], capture_output=True).returncode == 1
