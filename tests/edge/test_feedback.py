"""Feedback from nginx's access log: which hops failed, and passive health."""

from __future__ import annotations

import os

import pytest

from sidecar.edge.feedback import MAX_COOLDOWN_S, Feedback, cooldown_seconds, hop_statuses
from sidecar.policy.compiled import REDIRECTS, SERVER_ERRORS, Health


@pytest.mark.parametrize("entry,hops", [
    ({"mode": "lua", "endpoints": ["a", "b", ""], "upstream_status": "503 : 200"}, [("a", "503"), ("b", "200")]),
    ({"mode": "stock", "endpoints": ["a", "b", "c"], "upstream_status": "200 : 502 : 504 : 200"},
     [("a", "502"), ("b", "504"), ("c", "200")]),
    ({"mode": "stock", "endpoints": ["", "", ""], "upstream_status": "429"}, []),   # a denial
    ({"mode": "lua", "endpoints": ["a", "", ""], "upstream_status": ""}, []),
    ({"mode": "lua", "endpoints": ["a", "b", ""], "upstream_status": "502, 200"}, [("a", "200")]),
])
def test_hop_statuses(entry, hops):
    assert hop_statuses(entry) == hops


class Clock:
    now = 100.0

    def __call__(self):
        return self.now


def test_consecutive_failures_mark_an_endpoint_down_and_success_resets():
    clock = Clock()
    health = Health(clock)
    fb = Feedback(lambda: health, threshold=3, down_seconds=10)
    fail = b'<190>Nov 26 05:45:00 hir: {"mode":"lua","endpoints":["a","b",""],"upstream_status":"503 : 200"}'
    ok = b'<190>Nov 26 05:45:00 hir: {"mode":"lua","endpoints":["a","",""],"upstream_status":"200"}'
    fb.datagram(fail)
    fb.datagram(fail)
    fb.datagram(ok)                       # success in between: the count starts over
    fb.datagram(fail)
    fb.datagram(fail)
    assert not health.down_until
    fb.datagram(fail)
    assert "a" in health.down_until and "b" not in health.down_until
    clock.now += 10
    assert health.down_until["a"] <= clock.now
    fb.datagram(b"garbage without json")
    fb.datagram(b"<190>hir: {not json")
    assert fb.received == 6


@pytest.mark.parametrize("refusal", ["401", "403"])
def test_an_endpoint_refusing_the_routers_credential_counts_as_failing(refusal):
    clock = Clock()
    health = Health(clock)
    fb = Feedback(lambda: health, threshold=3, down_seconds=10)
    for _ in range(3):
        fb.record({"mode": "lua", "endpoints": ["a", "b", ""], "upstream_status": f"{refusal} : 200"})
    assert health.down_until == {"a": clock.now + 10}


@pytest.mark.parametrize("status", [*sorted(REDIRECTS | SERVER_ERRORS), 600, 799, 999])
def test_every_server_error_or_redirect_an_endpoint_answers_counts_as_failing(status):
    # 529 is Anthropic's overloaded_error, 520-527 and 530 Cloudflare's; they, and
    # redirects, used to count as answers, so such an endpoint stayed in rotation.
    health = Health(Clock())
    fb = Feedback(lambda: health, threshold=3, down_seconds=10)
    for _ in range(3):
        fb.record({"mode": "stock", "endpoints": ["a", "b", ""], "upstream_status": f"200 : {status} : 200"})
    assert list(health.down_until) == ["a"]


@pytest.mark.parametrize("status", [200, 201, 400, 404, 409, 413, 422])
def test_an_endpoints_own_answer_is_no_failure(status):
    health = Health(Clock())
    fb = Feedback(lambda: health, threshold=1, down_seconds=10)
    fb.record({"mode": "lua", "endpoints": ["a", "", ""], "upstream_status": str(status)})
    assert health.down_until == {}


@pytest.mark.parametrize("retry_after, hops, served, cooldown", [
    # One hop answered 429 and it went to the client: nginx's own $upstream_http_retry_after.
    (["", "", "7"], "429", "a", 7.0),
    # Hop 0 answered 429, hop 1 served: hop 0's value was saved by hop 1's location.
    (["30", "", ""], "429 : 200", "a", 30.0),
    (["", "12", "3"], "502 : 429 : 200", "b", 12.0),
    # Absent or an HTTP date: the default; huge: bounded.
    (["", "", ""], "429", "a", 5.0),
    (["", "", "Wed, 21 Oct 2026 07:28:00 GMT"], "429", "a", 5.0),
    (["", "", "86400"], "429", "a", 300.0),
    # Not delay-seconds: the default. "nan" used to make a cooldown that never ended.
    (["", "", "nan"], "429", "a", 5.0),
    (["", "", "inf"], "429", "a", 5.0),
    (["", "", "-3"], "429", "a", 5.0),
    (["", "", "1_0"], "429", "a", 5.0),
    (["", "", "\u0663"], "429", "a", 5.0),
    (["", "", "2.5"], "429", "a", 2.5),
])
def test_a_429_cools_its_endpoint_down_for_its_retry_after(retry_after, hops, served, cooldown):
    clock = Clock()
    health = Health(clock)
    fb = Feedback(lambda: health, threshold=3, down_seconds=10)
    fb.record({"mode": "lua", "endpoints": ["a", "b", "c"], "upstream_status": hops,
               "retry_after": retry_after})
    assert health.down_until[served] == pytest.approx(clock.now + cooldown)
    assert fb.cooldowns == {served: 1}
    assert served not in fb.failures       # rate-limited is not broken


def test_a_retry_after_of_zero_leaves_the_endpoint_in_rotation():
    health = Health(Clock())
    fb = Feedback(lambda: health)
    fb.record({"mode": "lua", "endpoints": ["a", "", ""], "upstream_status": "429", "retry_after": ["", "", "0"]})
    assert not health.down_until


def test_fallback_hops_are_charged_to_the_retry_budget():
    from sidecar.edge.retry_budget import RetryBudget

    budget = RetryBudget(ratio=0.0, floor=0.1, clock=Clock())   # one retry per 10 s window
    fb = Feedback(lambda: Health(Clock()), retries=budget)
    assert budget.allow()
    fb.record({"mode": "lua", "endpoints": ["a", "b", ""], "upstream_status": "503 : 200"})
    assert budget.total_retries == 1 and not budget.allow()


def test_the_queue_sysctl_is_named_when_it_is_below_what_a_busy_sidecar_needs(tmp_path):
    from sidecar.edge.feedback import QUEUE_ADVISED, queue_warning
    sysctl = tmp_path / "max_dgram_qlen"
    sysctl.write_text("10\n")
    assert "net.unix.max_dgram_qlen is 10" in queue_warning(sysctl)
    sysctl.write_text(f"{QUEUE_ADVISED}\n")
    assert queue_warning(sysctl) is None
    assert queue_warning(tmp_path / "absent") is None  # not Linux: nothing to say


class Collecting:
    def __init__(self, fail_on: bytes = b""):
        self.seen, self.fail_on = [], fail_on

    def datagram(self, data: bytes) -> None:
        if data == self.fail_on:
            raise ValueError("a bug in reading feedback")
        self.seen.append(data)


def test_drain_reads_every_queued_datagram_and_returns_when_none_is_left(tmp_path):
    import socket

    from sidecar.edge.feedback import _drainer
    path = str(tmp_path / "fb.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sink = Collecting(fail_on=b"bad")
        drain = _drainer(receiver, sink)
        drain()  # nothing queued: returns at once
        assert sink.seen == []
        for i in range(8):
            sender.sendto(b"line %d" % i, path)
        drain()
        assert sink.seen == [b"line %d" % i for i in range(8)]
        # A handler bug is logged, never raised into the decision that called drain.
        sender.sendto(b"bad", path)
        sender.sendto(b"after", path)
        drain()
        drain()
        assert sink.seen[-1] == b"after"
        receiver.close()
        drain()  # a closed socket: nothing to read, no error
    finally:
        sender.close()
        receiver.close()


@pytest.mark.parametrize("queue,drained", [("10", True), ("512", False), ("4096", False)])
def test_only_a_short_kernel_queue_gets_drained_after_each_answer(tmp_path, queue, drained):
    import asyncio

    from sidecar.edge.feedback import listen
    sysctl = tmp_path / "max_dgram_qlen"
    sysctl.write_text(queue)

    async def bind():
        transport, drain = await listen(str(tmp_path / "fb.sock"), Collecting(), sysctl)
        transport.close()
        return drain

    assert (asyncio.run(bind()) is not None) == drained


@pytest.mark.parametrize("address,udp,server", [
    ("127.0.0.1:9190", ("127.0.0.1", 9190), "127.0.0.1:9190"),
    ("localhost:5140", ("localhost", 5140), "127.0.0.1:5140"),
    ("[::1]:9190", ("::1", 9190), "[::1]:9190"),
    ("/run/hir/feedback.sock", None, "unix:/run/hir/feedback.sock"),
    ("run/feedback-0.sock", None, "unix:run/feedback-0.sock"),
    ("/tmp/odd:123", None, "unix:/tmp/odd:123"),    # a path, even with a colon and digits
    ("feedback.sock", None, "unix:feedback.sock"),
])
def test_a_feedback_address_is_udp_on_a_port_or_a_unix_socket_path(address, udp, server):
    from sidecar.edge.feedback import syslog_server, udp_address
    assert udp_address(address) == udp
    assert syslog_server(address) == server


def test_each_worker_listens_on_its_own_port_or_path():
    from sidecar.edge.feedback import for_worker
    name = lambda path, i: f"{path}-{i}"  # noqa: E731 - the server's own naming, stubbed
    assert [for_worker("127.0.0.1:9190", i, name) for i in range(3)] == [
        "127.0.0.1:9190", "127.0.0.1:9191", "127.0.0.1:9192"]
    assert for_worker("[::1]:9190", 1, name) == "[::1]:9191"
    assert for_worker("/run/fb.sock", 2, name) == "/run/fb.sock-2"


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "192.168.0.1", "::", "example.com"])
def test_udp_feedback_refuses_an_address_off_loopback(host):
    import asyncio

    from sidecar.edge.feedback import listen
    with pytest.raises(ValueError, match="loopback"):
        asyncio.run(listen(f"{host}:9190" if ":" not in host else f"[{host}]:9190", Collecting()))


def test_udp_feedback_is_read_by_the_loop_without_a_drain_and_its_drops_are_counted(tmp_path):
    """A burst far past a unix socket's 10-datagram queue, sent while the loop is
    busy: every line arrives; the kernel's drop count for the socket is read from
    /proc/net/udp (a fake table here, with this socket's inode)."""
    import asyncio
    import os
    import socket

    from sidecar.edge import feedback as fb
    from sidecar.edge.outcomes import Outcomes

    class Sink(Collecting):
        outcomes = Outcomes(lambda: None)

    async def run():
        sink = Sink()
        transport, drain = await fb.listen("127.0.0.1:0", sink)
        host, port = transport.get_extra_info("sockname")
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(500):  # the loop does not run meanwhile
            sender.sendto(b"line %d" % i, (host, port))
        sender.close()
        for _ in range(200):
            if len(sink.seen) == 500:
                break
            await asyncio.sleep(0.01)
        inode = os.fstat(transport.get_extra_info("socket").fileno()).st_ino
        transport.close()
        return drain, sink, inode

    drain, sink, inode = asyncio.run(run())
    assert drain is None
    assert sink.seen == [b"line %d" % i for i in range(500)]
    table = tmp_path / "udp"
    table.write_text(
        "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n"
        " 4945: 0100007F:9EF8 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 12 2 00000000a65ff0c1 3\n"
        f" 4946: 0100007F:9EF9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 {inode} 2 00000000a65ff0c2 41\n")
    assert fb.udp_drops(inode, (tmp_path / "absent", table)) == 41
    assert fb.udp_drops(999999999, (table,)) == 0
    assert fb.udp_drops(inode) == 0  # the real table: the socket is gone, or dropped nothing
    assert Sink.outcomes.dropped is not None  # wired to this socket's count for /metrics


def test_the_kernels_own_drop_count_is_read_for_a_real_overflowing_socket():
    """Not a table written by hand: a loopback UDP socket with a tiny buffer, sent
    more than it holds and never read, shows its drops in /proc/net/udp."""
    import socket
    from sidecar.edge import feedback as fb
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        receiver.bind(("127.0.0.1", 0))
        inode = os.fstat(receiver.fileno()).st_ino
        assert fb.udp_drops(inode) == 0
        sent = 200
        for _ in range(sent):
            sender.sendto(b"x" * 1000, receiver.getsockname())
        receiver.setblocking(False)
        received = 0
        while True:
            try:
                receiver.recv(2048)
            except BlockingIOError:
                break
            received += 1
        assert 0 < received < sent
        assert fb.udp_drops(inode) == sent - received


from hypothesis import given, strategies as st  # noqa: E402 - beside the tests that use it


@given(port=st.integers(0, 65535),
       host=st.sampled_from(["127.0.0.1", "127.3.9.1", "::1", "localhost"]))
def test_any_loopback_address_renders_for_nginx_and_reads_back_the_same(port, host):
    from sidecar.edge.feedback import syslog_server, udp_address
    written = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    rendered = syslog_server(written)
    assert not rendered.startswith("unix:")
    back = udp_address(rendered)
    assert back == ("127.0.0.1" if host == "localhost" else host, port)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1).map(
    lambda s: "/" + s.replace("\x00", "")))
def test_any_absolute_path_is_a_unix_socket_whatever_it_contains(path):
    from sidecar.edge.feedback import syslog_server, udp_address
    assert udp_address(path) is None
    assert syslog_server(path) == f"unix:{path}"


@given(st.ip_addresses(v=4).filter(lambda a: not a.is_loopback), st.integers(1, 65535))
def test_udp_feedback_refuses_every_address_off_loopback(address, port):
    from sidecar.edge.feedback import _udp_socket
    with pytest.raises(ValueError, match="loopback"):
        _udp_socket(str(address), port)


@given(st.text(max_size=40))
def test_any_retry_after_gives_a_finite_cooldown_within_bounds(value):
    seconds = cooldown_seconds(value)
    assert 0.0 <= seconds <= MAX_COOLDOWN_S
    stripped = value.strip(" \t")
    if stripped.isascii() and stripped.isdigit() and len(stripped) <= 9:
        assert seconds == min(int(stripped), MAX_COOLDOWN_S)
