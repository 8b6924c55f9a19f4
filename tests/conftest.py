"""Shared fixtures: a port-shifted copy of a policy and the real stack around it."""

from __future__ import annotations

import http.client
import json
import random
import re
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from sidecar.tools.stack import Stack

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "policies" / "demo.yaml"
HASH = "cdd01ef066bc6cf2"
OLD_HASH = "0123456789abcdef"
EXPIRED_HASH = "fedcba9876543210"
# What every response carries, whoever answered (docs/operations.md, "What crosses the edge").
SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "X-Constitutional-Hash": HASH,
}


_HANDED_OUT: set[int] = set()


def _below_ephemeral_ports() -> range:
    """Ports under the kernel's ephemeral range. A port from bind(0) lies inside
    it, where every outgoing connection also takes its source port: a client's
    connection could hold the port before the server it was handed to binds it."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(max(1024, low - 12000), low)


_PORTS = _below_ephemeral_ports()


def free_port() -> int:
    """A loopback port nothing listens on now, outside the ephemeral range where
    the kernel leaves room for one, and one this session has not handed out
    before: two callers in one fixture (a policy's endpoints, nginx's listens)
    would otherwise collide when their servers start."""
    while True:
        port = random.choice(_PORTS) if len(_PORTS) >= 1000 else 0
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def shifted_policy(tmp_path: Path, source: Path = DEMO, extra: str = "") -> tuple[Path, dict]:
    """A copy of `source` whose loopback endpoints listen on free ports.
    Returns the path and {endpoint name: port}."""
    text = source.read_text()
    if "clients:" in extra or "limits:" in extra:
        text = text.split("\n# Who may call")[0] + "\n"  # the test brings its own
    ports = {}

    def swap(match):
        port = free_port()
        ports[match.group(1)] = port
        return f'{match.group(0).split("127.0.0.1:")[0]}127.0.0.1:{port}/'

    text = re.sub(r'name: ([a-z0-9-]+),[^\n]*?127\.0\.0\.1:\d+/', swap, text)
    # Tests pin an endpoint with the X-Test-Pin header, so fallbacks are deterministic.
    pins = "".join(f"  - {{name: test-pin-{n}, when: {{headers: {{x-test-pin: {n}}}}}, endpoint: {n}}}\n"
                   for n in ports)
    text = text.replace("\nrules:\n", "\nrules:\n" + pins, 1)
    # A rotation in progress: one old hash still accepted, one whose grace has ended.
    text = text.replace(f"constitutional_hash: {HASH}\n", f"constitutional_hash: {HASH}\nprevious_hashes:\n"
                        f"  - {{hash: {OLD_HASH}, until: \"2099-01-01T00:00:00Z\"}}\n"
                        f"  - {{hash: {EXPIRED_HASH}, until: \"2001-01-01T00:00:00Z\"}}\n", 1)
    path = tmp_path / source.name
    path.write_text(text + extra)
    return path, ports


class Client:
    """Plain HTTP/1.1 over a real socket to nginx or a mock endpoint."""

    def __init__(self, port: int):
        self.port = port

    def request(self, method: str, path: str, body: bytes | dict | None = None,
                headers: dict | None = None, timeout: float = 10):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, resp.headers, data

    def chat(self, body, headers=None, path="/v1/chat/completions", method="POST", **kw):
        base = {"Content-Type": "application/json", "X-Constitutional-Hash": HASH}
        base.update(headers or {})
        for name in [k for k, v in base.items() if v is None]:
            del base[name]
        return self.request(method, path, body, base, **kw)


class Mocks:
    def __init__(self, ports: dict):
        self.ports = ports

    def received(self, name: str) -> list:
        return json.loads(Client(self.ports[name]).request("GET", "/_mock/requests")[2])

    def total_received(self) -> int:
        return sum(len(self.received(name)) for name in self.ports)

    def clear(self) -> None:
        for name in self.ports:
            Client(self.ports[name]).request("DELETE", "/_mock/requests")
            self.fault(name, "")

    def fault(self, name: str, fault: str, headers: dict | None = None) -> None:
        Client(self.ports[name]).request("POST", "/_mock/faults", {"fault": fault, "headers": headers or {}})


def user(text: str, **extra) -> dict:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}


@pytest.fixture(scope="module", params=["lua", "stock"])
def stack(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"stack-{request.param}")
    policy, ports = shifted_policy(tmp)
    listen_port = free_port()
    st = Stack(policy, tmp / "run", mode=request.param, listen=f"127.0.0.1:{listen_port}",
               latency_scale=0.25)
    st.start()
    st.client = Client(listen_port)
    st.mocks = Mocks(ports)
    yield st
    st.stop()


@pytest.fixture(scope="module", params=["lua", "stock"])
def tls_both(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"tls-{request.param}")
    policy, _ = shifted_policy(tmp)
    st = Stack(policy, tmp / "run", mode=request.param, listen=f"127.0.0.1:{free_port()}",
               latency_scale=0, tls_listen=f"127.0.0.1:{free_port()}")
    st.start()
    st.tls_port = int(st.tls_listen.rpartition(":")[2])
    yield st
    st.stop()


def fresh_mocks(st):
    """`st` with its mock endpoints' faults and records cleared before and after a test."""
    st.mocks.clear()
    yield st
    st.mocks.clear()


@pytest.fixture
def clean(stack):
    yield from fresh_mocks(stack)


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def watched_stack(tmp_path: Path, mode: str, extra: str, latency_scale: float) -> Stack:
    """The demo policy plus `extra` on free ports, started, with `.client`, `.mocks`
    and `.metrics_url` (the sidecar's admin address, for `metric`)."""
    policy, ports = shifted_policy(tmp_path, extra=extra)
    port, admin = free_port(), f"127.0.0.1:{free_port()}"
    st = Stack(policy, tmp_path / "run", mode=mode, listen=f"127.0.0.1:{port}", latency_scale=latency_scale,
               admin_listen=admin)
    st.start()
    st.client, st.mocks, st.metrics_url = Client(port), Mocks(ports), f"http://{admin}/metrics"
    return st


def metric(st, name: str, **labels) -> float:
    """One sample of the stack's metrics (`st.metrics_url`) with exactly these labels, or 0."""
    text = urllib.request.urlopen(st.metrics_url).read().decode()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    found = re.search(rf"^{name}{{{re.escape(wanted)}}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server (Debian's) on a private unix socket for the session."""
    import shutil
    import subprocess

    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed (scripts/setup installs it)")
    tmp = tmp_path_factory.mktemp("redis")
    sock = tmp / "redis.sock"
    proc = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(sock),
                             "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
                             "--enable-debug-command", "yes", "--dir", str(tmp)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_until(sock.exists, 10):
        proc.kill()
        pytest.fail("redis-server did not start")
    yield f"unix://{sock}"
    proc.terminate()
    proc.wait(10)
