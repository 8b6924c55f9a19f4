"""Editing the policy YAML changes where requests go, without dropping anything."""

from __future__ import annotations

import signal

import pytest

from conftest import Client, Mocks, free_port, shifted_policy, user
from sidecar.policy.spec import PolicyError
from sidecar.tools.stack import Stack


@pytest.fixture
def own_stack(tmp_path):
    policy, ports = shifted_policy(tmp_path)
    port = free_port()
    st = Stack(policy, tmp_path / "run", mode="lua", listen=f"127.0.0.1:{port}", latency_scale=0)
    st.start()
    st.client, st.mocks = Client(port), Mocks(ports)
    yield st
    st.stop()


def test_an_edited_rule_takes_effect_on_reload(own_stack):
    assert own_stack.client.chat(user("hi"))[1]["X-Route-Tier"] == "nano"
    path = own_stack.policy_path
    path.write_text(path.read_text().replace("default: {tier: nano}", "default: {tier: premium}"))
    own_stack.reload()
    status, headers, _ = own_stack.client.chat(user("hi"))
    assert status == 200 and headers["X-Route-Tier"] == "premium"


def test_an_endpoint_added_by_an_edit_is_routable(own_stack):
    path = own_stack.policy_path
    new_port = own_stack.mocks.ports["expert-grok-4"]  # reuse a live mock under a new name
    text = path.read_text().replace(
        "\nrules:\n",
        f'\n  - {{name: expert-grok-4-b, tier: expert, url: "http://127.0.0.1:{new_port}/v1", model: grok-4b}}\n'
        "rules:\n  - {name: to-new, when: {headers: {x-new: yes}}, endpoint: expert-grok-4-b}\n", 1)
    path.write_text(text)
    own_stack.reload()
    status, headers, _ = own_stack.client.chat(user("hi"), headers={"X-New": "yes"})
    assert status == 200
    assert headers["X-Route-Endpoint"] == "expert-grok-4-b"
    assert headers["X-Route-Model"] == "grok-4b"


def test_a_broken_edit_keeps_the_running_policy(own_stack):
    before = own_stack.sidecar_health()["policy_version"]
    path = own_stack.policy_path
    good = path.read_text()
    path.write_text(good.replace("default: {tier: nano}", "default: {tier: nowhere}"))
    with pytest.raises(PolicyError, match="default.tier: unknown tier"):
        own_stack.reload()
    # The sidecar, told directly, refuses it too and keeps serving.
    own_stack.procs["sidecar-0"].send_signal(signal.SIGHUP)
    status, headers, _ = own_stack.client.chat(user("hi"))
    assert status == 200 and headers["X-Route-Tier"] == "nano"
    assert own_stack.sidecar_health()["policy_version"] == before
