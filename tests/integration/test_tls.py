"""TLS at nginx: the local stack's generated certificate, modern protocols only,
HSTS on TLS responses, and a plain listener that redirects."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess

import pytest

from conftest import HASH, free_port, shifted_policy
from sidecar.tools.stack import Stack


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls")
    policy, _ = shifted_policy(tmp)
    plain, secure = free_port(), free_port()
    st = Stack(policy, tmp / "run", mode="lua", listen=f"127.0.0.1:{plain}", latency_scale=0,
               tls_listen=f"127.0.0.1:{secure}", redirect_http=True)
    st.start()
    st.ports = (plain, secure)
    yield st
    st.stop()


def https(stack, context=None):
    ctx = context or ssl.create_default_context(cafile=str(stack.run_dir / "tls" / "localhost.crt"))
    return http.client.HTTPSConnection("localhost", stack.ports[1], context=ctx, timeout=10)


def test_chat_over_https_with_hsts(tls_stack):
    conn = https(tls_stack)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(
        {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}),
        headers={"Content-Type": "application/json", "X-Constitutional-Hash": HASH})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.headers["X-Route-Tier"] == "nano"
    assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
    assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
    conn.close()


def test_errors_over_https_carry_the_headers_too(tls_stack):
    conn = https(tls_stack)
    conn.request("GET", "/nowhere")
    resp = conn.getresponse()
    assert resp.status == 404 and resp.headers["Strict-Transport-Security"]
    assert resp.headers["X-Constitutional-Hash"] == HASH


def _handshake(port: int, flag: str) -> str:
    # openssl's client at security level 0 is willing to speak TLS 1.0/1.1, so a
    # failure there is the server's refusal, not the client's.
    result = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", flag,
                             "-cipher", "ALL:@SECLEVEL=0"], input="", capture_output=True,
                            text=True, timeout=10)
    return result.stdout + result.stderr


@pytest.mark.parametrize("flag", ["-tls1", "-tls1_1"])
def test_old_protocols_are_refused(tls_stack, flag):
    assert "Protocol  : TLSv1.2" in _handshake(tls_stack.ports[1], "-tls1_2")  # control
    out = _handshake(tls_stack.ports[1], flag)
    assert "Cipher is (NONE)" in out or "alert protocol version" in out or "no protocols available" in out


def test_plain_http_redirects_to_https(tls_stack):
    conn = http.client.HTTPConnection("127.0.0.1", tls_stack.ports[0], timeout=10)
    conn.request("POST", "/v1/chat/completions?x=1", body="{}")
    resp = conn.getresponse()
    assert resp.status == 308
    assert resp.headers["Location"] == f"https://127.0.0.1:{tls_stack.ports[1]}/v1/chat/completions?x=1"
    # A JSON body, not nginx's HTML page, with the security headers as on any answer.
    assert resp.headers["Content-Type"] == "application/json"
    assert json.loads(resp.read())["error"]["code"] == "https_required"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "Strict-Transport-Security" not in resp.headers or not resp.headers["Strict-Transport-Security"]


@pytest.fixture(scope="module", params=["lua", "stock"])
def redirecting(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"redirect-{request.param}")
    policy, _ = shifted_policy(tmp)
    plain, secure = free_port(), free_port()
    st = Stack(policy, tmp / "run", mode=request.param, listen=f"127.0.0.1:{plain}", latency_scale=0,
               tls_listen=f"127.0.0.1:{secure}", redirect_http=True)
    st.start()
    st.ports = (plain, secure)
    yield st
    st.stop()


@pytest.mark.parametrize("method,target", [("POST", "/v1/chat/completions"), ("GET", "/v1/models?limit=2"),
                                           ("HEAD", "/"), ("DELETE", "/v1/responses/resp_1"),
                                           ("PUT", "/nowhere/%C3%A9?a=b&c=d")])
def test_every_request_to_the_plain_port_gets_a_json_308(redirecting, method, target):
    conn = http.client.HTTPConnection("127.0.0.1", redirecting.ports[0], timeout=10)
    conn.request(method, target, body=None if method in ("GET", "HEAD") else "{}")
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 308
    assert resp.headers["Location"] == f"https://127.0.0.1:{redirecting.ports[1]}{target}"
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    if method != "HEAD":
        assert json.loads(body)["error"]["code"] == "https_required"


CURL_CASES = [
    ("/v1/chat/completions", '{"model":"auto","messages":[{"role":"user","content":"hi"}]}', 200),
    ("/v1/chat/completions", '{"model":"auto","model":"expert","messages":[]}', 400),
    ("/v1/completions", '{"model":"auto","prompt":"hi"}', 200),
    ("/nowhere", "{}", 404),
]


@pytest.mark.parametrize("path,body,status", CURL_CASES)
def test_http2_and_http11_clients_get_the_same_answers(tls_both, path, body, status):
    answers = {}
    for flag in ("--http2", "--http1.1"):
        out = subprocess.run(
            ["curl", "-s", flag, "--cacert", str(tls_both.run_dir / "tls" / "localhost.crt"),
             f"https://localhost:{tls_both.tls_port}{path}", "-H", "Content-Type: application/json",
             "-H", f"X-Constitutional-Hash: {HASH}", "-d", body,
             "-o", "/dev/null", "-w", "%{http_code} %{http_version} %{content_type}"],
            capture_output=True, text=True, timeout=20).stdout.split()
        answers[flag] = out
    assert answers["--http2"][0] == answers["--http1.1"][0] == str(status)
    assert answers["--http2"][2].startswith("application/json")
    # h2 only where routed requests work over it (stock); lua mode settles on HTTP/1.1.
    assert answers["--http2"][1] == ("2" if tls_both.mode == "stock" else "1.1")


def test_a_body_over_the_limit_is_the_json_413_over_http2_too(tls_both, tmp_path):
    # Over HTTP/2 nginx checks the declared length again on every internal
    # redirect, so the 413 page raised its own 413 and curl got nginx's HTML.
    big = tmp_path / "big.json"
    big.write_bytes(b"a" * 2_000_000)   # over the 1 MB client_max_body_size
    for flag in ("--http2", "--http1.1"):
        out = subprocess.run(
            ["curl", "-s", flag, "--cacert", str(tls_both.run_dir / "tls" / "localhost.crt"),
             f"https://localhost:{tls_both.tls_port}/v1/chat/completions",
             "-H", "Content-Type: application/json", "-H", f"X-Constitutional-Hash: {HASH}",
             "--data-binary", f"@{big}", "-w", "\n%{http_code} %{content_type}"],
            capture_output=True, text=True, timeout=20).stdout
        body, _, status = out.rpartition("\n")
        assert status.split() == ["413", "application/json"], (flag, out[-300:])
        assert json.loads(body)["error"]["code"] == "request_too_large", flag


BODY = b'{"model":"auto","messages":[{"role":"user","content":"hi"}]}'


@pytest.mark.parametrize("declared", [0, 1, len(BODY) - 1, len(BODY) + 1, 4 * len(BODY)])
def test_a_body_that_breaks_its_content_length_is_a_json_400_over_http2_too(tls_both, declared):
    # Over HTTP/2 the DATA frames carry the body and the client's Content-Length only
    # claims its size: nginx refuses a mismatch with a 400 of its own while reading
    # the body, which in stock mode was its HTML page. Over HTTP/1.1 the declared
    # length decides what the body is, and the sidecar judges that (a longer one is
    # a body still on its way; lua mode speaks only HTTP/1.1).
    over_h2 = tls_both.mode == "stock"
    for flag in ("--http2", "--http1.1"):
        if declared > len(BODY) and not (flag == "--http2" and over_h2):
            continue
        out = subprocess.run(
            ["curl", "-s", flag, "--cacert", str(tls_both.run_dir / "tls" / "localhost.crt"),
             f"https://localhost:{tls_both.tls_port}/v1/chat/completions", "-H", f"Content-Length: {declared}",
             "-H", "Content-Type: application/json", "-H", f"X-Constitutional-Hash: {HASH}",
             "--data-binary", BODY, "-m", "10", "-w", "\n%{http_code} %{content_type}"],
            capture_output=True, text=True, timeout=20).stdout
        body, _, status = out.rpartition("\n")
        assert status.split() == ["400", "application/json"], (flag, out[-300:])
        assert json.loads(body)["error"]["code"] in ("bad_request", "invalid_json"), (flag, body)
