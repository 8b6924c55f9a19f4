"""The feedback channel: nginx's own access log, sent as syslog datagrams to a
unix socket, tells the sidecar how each forwarded request went (DESIGN.md).
Non-blocking for nginx and free on the hot path.

Here it drives passive health: an endpoint that fails `threshold` times in a row
(502/503/504 or no answer) is marked down for `down_seconds`, so decisions stop
sending traffic to it and its fallbacks take over; one success resets it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import orjson

log = logging.getLogger("sidecar.edge.feedback")

FAILED = {"502", "503", "504", "-"}

# The nginx log_format the sidecar reads (rendered by nginx_render).
LOG_FORMAT = ('log_format hir_feedback escape=json \'{"mode":"%s","endpoints":["$route_endpoint",'
              '"$route_fallback","$route_fallback2"],"upstream_status":"$upstream_status",'
              '"status":"$status","request_id":"$request_id"}\';')


def hop_statuses(entry: dict) -> list[tuple[str, str]]:
    """[(endpoint, status)] for each endpoint hop nginx tried, in order.

    $upstream_status separates internal redirects with ':' and servers within a
    group with ','. In stock mode the first group is the sidecar itself."""
    groups = [g.strip() for g in entry.get("upstream_status", "").split(":") if g.strip()]
    if entry.get("mode") == "stock" and groups:
        groups = groups[1:]
    names = [n for n in entry.get("endpoints", []) if n]
    return [(name, group.split(",")[-1].strip()) for name, group in zip(names, groups)]


class Feedback:
    def __init__(self, health_ref, threshold: int = 3, down_seconds: float = 10.0):
        self.health_ref = health_ref  # callable -> the live policy's Health
        self.threshold = threshold
        self.down_seconds = down_seconds
        self.failures: dict[str, int] = {}
        self.received = 0

    def record(self, entry: dict) -> None:
        self.received += 1
        health = self.health_ref()
        for endpoint, status in hop_statuses(entry):
            if status in FAILED:
                count = self.failures.get(endpoint, 0) + 1
                self.failures[endpoint] = count
                if count >= self.threshold:
                    health.mark_down(endpoint, self.down_seconds)
                    self.failures[endpoint] = 0
                    log.warning("endpoint %s marked down for %.0fs after %d failures",
                                endpoint, self.down_seconds, count)
            else:
                self.failures.pop(endpoint, None)

    def datagram(self, data: bytes) -> None:
        # "<190>Nov 26 05:45:00 hir: {...}" (nohostname): the JSON follows the tag.
        start = data.find(b"{")
        if start < 0:
            return
        try:
            entry = orjson.loads(data[start:])
        except orjson.JSONDecodeError:
            log.warning("unreadable feedback datagram")
            return
        if isinstance(entry, dict):
            self.record(entry)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, feedback: Feedback):
        self.feedback = feedback

    def datagram_received(self, data, addr) -> None:
        self.feedback.datagram(data)


async def listen(path: str, feedback: Feedback):
    """Bind the unix datagram socket nginx logs to."""
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    os.chmod(path, 0o666)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Protocol(feedback), sock=sock)
    return transport
