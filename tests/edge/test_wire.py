"""The lean HTTP/1.1 protocol on the nginx socket: framing, pipelining, bad input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.edge.wire import HttpProtocol


class Transport:
    def __init__(self):
        self.out = b""
        self.closed = False

    def write(self, data):
        self.out += data

    def close(self):
        self.closed = True


def echo(method, target, headers, body):
    return 200, {"X-Method": method, "X-Target": target,
                 "X-Hash": ",".join(headers.getall("X-Hash", []))}, body


def serve(*chunks, max_body=1024):
    proto = HttpProtocol(echo, max_body)
    transport = Transport()
    proto.connection_made(transport)
    for chunk in chunks:
        proto.data_received(chunk)
    return transport


def req(body=b"", extra=""):
    return (f"POST /_decide HTTP/1.1\r\nHost: s\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
            .encode() + body)


def responses(raw: bytes) -> list[bytes]:
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        out.append(head + b"\r\n\r\n" + rest[:length])
        raw = rest[length:]
    return out


def test_one_request_one_response():
    t = serve(req(b'{"a":1}', "X-Hash: a\r\nX-Hash: b\r\n"))
    assert t.out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"X-Method: POST\r\n" in t.out and b"X-Target: /_decide\r\n" in t.out
    assert b"X-Hash: a,b\r\n" in t.out  # repeated headers are all kept
    assert t.out.endswith(b'\r\n\r\n{"a":1}') and not t.closed


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=50), min_size=1, max_size=5), st.data())
def test_pipelined_requests_split_anywhere_get_answers_in_order(bodies, data):
    stream = b"".join(req(b) for b in bodies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    got = responses(serve(*pieces).out)
    assert [r.split(b"\r\n\r\n", 1)[1] for r in got] == bodies


TOKEN = st.text("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
                min_size=1, max_size=12)
# Visible latin-1 with spaces inside; the padding around it is drawn apart.
VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=20).map(
    lambda v: v.strip(" \t"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(TOKEN, VALUE, st.sampled_from(["", " ", "  ", "\t"])), max_size=12))
def test_every_header_reaches_the_handler_in_order_with_its_whitespace_trimmed(fields):
    seen = []

    def record(method, target, headers, body):
        seen.extend(headers.items())
        return 200, {}, b""

    head = "".join(f"{name}:{pad}{value}{pad}\r\n" for name, value, pad in fields)
    proto = HttpProtocol(record, 1024)
    proto.connection_made(Transport())
    proto.data_received(f"POST /_decide HTTP/1.1\r\n{head}\r\n".encode("latin-1"))
    assert seen == [(name, value) for name, value, _ in fields]


def test_chunked_bodies_are_decoded():
    raw = (b"POST /_decide HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\n")
    t = serve(raw[:20], raw[20:50], raw[50:])
    assert t.out.endswith(b"\r\n\r\nwikipedia")


def test_connection_close_is_honoured():
    t = serve(req(b"x", "Connection: close\r\n"))
    assert b"Connection: close\r\n" in t.out and t.closed


def test_incomplete_requests_wait_for_more_bytes():
    t = serve(req(b"abcdef")[:-2])
    assert t.out == b"" and not t.closed



@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"POST /x HTTP/1.1\r\nNoColonHere\r\n\r\n",
    b"POST /x HTTP/1.1\r\n: no name\r\n\r\n",
    b"POST /x HTTP/1.1\r\nX-Space : before the colon\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: s\r\n folded: line\r\n\r\n",
    b"POST /x HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
    b"POST /x HTTP/1.1\r\nContent-Length: 999999\r\n\r\n",
    b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /x HTTP/1.1\r\n" + b"X: " + b"a" * 70000,
])
def test_malformed_requests_get_400_and_a_closed_connection(raw):
    t = serve(raw)
    assert t.out.startswith(b"HTTP/1.1 400 Bad Request\r\n") and t.closed


def test_the_after_answers_hook_runs_once_what_arrived_is_answered():
    calls = []
    transport = Transport()
    proto = HttpProtocol(echo, 1024, lambda: calls.append(len(responses(transport.out))))
    proto.connection_made(transport)
    proto.data_received(req(b"1") + req(b"2") + req(b"3")[:10])  # two whole, one begun
    assert calls == [2]
    proto.data_received(req(b"3")[10:])
    assert calls == [2, 3]
