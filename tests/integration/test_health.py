"""Passive health through the feedback channel: nginx's access log tells the
sidecar an endpoint keeps failing; decisions stop choosing it until it recovers."""

from __future__ import annotations

import os
import stat

import pytest

from conftest import Client, Mocks, free_port, shifted_policy, wait_until
from sidecar.tools.stack import Stack

NANO = {"model": "nano", "messages": [{"role": "user", "content": "hi"}]}


# The feedback channel's two transports: UDP on loopback (the default) and a unix
# datagram socket (a path).
@pytest.fixture(params=[("lua", "udp"), ("stock", "udp"), ("lua", "unix"), ("stock", "unix")],
                ids="-".join)
def healthy(request, tmp_path):
    policy, ports = shifted_policy(tmp_path)
    port = free_port()
    mode, feedback = request.param
    st = Stack(policy, tmp_path / "run", mode=mode, listen=f"127.0.0.1:{port}",
               latency_scale=0, health_down_seconds=2, feedback=feedback)
    st.start()
    st.client, st.mocks = Client(port), Mocks(ports)
    yield st
    st.stop()


def test_the_sidecars_unix_sockets_admit_its_own_user_only(healthy):
    """The decision socket's answers carry the providers' credentials, and a
    feedback line moves health: mode 600, and nginx (the same user) still gets
    through, which the test below shows for each transport."""
    paths = healthy.sockets + [p for p in healthy.feedback_sockets if p.startswith("/")]
    assert len(paths) == (2 if healthy.feedback_sockets[0].startswith("/") else 1)
    for path in paths:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_a_failing_endpoint_is_taken_out_of_rotation_then_back(healthy):
    sick = "nano-qwen3-0-6b"
    healthy.mocks.fault(sick, "status=503")
    for _ in range(8):  # weighted 2:1:1, so the sick endpoint is picked every other time
        status, headers, _ = healthy.client.chat(NANO)
        assert status == 200 and headers["X-Route-Endpoint"] != sick
    assert wait_until(lambda: sick in healthy.sidecar_health()["endpoints_down"], 5)
    before = len(healthy.mocks.received(sick))
    for _ in range(8):
        status, headers, _ = healthy.client.chat(NANO)
        assert status == 200
    assert len(healthy.mocks.received(sick)) == before  # not even tried
    healthy.mocks.fault(sick, "")
    assert wait_until(lambda: sick not in healthy.sidecar_health()["endpoints_down"], 5)
    served = {healthy.client.chat(NANO)[1]["X-Route-Endpoint"] for _ in range(8)}
    assert sick in served
