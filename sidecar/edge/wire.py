"""A lean HTTP/1.1 server protocol for the nginx → sidecar socket.

Only nginx talks to this socket, with well-formed keep-alive HTTP/1.1 requests.
aiohttp's full web stack costs ~70 µs and 60% of the throughput per decision
here (loadtests/bench_overhead.py), so the hot path parses requests itself:
find the header block, split lines, read Content-Length (or chunked) bytes,
call a synchronous handler, write one response. Anything malformed gets a 400
and the connection is closed.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus

from multidict import CIMultiDict

log = logging.getLogger("sidecar.edge.wire")

MAX_HEADER_BYTES = 64 * 1024
REASONS = {s.value: s.phrase for s in HTTPStatus}


class BadRequest(Exception):
    pass


def render_response(status: int, headers, body: bytes, close: bool = False) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"]
    for name, value in headers.items() if isinstance(headers, dict) else headers:
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"Content-Length: {len(body)}\r\n")
    if close:
        lines.append("Connection: close\r\n")
    lines.append("\r\n")
    # Header values are ASCII by construction (names, numbers, base64-ish keys);
    # latin-1 keeps any stray byte representable instead of raising mid-request.
    return "".join(lines).encode("latin-1", "replace") + body


class HttpProtocol(asyncio.Protocol):
    """Parses pipelined requests and answers them in order with `handler(method,
    target, headers, body) -> (status, headers, body)`."""

    __slots__ = ("handler", "max_body", "transport", "buffer", "after_answers")

    def __init__(self, handler, max_body: int, after_answers=None):
        self.handler = handler
        self.max_body = max_body
        self.transport = None
        self.buffer = b""
        self.after_answers = after_answers  # called once what has arrived is answered

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer = self.buffer + data if self.buffer else data
        while self.transport is not None and self.buffer:
            try:
                parsed = self._parse_one()
            except BadRequest as exc:
                log.warning("bad request on the decision socket: %s", exc)
                body = b'{"error":{"message":"malformed request","type":"invalid_request_error","code":"bad_request"}}'
                self.transport.write(render_response(400, {"Content-Type": "application/json"}, body, close=True))
                self.transport.close()
                return
            if parsed is None:
                break  # need more bytes
            method, target, headers, body, close = parsed
            status, out_headers, out_body = self.handler(method, target, headers, body)
            self.transport.write(render_response(status, out_headers, out_body, close))
            if close:
                self.transport.close()
        if self.after_answers is not None:
            self.after_answers()

    def _parse_one(self):
        buf = self.buffer
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEADER_BYTES:
                raise BadRequest("header block too large")
            return None
        lines = buf[:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise BadRequest("bad request line")
        method, target, version = parts
        headers = CIMultiDict()
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise BadRequest("bad header line")
            headers.add(name, value.strip(" \t"))  # RFC 9110 OWS only
        start = end + 4
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            decoded = self._dechunk(buf, start)
            if decoded is None:
                return None
            body, consumed = decoded
        else:
            try:
                length = int(headers.get("Content-Length", "0"))
            except ValueError:
                raise BadRequest("bad Content-Length") from None
            if length < 0 or length > self.max_body:
                raise BadRequest("body too large")
            if len(buf) - start < length:
                return None
            body, consumed = buf[start:start + length], start + length
        self.buffer = buf[consumed:]
        connection = headers.get("Connection", "").lower()
        close = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
        return method, target, headers, body, close

    def _dechunk(self, buf: bytes, pos: int):
        chunks, total = [], 0
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            try:
                size = int(buf[pos:eol].split(b";", 1)[0], 16)
            except ValueError:
                raise BadRequest("bad chunk size") from None
            total += size
            if total > self.max_body:
                raise BadRequest("body too large")
            pos = eol + 2
            if size == 0:
                end = buf.find(b"\r\n\r\n", pos - 2)
                if end < 0:
                    return None
                return b"".join(chunks), end + 4
            if len(buf) < pos + size + 2:
                return None
            chunks.append(buf[pos:pos + size])
            pos += size + 2
