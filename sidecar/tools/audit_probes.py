"""The probes `audit` runs against a live edge. Each yields Findings: a check's
name, its weight in the score, whether it held, and what was seen."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sidecar.tools.audit_wire import SECURITY, Response, Target, exchange, request

CHAT = "/v1/chat/completions"
BODY = b'{"model":"auto","messages":[{"role":"user","content":"audit"}]}'
ONE_YEAR = 31_536_000


@dataclass
class Finding:
    area: str
    check: str
    ok: bool
    detail: str = ""
    weight: int = 1


class Probe:
    """Shared state for one audit: where, the hash and key to send, findings."""

    def __init__(self, target: Target, chash: str = "", key: str = ""):
        self.target, self.hash, self.key = target, chash, key
        self.findings: list[Finding] = []

    def add(self, area, check, ok, detail="", weight=1):
        self.findings.append(Finding(area, check, bool(ok), detail, weight))
        return bool(ok)

    def headers(self, **extra) -> dict:
        h = {"Content-Type": "application/json"}
        if self.hash:
            h["X-Constitutional-Hash"] = self.hash
        if self.key:
            h["Authorization"] = f"Bearer {self.key}"
        h.update({k.replace("_", "-"): v for k, v in extra.items() if v is not None})
        return {k: v for k, v in h.items() if v != ""}

    def send(self, data: bytes) -> Response:
        return exchange(self.target, data)

    def edge_response(self, what: str, r: Response, status=None) -> bool:
        """Every answer: the expected status, a status line, the security headers,
        the hash, no server version, and for errors an OpenAI-style JSON body
        without internals."""
        area = "responses"
        if not self.add(area, f"{what}: answered with HTTP/1.1", not r.error, r.error or f"{r.status}", 2):
            return False
        ok = True
        if status is not None:
            wanted = status if isinstance(status, tuple) else (status,)
            ok &= self.add(area, f"{what}: status {'/'.join(map(str, wanted))}", r.status in wanted,
                           f"got {r.status}", 2)
        missing = [n for n, v in SECURITY.items() if not r.header(n) or (v and r.header(n) != v)]
        ok &= self.add(area, f"{what}: security headers", not missing,
                       f"missing or wrong: {', '.join(missing)}" if missing else "")
        ok &= self.add(area, f"{what}: constitutional hash on the response",
                       r.header("x-constitutional-hash") and (not self.hash or r.header("x-constitutional-hash") == self.hash),
                       r.header("x-constitutional-hash") or "absent")
        server = r.header("server")
        ok &= self.add(area, f"{what}: no server version", "/" not in server, server)
        if r.status >= 400:
            text = r.body.decode("utf-8", "replace").lower()
            leaks = [w for w in ("<html", "traceback", "exception", "nginx/", "stack trace") if w in text]
            ok &= self.add(area, f"{what}: JSON error body", r.header("content-type").startswith("application/json")
                           and r.json_error() is not None, r.header("content-type"))
            ok &= self.add(area, f"{what}: no internals in the error", not leaks, ", ".join(leaks))
        return ok


def learn_hash(p: Probe) -> None:
    """The hash from any response, when the operator did not pass one."""
    r = p.send(request("GET", "/", {}))
    if not p.hash:
        p.hash = r.header("x-constitutional-hash")
    p.add("hash", "the edge names its constitutional hash", p.hash, p.hash or "absent", 2)


def probe_routing(p: Probe) -> None:
    r = p.send(request("POST", CHAT, p.headers(), BODY))
    p.edge_response("routed request", r, 200)
    p.add("limits", "RateLimit-Policy on a routed answer", r.header("ratelimit-policy"), r.header("ratelimit-policy"))
    p.add("limits", "RateLimit on a routed answer", r.header("ratelimit"), r.header("ratelimit"))
    internal = [n for n in r.headers if n.startswith(("x-route-decision", "x-route-auth", "x-accel-"))]
    p.add("responses", "no internal decision headers leak", not internal, ", ".join(internal), 2)
    # An answer is one JSON document: a Range header must neither cut it (206) nor
    # draw an HTML 416, whatever the provider says about ranges.
    r = p.send(request("POST", CHAT, p.headers(Range="bytes=999999-"), BODY))
    p.edge_response("routed request with a Range header", r, 200)
    p.add("responses", "a Range header gets the whole answer",
          r.status == 200 and not r.header("content-range") and not r.header("accept-ranges"),
          r.header("content-range") or r.header("accept-ranges"))


def probe_hash(p: Probe) -> None:
    for what, value, status in (("hash missing", "", 428), ("hash wrong", "f" * 16, 412),
                                ("hash malformed", (p.hash or "0" * 16).upper() + "\xa0", 400)):
        r = p.send(request("POST", CHAT, p.headers(X_Constitutional_Hash=value), BODY))
        p.edge_response(what, r, status)


def probe_keys(p: Probe) -> None:
    if not p.key:
        r = p.send(request("POST", CHAT, p.headers(Authorization="Bearer not-a-key"), BODY))
        p.add("keys", "a made-up key is refused or ignored, never a 5xx", r.status < 500, f"{r.status}")
        return
    for what, auth in (("no key", ""), ("wrong key", "Bearer hir-wrong-" + "x" * 20),
                       ("not a bearer key", "Basic " + p.key)):
        r = p.send(request("POST", CHAT, p.headers(Authorization=auth), BODY))
        p.edge_response(what, r, 401)


def probe_errors(p: Probe) -> None:
    cases = [
        ("unknown path", request("GET", "/admin", {}), 404),
        ("invalid JSON", request("POST", CHAT, p.headers(), b'{"model":'), 400),
        ("duplicate key", request("POST", CHAT, p.headers(), b'{"model":"auto","model"  :"x","messages":[]}'), 400),
        # Read as `model` by a decoder that ignores case (Go's): a model the client picks.
        ("key that folds onto a routed field", request("POST", CHAT, p.headers(),
                                                        BODY[:-1] + b',"Model":"x"}'), 400),
        ("wrong content type", request("POST", CHAT, p.headers(Content_Type="text/plain"), BODY), 415),
        ("declared body too large", request("POST", CHAT, p.headers(), length=999_999_999), 413),
        ("header block too large", request("GET", "/", {"X-Big": "a" * 40000}), (431, 400)),
        ("URI too long", request("GET", "/" + "a" * 40000, {}), 414),
        ("malformed request line", b"GET /%00 HTTP/1.1\r\nHost: r\r\n\r\n", 400),
        ("lower-case method", b"post /v1/chat/completions HTTP/1.1\r\nHost: r\r\n\r\n", 400),
        ("unsupported HTTP version", b"GET / HTTP/2.0\r\nHost: r\r\n\r\n", 505),
    ]
    for what, data, status in cases:
        p.edge_response(what, p.send(data), status)


def probe_methods(p: Probe) -> None:
    for method in ("GET", "PUT", "DELETE", "PATCH", "TRACE", "CONNECT"):
        target = "example.com:443" if method == "CONNECT" else CHAT
        r = p.send(request(method, target, p.headers()))
        p.edge_response(f"{method} on the chat path", r, (400, 405))


def probe_smuggling(p: Probe) -> None:
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: r\r\n\r\n"
    shapes = [
        ("Content-Length + Transfer-Encoding", b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        ("two Content-Length", b"Content-Length: 4\r\nContent-Length: 40\r\n", b"{}{}"),
        ("obfuscated Transfer-Encoding", b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"),
        ("Transfer-Encoding with a space before the colon", b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"),
        ("chunked body", b"Transfer-Encoding: chunked\r\n", b"2\r\n{}\r\n0\r\n\r\n"),
    ]
    head = (f"POST {CHAT} HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\n"
            f"X-Constitutional-Hash: {p.hash}\r\n").encode()
    for what, extra, body in shapes:
        r = p.send(head + extra + b"\r\n" + body + smuggled)
        p.edge_response(f"smuggling: {what}", r, (400, 411, 501))
        p.add("smuggling", f"{what}: no second request answered", b"/smuggled" not in r.rest
              and r.rest.count(b"HTTP/1.1 200") == 0, "")


# A burst arrives at once, as from a busy client: one request at a time, the limit
# refilled while each waited for its endpoint, and at the local stack's realistic
# latency `--burst 200` never met the 120-request burst of the demo policy.
BURST_CONNECTIONS = 64


def probe_burst(p: Probe, burst: int) -> None:
    data = request("POST", CHAT, p.headers(), BODY)
    with ThreadPoolExecutor(BURST_CONNECTIONS) as pool:
        for start in range(0, burst, BURST_CONNECTIONS):   # in waves: stop at the first 429
            wave = pool.map(lambda _: p.send(data), range(start, min(burst, start + BURST_CONNECTIONS)))
            limited = [r for r in wave if r.status == 429]
            if limited:
                r = limited[0]
                p.edge_response("over the limit", r, 429)
                p.add("limits", "a 429 says when to retry", r.header("retry-after").isdigit(), r.header("retry-after"))
                p.add("limits", "a 429 carries RateLimit headers", r.header("ratelimit-policy"), "")
                return
    p.add("limits", f"a burst of {burst} requests meets a limit (429)", False, "no 429 seen", 2)


def probe_tls(p: Probe, target: Target) -> None:
    r = exchange(target, request("GET", "/", {}))
    hsts = r.header("strict-transport-security")
    age = int(hsts.split("max-age=")[1].split(";")[0]) if "max-age=" in hsts else 0
    p.add("tls", "HSTS on HTTPS answers, max-age at least a year", age >= ONE_YEAR, hsts or "absent", 2)
    for version, name in ((ssl.TLSVersion.TLSv1, "TLS 1.0"), (ssl.TLSVersion.TLSv1_1, "TLS 1.1")):
        ctx = target.context(minimum_version=version, maximum_version=version)
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        p.add("tls", f"{name} is refused", not _handshakes(target, ctx), "", 2)
    p.add("tls", "TLS 1.2 or 1.3 is accepted", _handshakes(target, target.context()), "", 2)
    ctx = target.context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    offered = _handshakes(target, ctx, alpn=True) == "h2"
    if offered:
        p.add("tls", "h2 is offered and routes like HTTP/1.1", _h2_routes(p, target) == "200 2",
              "checked with curl --http2" if shutil.which("curl") else "curl not found", 2)
        # Over h2 the DATA frames, not the header, carry the body: nginx refuses a
        # mismatch itself, while reading the body, where no error page may be set.
        answer = _h2_routes(p, target, "-H", f"Content-Length: {len(BODY) - 1}",
                            write="%{http_code} %{http_version} %{content_type}")
        p.add("tls", "over h2, a body that breaks its Content-Length is a JSON 400",
              answer.startswith("400 2 application/json"), answer or "curl not found")
    else:
        p.add("tls", "h2 is not offered where it cannot work (ALPN settles on http/1.1)", True, "")


def _handshakes(target: Target, ctx, alpn=False):
    try:
        sock = target.connect(5, ctx)
    except (OSError, ssl.SSLError):
        return False
    chosen = sock.selected_alpn_protocol() if alpn else True
    sock.close()
    return chosen


def _h2_routes(p: Probe, target: Target, *extra: str, write="%{http_code} %{http_version}") -> str:
    """What curl writes (`write`) for the routed request over h2, or "" without curl."""
    if not shutil.which("curl"):
        return ""
    cmd = ["curl", "-s", "--http2", "-o", "/dev/null", "-w", write,
           f"https://{target.host}:{target.port}{CHAT}", "-d", BODY.decode(), *extra]
    cmd += ["--cacert", target.cafile] if target.cafile else []
    cmd += ["-k"] if target.insecure else []
    for k, v in p.headers().items():
        cmd += ["-H", f"{k}: {v}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()


def run_all(target: Target, https: Target | None, chash: str, key: str, burst: int) -> list[Finding]:
    p = Probe(target, chash, key)
    learn_hash(p)
    for probe in (probe_routing, probe_hash, probe_keys, probe_errors, probe_methods, probe_smuggling):
        probe(p)
    if https is not None:
        tls = Probe(https, p.hash, key)
        probe_tls(tls, https)
        tls.edge_response("routed request over HTTPS", tls.send(request("POST", CHAT, tls.headers(), BODY)), 200)
        p.findings += tls.findings
    if burst:
        probe_burst(p, burst)
    return p.findings
