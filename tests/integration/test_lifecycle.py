"""Changing policy on a live stack (real nginx, sidecar, mock endpoints, Redis):
deploy with a health check and automatic rollback, rollback, diff in words,
what-if replay of the access log and of bodies, canary splits and shadow
mirroring, backup and restore of versions and limit state."""

from __future__ import annotations

import json
import threading

import pytest

from conftest import Client, Mocks, free_port, shifted_policy, user, wait_until
from sidecar.cli import main
from sidecar.tools.stack import Stack, watch_policy


@pytest.fixture(scope="module", params=["lua", "stock"])
def live(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"lifecycle-{request.param}")
    policy, ports = shifted_policy(tmp, extra="clients: {require_key: false, trusted_proxies: ['127.0.0.1/32']}\nlimits: []\n")
    port, admin = free_port(), f"127.0.0.1:{free_port()}"
    st = Stack(policy, tmp / "run", mode=request.param, listen=f"127.0.0.1:{port}", latency_scale=0,
               admin_listen=admin)
    st.start()
    st.client, st.mocks, st.tmp = Client(port), Mocks(ports), tmp
    st.health, st.probe = f"http://{admin}/healthz", f"http://127.0.0.1:{port}/v1/chat/completions"
    st.original = policy.read_text()
    watcher = threading.Thread(target=watch_policy, args=(st,), kwargs={"interval": 0.05}, daemon=True)
    watcher.start()
    yield st
    st.stop()


def write(st, name: str, text: str):
    path = st.tmp / name
    path.write_text(text)
    return path


def deploy(st, candidate, state) -> int:
    return main(["policy", "deploy", str(candidate), "--live", str(st.policy_path), "--state", str(state),
                 "--health", st.health, "--probe", st.probe, "--timeout", "8"])


def test_a_deploy_applies_a_good_policy_and_rolls_back_one_that_fails_its_health_check(live, tmp_path):
    state = tmp_path / "state"
    good = write(live, "good.yaml", live.original.replace("default: {tier: nano}", "default: {tier: fast}"))
    assert deploy(live, good, state) == 0
    assert live.client.chat(user("hi"))[1]["X-Route-Tier"] == "fast"
    good_version = live.file_version()
    # Loads and passes its checks, but every endpoint of the default tier is dead.
    dead = free_port()
    bad_text = good.read_text()
    for name in ("fast-deepseek-r1-8b", "fast-llama-3-1-8b"):
        port = live.mocks.ports[name]
        bad_text = bad_text.replace(f"127.0.0.1:{port}/", f"127.0.0.1:{dead}/")
    bad_text = bad_text.replace("retry_budget: {ratio: 0.2, min_per_second: 10}", "retry_budget: {ratio: 0, min_per_second: 0}")
    bad = write(live, "bad.yaml", bad_text)
    assert deploy(live, bad, state) == 1
    assert live.file_version() == good_version                 # the live file is the good one again
    assert wait_until(lambda: live.sidecar_health()["policy_version"] == good_version, 8)
    status, headers, _ = live.client.chat(user("hi"))
    assert status == 200 and headers["X-Route-Tier"] == "fast"
    history = [json.loads(line) for line in (state / "history.jsonl").read_text().splitlines()]
    assert [h["result"] for h in history] == ["applied", "applied", "rolled-back"]
    assert "probe" in history[-1]["detail"]
    # rollback with no version: the one applied before the current one (the original).
    assert main(["policy", "rollback", "--live", str(live.policy_path), "--state", str(state),
                 "--health", live.health, "--timeout", "8"]) == 0
    assert live.client.chat(user("hi"))[1]["X-Route-Tier"] == "nano"


def test_a_policy_that_does_not_pass_check_is_never_applied(live, tmp_path):
    before = live.file_version()
    broken = write(live, "broken.yaml", live.original.replace("default: {tier: nano}", "default: {tier: nowhere}"))
    assert deploy(live, broken, tmp_path / "state") == 1
    assert live.file_version() == before


def test_diff_says_what_routes_differently(live, capsys):
    other = write(live, "other.yaml", live.original.replace("default: {tier: nano}", "default: {tier: fast}")
                  .replace("  - name: hardest\n", "  - name: hardest-renamed\n"))
    from conftest import ROOT
    assert main(["policy", "diff", str(live.policy_path), str(other),
                 "--cases", str(ROOT / "policies" / "tests" / "demo.yaml")]) == 0
    out = capsys.readouterr().out
    assert "default: tier nano -> tier fast" in out
    assert "rule hardest removed" in out and "rule hardest-renamed added" in out
    assert "'a greeting stays on the cheapest tier': tier nano" in out and "-> tier fast" in out


def test_replay_reports_moves_cost_and_new_denials_from_the_access_log_and_from_bodies(live, tmp_path, capsys):
    log = live.run_dir / "access.log"
    for text in ("hi", "what is 2+2", "thanks"):
        assert live.client.chat(user(text))[0] == 200
    assert live.client.chat(user("hi", model="premium"))[0] == 200
    # The access log is buffered (flushed every second): wait for the last request's line.
    assert wait_until(lambda: log.exists() and ';premium"' in log.read_text(), 5)
    candidate = write(live, "candidate.yaml", live.original.replace("default: {tier: nano}", "default: {tier: premium}")
                      .replace("  - {name: pinned-premium,  when: {model: premium},  tier: premium}\n",
                               "  - {name: pinned-premium,  when: {model: premium},  deny: {status: 403, code: premium_closed}}\n"))
    assert main(["replay", str(log), "--current", str(live.policy_path), "--policy", str(candidate), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    moves = {(m["from"], m["to"]): m["count"] for m in result["moves"]}
    assert moves.get(("nano", "premium"), 0) >= 3
    assert result["new_denials"].get("premium_closed", 0) >= 1
    assert result["cost_usd"]["candidate"] > result["cost_usd"]["current"] > 0
    bodies = tmp_path / "bodies.jsonl"
    bodies.write_text("\n".join(json.dumps(b) for b in (
        user("hi"), {"path": "/v1/embeddings", "body": {"model": "auto", "input": "x"}},
        {"body": user("hi", max_tokens=5_000_000)})) + "\n")
    assert main(["replay", str(bodies), "--current", str(live.policy_path), "--policy", str(candidate)]) == 0
    out = capsys.readouterr().out
    assert "3 requests replayed; 1 (33.3%) route to another tier" in out and "nano -> premium: 1" in out


def test_a_canary_split_is_sticky_per_client_and_a_shadow_endpoint_sees_a_share(live):
    text = live.original.replace(
        "\nrules:\n",
        "\nrules:\n  - {name: canary, when: {headers: {x-canary: 'yes'}}, split: "
        "[{tier: fast, weight: 50}, {tier: balanced, weight: 50}]}\n", 1)
    text += "shadow: {endpoint: expert-grok-4, share: 1.0}\n"
    live.policy_path.write_text(text)
    version = live.file_version()
    assert wait_until(lambda: live.sidecar_health()["policy_version"] == version, 10)
    live.mocks.clear()
    tiers = {}
    for client in range(12):
        ip = f"198.51.100.{client + 1}"
        seen = {live.client.chat(user("hi"), headers={"X-Canary": "yes", "X-Forwarded-For": ip})[1]["X-Route-Tier"]
                for _ in range(3)}
        assert len(seen) == 1               # one client, one side of the split
        tiers[ip] = seen.pop()
    assert set(tiers.values()) == {"fast", "balanced"}   # both sides are used
    # share 1.0: every routed request was mirrored to the shadow; the client saw the primary.
    assert wait_until(lambda: len(live.mocks.received("expert-grok-4")) >= 36, 5)
    status, headers, body = live.client.chat(user("hi"))
    assert status == 200 and headers["X-Mock-Endpoint"] != "expert-grok-4" and b"grok" not in body
    metrics = __import__("urllib.request").request.urlopen(live.health.replace("healthz", "metrics")).read().decode()
    assert 'router_shadow_requests_total{endpoint="expert-grok-4",status_class="2xx",tier="expert"}' in metrics
    live.policy_path.write_text(live.original)
    assert wait_until(lambda: live.sidecar_health()["policy_version"] == live.file_version(), 10)


def test_backup_and_restore_keep_versions_and_limit_state(tmp_path, redis_url):
    import redis
    state = tmp_path / "state"
    (state / "versions").mkdir(parents=True)
    (state / "versions" / "abc.yaml").write_text("version: 1\n")
    client = redis.Redis.from_url(redis_url)
    client.set("hir:limit:tenant:acme", "12345", px=600_000)
    client.set("other:key", "not ours")
    archive = tmp_path / "backup.tar.gz"
    assert main(["policy", "backup", str(archive), "--state", str(state), "--redis", redis_url]) == 0
    client.delete("hir:limit:tenant:acme")
    restored = tmp_path / "restored"
    assert main(["policy", "restore", str(archive), "--state", str(restored), "--redis", redis_url]) == 0
    assert (restored / "versions" / "abc.yaml").read_text() == "version: 1\n"
    assert client.get("hir:limit:tenant:acme") == b"12345"
    assert 0 < client.pttl("hir:limit:tenant:acme") <= 600_000
