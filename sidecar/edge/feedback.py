"""The feedback channel: nginx's own access log, sent as syslog datagrams to the
sidecar, tells it how each forwarded request went (DESIGN.md). Non-blocking for
nginx and free on the hot path.

The datagrams go over UDP on loopback (an address HOST:PORT) or a unix datagram
socket (a path). UDP is the default: a unix socket queues only
net.unix.max_dgram_qlen datagrams (10 unless the host raised it), so under load
nginx dropped lines, or the sidecar had to read after every answer; a UDP socket
queues as many bytes as its receive buffer, which the sidecar sets itself
(docs/operations.md, "Endpoint health (the feedback channel)").

Here it drives passive health: an endpoint that fails `threshold` times in a row
(5xx, a missed first-byte deadline, or no answer) is marked down for
`down_seconds`, so decisions stop sending traffic to it and its fallbacks take
over; one success resets it. An endpoint that answers 429 cools down at once for
as long as its Retry-After says (bounded), and the retry budget is charged for
every fallback hop nginx made.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import socket
from pathlib import Path

import orjson

from sidecar.edge.conversations import USAGE_FIELDS
from sidecar.edge.estimates import TokenEstimates
from sidecar.policy.compiled import REDIRECTS, SERVER_ERRORS

log = logging.getLogger("sidecar.edge.feedback")

# Every 5xx and redirect, and 401/403 too: an endpoint that refuses the router's
# credential, or sends it elsewhere, fails every request. "-": no answer at all.
FAILED = frozenset({"401", "403", "-", *map(str, REDIRECTS | SERVER_ERRORS)})
NOT_HTTP = ("6", "7", "8", "9")   # a status past 599 (nginx relays any three digits)
DEFAULT_COOLDOWN_S = 5.0      # a 429 without a usable Retry-After
MAX_COOLDOWN_S = 300.0


# RFC 9110's delay-seconds (digits), and the decimals some providers send. Not
# Python's float(): it reads "nan" (a cooldown that never ends and never shows as
# down), "inf", "1_0" and other scripts' digits.
DELAY_SECONDS = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,6})?")


def cooldown_seconds(value: str) -> float:
    """Retry-After in seconds (delay-seconds form; an HTTP date, or anything else,
    counts as absent)."""
    value = (value or "").strip(" \t")
    if not DELAY_SECONDS.fullmatch(value):
        return DEFAULT_COOLDOWN_S
    return min(float(value), MAX_COOLDOWN_S)

# What the feedback log says of each request (the nginx log_format rendered by
# nginx_render): the decision, each hop's status and times, sizes, and the token
# usage lua mode parsed from the answer. Bounded identifiers only: names from the
# policy, never keys, addresses or prompt text.
FIELDS = {
    "request_id": "$hir_request_id", "internal_id": "$request_id", "endpoints": ["$route_endpoint", "$route_fallback", "$route_fallback2"],
    "served": "$route_served", "hop": "$route_hop", "tier": "$route_served_tier", "rule": "$route_rule",
    "tenant": "$route_tenant", "features": "$route_features", "stream": "$route_stream", "status": "$status",
    "upstream_status": "$upstream_status", "upstream_connect_time": "$upstream_connect_time",
    "upstream_header_time": "$upstream_header_time", "upstream_response_time": "$upstream_response_time",
    "request_time": "$request_time", "bytes_in": "$request_length", "bytes_out": "$bytes_sent",
    "upstream_body_bytes": "$upstream_response_length", "prompt_tokens": "$route_usage_prompt",
    "completion_tokens": "$route_usage_completion", "cache_read_tokens": "$route_usage_cache_read",
    "cache_write_tokens": "$route_usage_cache_write",
    "cache_write_1h_tokens": "$route_usage_cache_write_1h", "web_searches": "$route_usage_web_searches",
    "response_id": "$route_response_id",
    # The response cache's verdict (HIT: nginx answered, no endpoint did; "" without one).
    "cache": "$upstream_cache_status",
    # Retry-After of each hop that answered one: the failed hops', then the last.
    "retry_after": ["$route_retry_after1", "$route_retry_after2", "$upstream_http_retry_after"],
}
# nginx variables the server block initialises (set "") so every log line has them.
FEEDBACK_VARIABLES = ("route_served", "route_hop", "route_served_tier", "route_rule", "route_tenant",
                      "route_stream", "route_usage_prompt", "route_usage_completion",
                      "route_usage_cache_read", "route_usage_cache_write", "route_usage_cache_write_1h",
                      "route_usage_web_searches",
                      "route_response_id",
                      "route_retry_after1", "route_retry_after2", "route_features")


# The shadow relay's line (sidecar.tools.nginx_hops.shadow_relay_server): the
# mirrored request's outcome, and what its tokens are estimated from.
SHADOW_FIELDS = {"shadow": "1", "internal_id": "$request_id", "served": "$route_shadow", "status": "$status",
                 "upstream_status": "$upstream_status", "upstream_header_time": "$upstream_header_time",
                 "upstream_response_time": "$upstream_response_time",
                 "features": "$http_x_hir_shadow_features", "stream": "$http_x_hir_shadow_stream",
                 "bytes_in": "$request_length", "upstream_body_bytes": "$upstream_response_length"}


def _log_format() -> str:
    fields = {"mode": "%s", **FIELDS}
    body = orjson.dumps(fields).decode().replace("'", "")
    return f"log_format hir_feedback escape=json '{body}';"


LOG_FORMAT = _log_format()
SHADOW_LOG_FORMAT = ("log_format hir_shadow escape=json '"
                     + orjson.dumps(SHADOW_FIELDS).decode().replace("'", "") + "';")


def hop_statuses(entry: dict) -> list[tuple[str, str]]:
    """[(endpoint, status)] for each endpoint hop nginx tried, in order.

    $upstream_status separates internal redirects with ':' and servers within a
    group with ','. In stock mode the first group is the sidecar itself."""
    raw = entry.get("upstream_status", "")
    names = entry.get("endpoints", ())
    if entry.get("mode") == "lua" and raw.isdigit() and names and names[0]:
        return [(names[0], raw)]  # one hop answered: the usual case, parsed cheaply
    groups = [g.strip() for g in raw.split(":") if g.strip()]
    if entry.get("mode") == "stock" and groups:
        groups = groups[1:]
    names = [n for n in entry.get("endpoints", []) if n]
    return [(name, group.split(",")[-1].strip()) for name, group in zip(names, groups)]


def _retry_after(entry: dict, hop: int, hops: int) -> str:
    """Hop `hop`'s Retry-After: a failed hop's was saved by the next hop's location,
    the last hop's is nginx's $upstream_http_retry_after."""
    values = entry.get("retry_after") or ("", "", "")
    if hop == hops - 1:
        return values[-1]
    return values[hop] if hop < len(values) - 1 else ""


class Feedback:
    def __init__(self, health_ref, threshold: int = 3, down_seconds: float = 10.0, outcomes=None,
                 settlements=None, policy_ref=None, retries=None, conversations=None,
                 share: tuple[int, int] = (0, 1)):
        self.health_ref = health_ref  # callable -> the live policy's Health
        self.threshold = threshold
        self.down_seconds = down_seconds
        self.failures: dict[str, int] = {}
        self.received = 0
        self.outcomes = outcomes      # sidecar.edge.outcomes.Outcomes, or None
        self.estimates = TokenEstimates()  # its defaults, when there are no outcomes to learn them
        self.settlements = settlements  # sidecar.edge.settlement.Settlements, or None
        self.policy_ref = policy_ref
        self.retries = retries        # sidecar.edge.retry_budget.RetryBudget, or None
        self.cooldowns: dict[str, int] = {}   # endpoint -> 429 cooldowns started
        self.conversations = conversations  # sidecar.edge.conversations.Conversations, or None
        # (this process's index, how many read every line): each counts its share of the
        # traffic metrics, so summing the processes' metrics gives the traffic, once.
        self.share = share
        if outcomes is not None:
            outcomes.failures = self.failures
            outcomes.cooldowns = self.cooldowns
            outcomes.retries = retries

    def record(self, entry: dict) -> None:
        self.received += 1
        counts = self._counts(entry)
        if entry.get("shadow"):  # a mirrored request: its own metrics, nothing else
            if self.outcomes is not None and counts:
                self.outcomes.record_shadow(entry)
            return
        due = self._usage_due(entry)
        if self.outcomes is not None and counts:
            self.outcomes.record(entry)
        if self.settlements is not None:
            estimates = self.outcomes.estimates if self.outcomes is not None else self.estimates
            if not entry.get("deferred"):
                self.settlements.settle(entry, self.policy_ref(), estimates)
            self.settlements.expire()
        for finished in due:   # a background response's usage, known at last
            if self.outcomes is not None and self._counts(finished):
                self.outcomes.count_usage(finished)
            if self.settlements is not None:
                self.settlements.settle(finished, self.policy_ref(), estimates)
        health = self.health_ref()
        hops = hop_statuses(entry)
        if self.retries is not None and len(hops) > 1:
            self.retries.spend(len(hops) - 1)
        for i, (endpoint, status) in enumerate(hops):
            if status == "429":
                # Rate-limited, not broken: out of rotation for its Retry-After.
                seconds = cooldown_seconds(_retry_after(entry, i, len(hops)))
                if seconds > 0:
                    health.mark_down(endpoint, seconds)
                    self.cooldowns[endpoint] = self.cooldowns.get(endpoint, 0) + 1
            elif status in FAILED or status[:1] in NOT_HTTP:
                count = self.failures.get(endpoint, 0) + 1
                self.failures[endpoint] = count
                if count >= self.threshold:
                    health.mark_down(endpoint, self.down_seconds)
                    self.failures[endpoint] = 0
                    log.warning("endpoint %s marked down for %.0fs after %d failures",
                                endpoint, self.down_seconds, count)
            else:
                self.failures.pop(endpoint, None)

    def _counts(self, entry: dict) -> bool:
        """Whether this process counts `entry` in the traffic metrics: its share of
        nginx's request ids (random hex), or all of them when it is the only reader."""
        index, count = self.share
        if count == 1:
            return True
        tail = (entry.get("internal_id") or "")[-8:]
        try:
            return int(tail, 16) % count == index
        except ValueError:
            return index == 0

    def _usage_due(self, entry: dict) -> list[dict]:
        """Background Responses requests whose usage is now due: the one `entry`
        retrieved finished, and those whose wait ended (sidecar.edge.conversations)."""
        retrieved = None
        if (entry.get("features") or "").startswith("stored;"):
            # A stored answer repeats the usage of when it was made: never this request's.
            retrieved = {name: entry.pop(name, "") for name in USAGE_FIELDS}
        if self.conversations is None:
            return []
        due = self.conversations.expire()
        if entry.get("response_id"):
            finished = self.conversations.observe(entry, retrieved)
            if finished is not None:
                due.append(finished)
        return due

    def datagram(self, data: bytes) -> None:
        # "<190>Nov 26 05:45:00 hir: {...}" (nohostname): the JSON follows the tag.
        start = data.find(b"{")
        try:
            entry = orjson.loads(data[start:]) if start >= 0 else None
        except orjson.JSONDecodeError:
            entry = None
        if not isinstance(entry, dict):
            log.warning("unreadable feedback datagram")
            if self.outcomes is not None:
                self.outcomes.datagrams["unparsable"] += 1
            return
        if self.outcomes is not None:
            self.outcomes.datagrams["ok"] += 1
        self.record(entry)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, feedback: Feedback):
        self.feedback = feedback

    def datagram_received(self, data, addr) -> None:
        self.feedback.datagram(data)


# Linux queues at most this many unread datagrams on a unix socket (per network
# namespace; the kernel's default is 10, systemd's 512). nginx drops a log line
# that finds the queue full ("send() to syslog failed"): with the kernel's 10, a
# busy sidecar lost the usage, health and settlement of 1.2-3.1% of requests at
# 8 connections, 20-35% at 32, unless it drains the socket after each answer
# (docs/operations.md).
QUEUE_SYSCTL = Path("/proc/sys/net/unix/max_dgram_qlen")
QUEUE_ADVISED = 512
MAX_DATAGRAM = 65536  # nginx's syslog lines are a few KB at most


def _queue_length(sysctl: Path) -> int | None:
    try:
        return int(sysctl.read_text())
    except (OSError, ValueError):
        return None  # not Linux, or not readable


def queue_warning(sysctl: Path = QUEUE_SYSCTL) -> str | None:
    queue = _queue_length(sysctl)
    if queue is None or queue >= QUEUE_ADVISED:
        return None
    return (f"net.unix.max_dgram_qlen is {queue}: under load nginx will drop feedback datagrams "
            f"(usage, health, settlement); set it to {QUEUE_ADVISED} or more, e.g. `sysctl -w "
            f"net.unix.max_dgram_qlen={QUEUE_ADVISED}` or `--sysctl` for a container")


RECEIVE_BUFFER = 8 << 20  # ~6,000 log lines: seconds of a busy router's feedback
PROC_UDP = (Path("/proc/net/udp"), Path("/proc/net/udp6"))


def udp_address(address: str) -> tuple[str, int] | None:
    """HOST:PORT (UDP) → (host, port); a socket path → None."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in address:
        return None
    return host.removeprefix("[").removesuffix("]"), int(port)


def _bound_host(host: str) -> str:
    """The address the sidecar binds for `host`, and nginx is told: `localhost`
    as 127.0.0.1, since nginx might resolve the name to ::1."""
    return "127.0.0.1" if host == "localhost" else host


def syslog_server(address: str) -> str:
    """The address as nginx's `syslog:server=` takes it."""
    udp = udp_address(address)
    if udp is None:
        return f"unix:{address}"
    host, port = _bound_host(udp[0]), udp[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def for_worker(address: str, index: int, socket_for_worker) -> str:
    """Worker `index`'s feedback address: the next port, or the path's own naming."""
    udp = udp_address(address)
    if udp is None:
        return socket_for_worker(address, index)
    return syslog_server(f"{udp[0]}:{udp[1] + index}")


def udp_drops(inode: int, tables=PROC_UDP) -> int:
    """Datagrams the kernel dropped on the socket with this inode because its
    buffer was full (the last column of /proc/net/udp). nginx is not told of
    these, unlike a full unix socket, so the sidecar counts them itself."""
    wanted = str(inode)
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 12 and fields[9] == wanted:
                return int(fields[12])
    return 0


def _udp_socket(host: str, port: int) -> socket.socket:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        # Anyone who can send to it can mark endpoints down and rewrite usage.
        raise ValueError(f"the feedback address must be on loopback, not {host!r}: nginx and "
                         "the sidecar share a host (or a pod)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        try:
            # SO_RCVBUFFORCE (root or CAP_NET_ADMIN) passes net.core.rmem_max; else capped at it.
            sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), RECEIVE_BUFFER)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.bind((_bound_host(host), port))
    except OSError:
        sock.close()
        raise
    return sock


async def listen(path: str, feedback: Feedback, sysctl: Path = QUEUE_SYSCTL, mode: int = 0o600):
    """Bind the socket nginx logs to → (transport, drain or None).

    UDP (HOST:PORT, loopback only): the event loop reads it in batches and its
    receive buffer holds thousands of lines, so there is no drain, and the
    kernel's drop count for it is exported (router_feedback_datagrams
    {result="dropped"}). A unix socket (a path):

    The event loop reads it when it gets round to it: once per loop iteration,
    which under load is several decisions long. With a short kernel queue that
    loses lines, so `drain()` reads whatever is queued without waiting and the
    decision socket calls it after each answer. With a queue of QUEUE_ADVISED
    or more nothing is lost without it, and the loop's batched reads are
    cheaper (max req/s 0.19-0.21x nginx alone against 0.16-0.19x drained,
    bench_overhead.py --loads max --bodies repeated), so there is no drain."""
    loop = asyncio.get_running_loop()
    udp = udp_address(path)
    if udp is not None:
        sock = _udp_socket(*udp)
        if feedback.outcomes is not None:
            inode = os.fstat(sock.fileno()).st_ino
            feedback.outcomes.dropped = lambda: udp_drops(inode)
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(feedback), sock=sock)
        return transport, None
    warning = queue_warning(sysctl)
    if warning is not None:
        log.warning(warning)
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    os.chmod(path, mode)  # a line written here moves health and settles tokens
    transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(feedback), sock=sock)
    return transport, _drainer(sock, feedback) if warning is not None else None


def _drainer(sock: socket.socket, feedback: Feedback):
    recv, nowait = sock.recv, socket.MSG_DONTWAIT

    def drain() -> None:
        try:
            while True:
                feedback.datagram(recv(MAX_DATAGRAM, nowait))
        except OSError:  # nothing queued (BlockingIOError), or the socket is closed
            pass
        except Exception:  # a bug in reading feedback must not cost a decision
            log.exception("reading a feedback datagram failed")
    return drain
