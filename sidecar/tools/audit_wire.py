"""Raw HTTP/1.1 exchanges for `audit`: bytes out, the first response back, over
plain TCP or TLS, so the audit sees exactly what a client (or an attacker) sees."""

from __future__ import annotations

import json
import socket
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

SECURITY = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "content-security-policy": None,   # present; value is the operator's business
    "cache-control": None,
}


@dataclass
class Target:
    host: str
    port: int
    tls: bool
    cafile: str = ""
    insecure: bool = False

    @classmethod
    def parse(cls, url: str, cafile: str = "", insecure: bool = False) -> "Target":
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected http://HOST[:PORT] or https://..., got {url!r}")
        tls = parts.scheme == "https"
        return cls(parts.hostname, parts.port or (443 if tls else 80), tls, cafile, insecure)

    def context(self, **versions) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.cafile or None)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        for name, value in versions.items():
            setattr(ctx, name, value)
        return ctx

    def connect(self, timeout: float = 10.0, context: ssl.SSLContext | None = None):
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        if not self.tls:
            return sock
        try:
            return (context or self.context()).wrap_socket(sock, server_hostname=self.host)
        except Exception:
            sock.close()
            raise


@dataclass
class Response:
    status: int = 0
    headers: dict = field(default_factory=dict)   # lowercase name -> [values]
    body: bytes = b""
    rest: bytes = b""                              # bytes after the first response
    error: str = ""

    def header(self, name: str) -> str:
        values = self.headers.get(name.lower(), [])
        return values[0] if values else ""

    def json_error(self):
        try:
            error = json.loads(self.body)["error"]
        except (ValueError, KeyError, TypeError):
            return None
        return error if isinstance(error, dict) and error.get("message") and error.get("type") else None


def parse(raw: bytes) -> Response:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1."):
        return Response(body=raw, error="no HTTP/1.x status line" if raw else "no answer")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ")[1])
    except (IndexError, ValueError):
        return Response(body=raw, error="malformed status line")
    headers: dict = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    length = headers.get("content-length", [""])[0]
    if length.isdigit():
        return Response(status, headers, body[:int(length)], body[int(length):])
    return Response(status, headers, body)


def exchange(target: Target, data: bytes, timeout: float = 4.0) -> Response:
    """Send `data` (a whole request, which should ask to close), read to EOF."""
    try:
        sock = target.connect(timeout)
    except (OSError, ssl.SSLError) as exc:
        return Response(error=f"cannot connect: {exc}")
    out = b""
    try:
        sock.sendall(data)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
    except (OSError, ssl.SSLError):
        pass  # a server may reset after answering a hostile request; judge what arrived
    finally:
        sock.close()
    return parse(out)


def request(method: str, path: str, headers: dict, body: bytes = b"", host: str = "router",
            length: int | None = None) -> bytes:
    """A request that asks to close; `length` declares a Content-Length other than the body's."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or length is not None or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
