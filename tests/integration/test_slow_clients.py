"""Slow clients are shed by nginx before they reach the sidecar, and the
sidecar stays fast for everyone else meanwhile; `serve --workers` runs one
process per socket."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import DEMO, HASH, Client, Mocks, free_port, shifted_policy, user, wait_until
from sidecar.tools.stack import Stack


@pytest.fixture(scope="module")
def impatient(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slow")
    policy, ports = shifted_policy(tmp)
    port = free_port()
    st = Stack(policy, tmp / "run", mode="lua", listen=f"127.0.0.1:{port}", latency_scale=0,
               client_timeout="1s")
    st.start()
    st.client, st.mocks = Client(port), Mocks(ports)
    yield st
    st.stop()


def test_a_client_that_stalls_mid_body_is_cut_off_and_others_are_served(impatient):
    slow = socket.create_connection(("127.0.0.1", impatient.client.port))
    slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"X-Constitutional-Hash: " + HASH.encode() + b"\r\nContent-Length: 500\r\n\r\n{\"mess")
    started = time.monotonic()
    status, headers, _ = impatient.client.chat(user("hi"))  # served while the slow one waits
    assert status == 200 and time.monotonic() - started < 0.5
    slow.settimeout(5)
    answer = b""
    while chunk := slow.recv(65536):
        answer += chunk
    assert time.monotonic() - started < 4
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408")
    assert len(impatient.mocks.received(headers["X-Mock-Endpoint"])) == 1


def test_serve_workers_runs_one_process_per_socket(tmp_path):
    base = tmp_path / "sc.sock"
    proc = subprocess.Popen([sys.executable, "-m", "sidecar", "serve", "--policy", str(DEMO),
                             "--socket", str(base), "--workers", "3"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sockets = [tmp_path / f"sc-{i}.sock" for i in range(3)]
    try:
        assert wait_until(lambda: all(s.exists() for s in sockets), 15)
        for path in sockets:
            s = socket.socket(socket.AF_UNIX)
            assert wait_until(lambda: s.connect_ex(str(path)) == 0, 5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            assert json.loads(data.split(b"\r\n\r\n", 1)[1])["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert wait_until(lambda: not any(_alive(s) for s in sockets), 5)


def _alive(path) -> bool:
    s = socket.socket(socket.AF_UNIX)
    try:
        return s.connect_ex(str(path)) == 0
    finally:
        s.close()


@pytest.fixture(scope="module", params=["lua", "stock"])
def deadline(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"deadline-{request.param}")
    policy, ports = shifted_policy(tmp)
    port = free_port()
    # Each read is quick (under client_timeout); the whole request is not.
    st = Stack(policy, tmp / "run", mode=request.param, listen=f"127.0.0.1:{port}",
               latency_scale=0, client_timeout="5s", request_timeout_s=2)
    st.start()
    st.client, st.mocks = Client(port), Mocks(ports)
    yield st
    st.stop()


def test_a_body_dripped_in_is_never_forwarded_and_lua_mode_cuts_it_at_the_deadline(deadline):
    gap = 0.1
    body = b'{"messages":[{"role":"user","content":"drip"}]}'  # ~4.8 s at one byte per gap
    s = socket.create_connection(("127.0.0.1", deadline.client.port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"X-Constitutional-Hash: " + HASH.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body))
    started = time.monotonic()
    answer = b""
    s.settimeout(0.05)
    for i in range(len(body)):
        try:
            s.sendall(body[i:i + 1])
        except OSError:
            break
        try:
            answer += s.recv(65536)
        except (socket.timeout, BlockingIOError):
            pass
        except OSError:
            break
        if answer:
            break
        time.sleep(gap)
    s.settimeout(10)
    try:
        while chunk := s.recv(65536):
            answer += chunk
    except OSError:
        pass
    s.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"request_timeout"' in answer
    if deadline.mode == "lua":
        assert time.monotonic() - started < 4  # cut at ~2 s, not when the body ends
    assert deadline.mocks.total_received() == 0


def test_a_prompt_body_within_the_deadline_is_served(deadline):
    assert deadline.client.chat(user("hi"))[0] == 200
