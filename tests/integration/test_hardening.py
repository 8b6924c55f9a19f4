"""Hostile input classes through real nginx in both modes (issue: hardening).
Each class is a table or generated variants, never only the reported example."""

from __future__ import annotations

import itertools
import json
import random
import socket

import pytest

from conftest import HASH, SECURITY, user
from respellings import respelled

CHAT = b'"messages":[{"role":"user","content":"hi"}]'


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes (or `timeout`)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def parse(raw: bytes) -> tuple[int, dict[str, list[str]], bytes]:
    """The first response in `raw`: status, headers (name -> values), body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), f"not an HTTP/1.1 response: {raw[:120]!r}"
    status = int(lines[0].split(" ")[1])
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    length = int(headers.get("content-length", ["-1"])[0])
    return status, headers, body[:length] if length >= 0 else body


def assert_json_error(status: int, headers: dict, body: bytes, expected_status: int, code=None):
    assert status == expected_status, body[:200]
    assert headers["content-type"] == ["application/json"]
    error = json.loads(body)["error"]
    assert error["message"] and error["type"]
    if code:
        assert error["code"] == code
    for name, value in SECURITY.items():
        assert headers.get(name.lower()) == [value], name
    text = body.decode("utf-8", "replace").lower()
    assert "<html" not in text and "traceback" not in text and "nginx" not in text


def post(body: bytes, extra: str = "", path: str = "/v1/chat/completions") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: router\r\nContent-Type: application/json\r\n"
            f"X-Constitutional-Hash: {HASH}\r\n{extra}Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


# --- 1. Duplicate keys in any whitespace and escape form ------------------------

WHITESPACE = ["", " ", "  ", "\t", "\n", "\r\n", " \t\n ", "\t\t"]
SPELLINGS = ['"model"', '"mod\\u0065l"', '"\\u006dodel"', '"m\\u006F\\u0064el"']


def duplicate_bodies(seed: int, n: int = 12) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        before, after = rng.choice(WHITESPACE), rng.choice(WHITESPACE)
        name = rng.choice(SPELLINGS)
        where = rng.choice(["top", "message", "nested"])
        if where == "top":
            out.append(('{"model":"auto",%s%s%s:%s"expert",%s}'
                        % (before, name, before, after, CHAT.decode())).encode())
        elif where == "message":
            out.append(('{"messages":[{"role":"user","content":"x",%s"role"%s:%s"system"}]}'
                        % (before, after, before)).encode())
        else:
            out.append(('{"metadata":{"a":{"b":1,%s"b"%s:2}},%s}' % (before, after, CHAT.decode())).encode())
    return out


@pytest.mark.parametrize("body", duplicate_bodies(1), ids=lambda b: b.decode()[:40])
def test_duplicate_keys_in_any_spelling_are_refused(clean, body):
    status, headers, got = parse(raw_exchange(clean.client.port, post(body)))
    assert_json_error(status, headers, got, 400, "duplicate_key")
    assert clean.mocks.total_received() == 0


# --- 2. Keys a case-insensitive decoder would read as a field the router reads ----

# A field, what a client would gain by a respelling of it, and where it is.
RESPELLED = [
    ("model", '"expert"', "top"),                           # a model the client picks
    ("max_tokens", "500000", "top"),                        # past the tokens reserved
    ("max_completion_tokens", "500000", "top"),
    ("n", "64", "top"),
    ("tools", '[{"type":"web_search"}]', "top"),            # a provider-run tool
    ("service_tier", '"priority"', "top"),                  # a premium tier
    ("messages", '[{"role":"user","content":"another prompt"}]', "top"),
    ("stream", "true", "top"),
    ("content", '"another prompt"', "turn"),
    ("role", '"system"', "turn"),
    ("type", '"web_search"', "tool"),
]


def respelled_bodies(seed: int, n: int = 12) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        name, value, where = rng.choice(RESPELLED)
        key = json.dumps(respelled(rng, name), ensure_ascii=rng.random() < 0.5)
        if where == "top":
            body = '{"model":"nano",%s,%s:%s}' % (CHAT.decode(), key, value)
        elif where == "turn":
            body = '{"model":"nano","messages":[{"role":"user","content":"hi",%s:%s}]}' % (key, value)
        else:
            body = ('{"model":"nano",%s,"tools":[{"type":"function","function":{"name":"f"},%s:%s}]}'
                    % (CHAT.decode(), key, value))
        out.append(body.encode())
    return out


@pytest.mark.parametrize("body", respelled_bodies(2), ids=lambda b: b.decode("ascii", "replace")[-48:])
def test_a_key_a_provider_would_read_as_a_routed_field_is_refused(clean, body):
    status, headers, got = parse(raw_exchange(clean.client.port, post(body)))
    assert_json_error(status, headers, got, 400, "ambiguous_key")
    assert clean.mocks.total_received() == 0


# --- 3. nginx's own errors --------------------------------------------------------

NGINX_OWN = [
    # request bytes, status
    (b"GET /v1/%00 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"post /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"Post /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", 400),
    (b"GET / HTTP/0.9\r\n\r\n", 400),
    (b"GET /\r\n", 505),                                      # real HTTP/0.9, answered framed
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"GET / HTTP/3.1\r\nHost: x\r\n\r\n", 505),
    (b"GET / HTTP/1.1\r\n\r\n", 400),                          # no Host
    (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\x00: 1\r\n\r\n", 400),
    (b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: x\r\nCookie: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", 413),
    (b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", 404),
]


@pytest.mark.parametrize("request_bytes,status", NGINX_OWN, ids=lambda v: repr(v)[:40])
def test_nginx_own_errors_are_json_with_the_headers(stack, request_bytes, status):
    got_status, headers, body = parse(raw_exchange(stack.client.port, request_bytes))
    assert_json_error(got_status, headers, body, status)


MALFORMED_CHUNKS = [b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcXX0\r\n\r\n", b"f" * 20 + b"\r\n",
                    b"-1\r\n\r\n", b"3\r\nabc\r\nzz\r\n"]
CHUNKED_TO = ["POST /v1/chat/completions", "POST /v1/embeddings", "GET /v1/models", "DELETE /v1/responses/r",
              "OPTIONS /v1/chat/completions"]  # the last a CORS preflight, answered before the routes


@pytest.mark.parametrize("request_line,chunks", list(itertools.product(CHUNKED_TO, MALFORMED_CHUNKS)),
                         ids=lambda v: repr(v)[:30])
def test_a_malformed_chunked_body_gets_the_json_400(stack, request_line, chunks):
    # Refusing a chunked body (411) parses the chunks already received, to discard
    # them; a malformed one raised a 400 there that got nginx's HTML page.
    request = (f"{request_line} HTTP/1.1\r\nHost: x\r\nOrigin: http://localhost:3000\r\n"
               "Access-Control-Request-Method: POST\r\nContent-Type: application/json\r\n"
               f"X-Constitutional-Hash: {HASH}\r\nTransfer-Encoding: chunked\r\n\r\n").encode() + chunks
    assert_json_error(*parse(raw_exchange(stack.client.port, request)), 400)


@pytest.mark.parametrize("request_line", CHUNKED_TO)
def test_a_well_formed_chunked_body_gets_the_json_411(stack, request_line):
    request = (f"{request_line} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"X-Constitutional-Hash: {HASH}\r\nTransfer-Encoding: chunked\r\n\r\n"
               "2\r\n{}\r\n0\r\n\r\n").encode()
    assert_json_error(*parse(raw_exchange(stack.client.port, request)), 411)


def test_leftover_bytes_after_a_request_get_a_json_error_too(stack):
    raw = raw_exchange(stack.client.port, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n\x16\x03\x01garbage\r\n\r\n")
    first_end = raw.index(b"}}") + 2
    assert_json_error(*parse(raw[:first_end]), 404)
    assert_json_error(*parse(raw[first_end:]), 400)


BAD_REQUESTS = [b"{bad", b"[]", b'{"model":"auto","messages":[]}', b'{"model":"auto","messages":"hi"}',
                b'{"model":"auto","model":"expert",' + CHAT + b"}",
                b'{"model":"auto","max_tokens":1e999,' + CHAT + b"}",
                '{"model":"auto","messages":[{"role":"user","content":"\u00e9\U0001f600"}],}'.encode()]


@pytest.mark.parametrize("bad", BAD_REQUESTS, ids=lambda b: b.decode()[:30])
def test_a_bad_request_is_answered_and_the_connection_kept(clean, bad):
    # Stock mode pages a 400 nginx raises itself; the sidecar's own 400s must still
    # arrive as sent, on a connection that stays open (a page for 400 closes it).
    keep = post(bad).replace(b"Connection: close\r\n", b"")
    raw = raw_exchange(clean.client.port, keep + post(json.dumps(user("hi")).encode()))
    status, headers, body = parse(raw)
    assert_json_error(status, headers, body, 400)
    assert json.loads(body)["error"]["code"] in ("invalid_json", "invalid_request", "duplicate_key")
    assert headers.get("connection") == ["keep-alive"]
    second = raw[raw.index(body) + len(body):]
    assert parse(second)[0] == 200
    assert clean.mocks.total_received() == 1


def test_a_path_is_echoed_as_the_client_wrote_it(stack):
    # nginx hands the sidecar the URI's raw bytes, read as latin-1; clients write UTF-8.
    raw = raw_exchange(stack.client.port, "GET /v1/caf\u00e9/\u65e5\u672c HTTP/1.1\r\nHost: x\r\n"
                       "Connection: close\r\n\r\n".encode())
    status, headers, body = parse(raw)
    assert_json_error(status, headers, body, 404, "unknown_url")
    assert "/v1/caf\u00e9/\u65e5\u672c" in json.loads(body)["error"]["message"]


# --- 4. Upstream responses are sanitised -----------------------------------------

HOSTILE_RESPONSE_HEADERS = {
    "X-Route-Tier": "expert", "X-Route-Endpoint": "evil", "X-Route-Anything": "x",
    "X-AspNet-Version": "4.0.30319", "X-Policy-Version": "forged", "RateLimit": "forged",
    "RateLimit-Policy": "forged", "X-Frame-Options": "ALLOWALL",
    "Strict-Transport-Security": "max-age=0", "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Credentials": "true", "X-Constitutional-Hash": "0000000000000000",
    "Set-Cookie": "session=stolen", "X-Request-Id": "forged", "Content-Security-Policy": "default-src *",
    "Cache-Control": "public, max-age=3600", "X-Powered-By": "PHP/5.1",
    # The router never redirects: a provider's Location would send the client (and
    # maybe its credentials) elsewhere.
    "Location": "https://evil.example/steal", "Content-Location": "https://evil.example/",
}
OWNED = ("x-route-tier", "x-route-endpoint", "x-policy-version", "ratelimit", "ratelimit-policy",
         "x-frame-options", "x-constitutional-hash", "x-request-id", "content-security-policy",
         "cache-control", "strict-transport-security")


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_sees_only_the_routers_copy_of_the_headers_it_owns(clean, stream):
    clean.mocks.fault("fast-llama-3-1-8b", "", headers=HOSTILE_RESPONSE_HEADERS)
    body = json.dumps({**user("hi"), "stream": stream}).encode()
    status, headers, _ = parse(raw_exchange(clean.client.port, post(body, "X-Test-Pin: fast-llama-3-1-8b\r\n")))
    assert status == 200
    for name in OWNED:
        assert len(headers.get(name, [])) <= 1, (name, headers.get(name))
    assert headers["x-route-endpoint"] == ["fast-llama-3-1-8b"] and headers["x-route-tier"] == ["fast"]
    assert headers["x-frame-options"] == ["DENY"]
    assert headers["x-constitutional-hash"] == [HASH]
    assert headers["x-policy-version"] == [clean.policy.version]
    assert headers["ratelimit"][0] != "forged" and headers["x-request-id"][0] != "forged"
    assert headers["cache-control"] == ["no-store"]
    assert "strict-transport-security" not in headers  # plain HTTP: the router sends none
    for name in ("access-control-allow-origin", "access-control-allow-credentials", "set-cookie",
                 "x-aspnet-version", "x-powered-by", "location", "content-location"):
        assert name not in headers, name


@pytest.mark.parametrize("stream", [False, True])
def test_no_header_that_names_the_software_behind_an_endpoint_reaches_a_client(clean, stream):
    # OWASP's list of headers to remove, each sent by the endpoint: lua mode's
    # allow-list drops them, stock mode hides each by name.
    from sidecar.tools.nginx_headers import DISCLOSING
    clean.mocks.fault("fast-llama-3-1-8b", "", headers={name: "leak/1.0" for name in DISCLOSING})
    body = json.dumps({**user("hi"), "stream": stream}).encode()
    status, headers, _ = parse(raw_exchange(clean.client.port, post(body, "X-Test-Pin: fast-llama-3-1-8b\r\n")))
    assert status == 200 and headers["x-route-endpoint"] == ["fast-llama-3-1-8b"]
    assert [name for name in DISCLOSING if name.lower() in headers] == []


RANGES = ["bytes=0-5", "bytes=0-0,10-20", "bytes=-10", "bytes=99999-", "bytes=5-2", "bytes=0-"]


@pytest.mark.parametrize("ranges", RANGES)
def test_a_range_header_never_cuts_an_answer(clean, ranges):
    # An answer is one JSON document, not a file. With an endpoint that says
    # Accept-Ranges, nginx cut it to a 206 of the asked bytes, or answered an
    # unsatisfiable range with its HTML 416.
    clean.mocks.fault("fast-llama-3-1-8b", "", headers={"Accept-Ranges": "bytes"})
    extra = f"X-Test-Pin: fast-llama-3-1-8b\r\nRange: {ranges}\r\n"
    status, headers, body = parse(raw_exchange(clean.client.port, post(user_body(), extra)))
    assert status == 200 and headers["content-type"] == ["application/json"]
    assert json.loads(body)["choices"][0]["message"]["content"]
    assert "content-range" not in headers and "accept-ranges" not in headers


def test_lua_mode_passes_upstream_headers_by_allow_list_only(clean):
    if clean.mode != "lua":
        pytest.skip("stock nginx has no allow-list for upstream headers; it hides a fixed set")
    rng = random.Random(7)
    names = [f"X-{''.join(rng.choice('abcdefgh') for _ in range(6))}" for _ in range(20)]
    clean.mocks.fault("fast-llama-3-1-8b", "", headers={n: "leak" for n in names})
    status, headers, _ = parse(raw_exchange(clean.client.port, post(user_body(), "X-Test-Pin: fast-llama-3-1-8b\r\n")))
    assert status == 200
    leaked = [n for n in names if n.lower() in headers]
    assert leaked == []
    assert headers["x-mock-endpoint"] == ["fast-llama-3-1-8b"]  # named in the policy's pass list


def user_body(text: str = "hi", **extra) -> bytes:
    return json.dumps(user(text, **extra)).encode()


@pytest.mark.parametrize("fault", ["garbage", "bare"])
def test_an_endpoint_that_answers_without_http_framing(clean, fault):
    clean.mocks.fault("fast-llama-3-1-8b", fault)
    raw = raw_exchange(clean.client.port, post(user_body(), "X-Test-Pin: fast-llama-3-1-8b\r\n"))
    if clean.mode == "stock":
        pytest.xfail("stock nginx relays an answer without a status line as HTTP/0.9 by design "
                     "(nginx/nginx#723); only lua mode can frame it (docs/operations.md)")
    assert_json_error(*parse(raw), 502, "upstream_failed")
    assert b"pwned" not in raw and b"unframed" not in raw


def assert_replaced_answer(raw: bytes, status: int, code: str, hidden: bytes) -> None:
    """Lua mode's JSON in place of what the endpoint sent: the router's error, with
    the charset written out (nginx keeps an endpoint's charset apart from its type)."""
    got, headers, body = parse(raw)
    assert headers["content-type"] == ["application/json; charset=utf-8"]
    headers["content-type"] = ["application/json"]
    assert_json_error(got, headers, body, status, code)
    assert hidden not in raw


@pytest.mark.parametrize("status", [400, 404, 405, 413, 422])
def test_an_endpoints_error_page_becomes_json_and_its_json_errors_pass(clean, status):
    # A reverse proxy or CDN in front of a model answers its own errors with HTML;
    # the client got that page. A provider's JSON error is what the client needs,
    # and passes as it was.
    clean.mocks.fault("fast-llama-3-1-8b", f"status={status}")
    got, headers, body = parse(raw_exchange(clean.client.port, post(user_body(), "X-Test-Pin: fast-llama-3-1-8b\r\n")))
    assert got == status and json.loads(body)["error"]["message"] == "injected fault on fast-llama-3-1-8b"
    clean.mocks.fault("fast-llama-3-1-8b", f"status={status},html")
    raw = raw_exchange(clean.client.port, post(user_body(), "X-Test-Pin: fast-llama-3-1-8b\r\n"))
    if clean.mode == "stock":
        pytest.xfail("stock nginx can page an endpoint's error only by status, which would also "
                     "swallow its JSON errors; only lua mode can read the type (docs/operations.md)")
    assert_replaced_answer(raw, status, "upstream_error", b"<html")


@pytest.mark.parametrize("stream", [False, True])
def test_a_page_where_an_answer_should_be_is_a_502_in_json(clean, stream):
    # A captive portal or a WAF answers 200 with its own page; the client got the page.
    clean.mocks.fault("fast-llama-3-1-8b", "html")
    raw = raw_exchange(clean.client.port, post(user_body(stream=stream), "X-Test-Pin: fast-llama-3-1-8b\r\n"))
    if clean.mode == "stock":
        pytest.xfail("stock nginx cannot read an answer's type (docs/operations.md)")
    assert_replaced_answer(raw, 502, "upstream_failed", b"sign in")


@pytest.mark.parametrize("status", [600, 799, 999])
def test_a_status_http_does_not_define_is_a_502_in_json(clean, status):
    # nginx relays any three digits an endpoint writes, and its error_page stops at 599.
    clean.mocks.fault("fast-llama-3-1-8b", f"status={status}")
    raw = raw_exchange(clean.client.port, post(user_body(), "X-Test-Pin: fast-llama-3-1-8b\r\n"))
    # Health counts it as a failure: one answer resets the count, so the cases in a
    # row do not take the endpoint out of rotation for the tests after them.
    clean.mocks.fault("fast-llama-3-1-8b", "")
    answered = parse(raw_exchange(clean.client.port, post(user_body(), "X-Test-Pin: fast-llama-3-1-8b\r\n")))
    assert (answered[0], answered[1]["x-route-endpoint"]) == (200, ["fast-llama-3-1-8b"])
    if clean.mode == "stock":
        pytest.xfail("stock nginx relays an endpoint's status as written; error_page ends at 599")
    assert_replaced_answer(raw, 502, "upstream_failed", b"injected")


# --- 5. Request headers to providers by allow-list --------------------------------

HOSTILE_REQUEST_HEADERS = {
    "Proxy-Authorization": "Basic c2VjcmV0", "Forwarded": "for=1.2.3.4;host=evil",
    "X-Original-URI": "/admin", "X-Original-Method": "DELETE", "X-Route-Endpoint": "expert-grok-4",
    "X-Route-Custom": "x", "Cookie": "a=b", "X-Forwarded-For": "1.2.3.4", "X-Real-IP": "1.2.3.4",
    "X-Forwarded-Host": "evil", "True-Client-IP": "1.2.3.4", "X-Api-Key": "client-secret",
    "OpenAI-Organization": "org-client", "User-Agent": "attacker/1.0", "X-Whatever": "1",
}
TO_PROVIDER = {"host", "content-type", "content-length", "accept", "accept-encoding", "x-request-id",
               "authorization"}


def test_a_provider_receives_only_the_allowed_request_headers(clean):
    extra = "".join(f"{k}: {v}\r\n" for k, v in HOSTILE_REQUEST_HEADERS.items())
    extra += "Accept: application/json\r\nAccept-Encoding: gzip, br\r\nX-Test-Pin: fast-llama-3-1-8b\r\n"
    status, headers, _ = parse(raw_exchange(clean.client.port, post(user_body(), extra)))
    assert status == 200
    (got,) = clean.mocks.received("fast-llama-3-1-8b")
    names = {n.lower() for n in got["headers"]}
    assert names <= TO_PROVIDER, names - TO_PROVIDER
    assert {"host", "content-type", "content-length", "x-request-id", "accept"} <= names
    sent = {n.lower(): v for n, v in got["headers"].items()}
    assert sent["x-request-id"] == headers["x-request-id"][0]
    # Whatever codings the client accepts, the router asks for the answer uncoded: it
    # reads the usage in it.
    assert sent["accept-encoding"] == "identity"


@pytest.mark.parametrize("declared", ["application/json; charset=utf-16", "APPLICATION/JSON;charset=latin1",
                                      "application/json;;;", "application/json; boundary=x; q=1",
                                      "Application/Json"])
def test_a_provider_is_told_the_media_type_the_router_read(clean, declared):
    # The router reads any application/json body as UTF-8; a charset passed on is a
    # provider reading other text than the router routed on.
    request = post(user_body(), "X-Test-Pin: fast-llama-3-1-8b\r\n").replace(
        b"Content-Type: application/json\r\n", f"Content-Type: {declared}\r\n".encode())
    status, _, _ = parse(raw_exchange(clean.client.port, request))
    assert status == 200
    (got,) = clean.mocks.received("fast-llama-3-1-8b")
    sent = {n.lower(): v for n, v in got["headers"].items()}
    assert sent["content-type"] == "application/json"


# --- 6. Header values exactly ----------------------------------------------------

ODD = ["\xa0", "\x85", "\x0b", "\x0c", "\x1f", "\x1c", "\x7f", "\u3000"]


@pytest.mark.parametrize("odd,leading", list(itertools.product(ODD, [False, True])))
def test_a_hash_with_anything_but_optional_whitespace_around_it_is_refused(clean, odd, leading):
    value = (odd + HASH) if leading else (HASH + odd)
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\n"
               b"X-Constitutional-Hash: " + value.encode("utf-8" if ord(odd) > 0xff else "latin-1")
               + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(user_body()) + user_body())
    status, headers, body = parse(raw_exchange(clean.client.port, request))
    assert_json_error(status, headers, body, 400)
    assert clean.mocks.total_received() == 0


@pytest.mark.parametrize("ows", [" ", "\t", "  \t"])
def test_optional_whitespace_around_the_hash_is_accepted(clean, ows):
    request = post(user_body()).replace(f"X-Constitutional-Hash: {HASH}".encode(),
                                        f"X-Constitutional-Hash:{ows}{HASH}{ows}".encode())
    assert parse(raw_exchange(clean.client.port, request))[0] == 200


@pytest.mark.parametrize("first,second", [("application/json", "text/plain"), ("text/plain", "application/json"),
                                          ("application/json", "application/json; charset=utf-8")])
def test_two_content_types_are_refused_in_either_order(clean, first, second):
    body = user_body()
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: r\r\nContent-Type: {first}\r\n"
               f"Content-Type: {second}\r\nX-Constitutional-Hash: {HASH}\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    status, headers, got = parse(raw_exchange(clean.client.port, request))
    assert_json_error(status, headers, got, 400)
    assert clean.mocks.total_received() == 0


# --- 7. One client however its address is written ---------------------------------

# Each IPv6 case in a /64 of its own: limits count a /64 as one client, and a bucket
# another case had drawn on refills between requests, blurring the count.
SPELLED = [("2001:DB8:1::1", "2001:0db8:0001::0001", "2001:db8:1:0:0:0:0:1"),
           ("10.0.0.1", "::ffff:10.0.0.1", "0:0:0:0:0:ffff:a00:1"),
           ("2001:db8:2::a:b", "2001:DB8:2:0:0:0:A:B", "2001:0db8:2::000a:000b"),
           # As proxies that add the client's port, or RFC 7239's brackets, write them.
           ("10.0.0.2", "10.0.0.2:4711", "[::ffff:10.0.0.2]:80"),
           ("2001:db8:3::c", "[2001:DB8:3::C]:4711", "[2001:db8:3:0:0:0:0:c]")]


@pytest.mark.parametrize("spellings", SPELLED, ids=lambda s: s[0])
def test_every_spelling_of_a_forwarded_address_draws_on_one_limit(clean, spellings):
    remaining = []
    for spelling in spellings:  # the stack's nginx peer (127.0.0.1) is a trusted proxy
        status, headers, _ = parse(raw_exchange(clean.client.port, post(
            user_body(), f"X-Forwarded-For: {spelling}\r\n")))
        assert status == 200
        remaining.append(int(headers["ratelimit"][0].split("r=")[1].split(";")[0]))
    assert remaining == [remaining[0] - i for i in range(len(spellings))], remaining


def test_each_address_of_one_ipv6_network_draws_on_one_limit_and_the_next_network_on_its_own(clean):
    """A host holds a whole /64 and can send every request from a new address in it:
    keyed on the address, each request found a full limit."""
    def remaining(address):
        status, headers, _ = parse(raw_exchange(clean.client.port, post(
            user_body(), f"X-Forwarded-For: {address}\r\n")))
        assert status == 200
        return int(headers["ratelimit"][0].split("r=")[1].split(";")[0])

    in_one = [remaining(f"2001:db8:64:1:{i:x}:{i * 7:x}:{i * 13:x}:{i + 1:x}") for i in range(4)]
    assert in_one == [in_one[0] - i for i in range(4)], in_one
    assert remaining("2001:db8:64:2::1") == in_one[0]    # the next /64: a client of its own
