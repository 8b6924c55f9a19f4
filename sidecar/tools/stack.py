"""The local stack as processes: simulated endpoints, the sidecar, nginx.

Used by `python -m sidecar stack` and by the integration tests, so both run the
same configuration users deploy.
"""

from __future__ import annotations

import getpass
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import xxhash

from sidecar.tools import nginx_render
from sidecar.policy.spec import PolicyError, load_policy


def wait_for(connect, what: str, timeout: float = 15.0, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while True:
        try:
            connect()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{what} exited with status {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not come up within {timeout:.0f}s") from None
            time.sleep(0.02)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tcp(host: str, port: int):
    return lambda: socket.create_connection((host, port), timeout=0.5).close()


def _unix(path: str):
    def connect():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
        finally:
            s.close()
    return connect


class Stack:
    def __init__(self, policy_path: str | Path, run_dir: str | Path, *, mode: str = "lua",
                 listen: str = "127.0.0.1:8080", latency_scale: float = 1.0,
                 workers: int = 1, env: dict | None = None, quiet: bool = True,
                 redis: str = "", tls_listen: str = "", redirect_http: bool = False,
                 client_timeout: str = "10s", health_down_seconds: float = 10.0,
                 request_timeout_s: int = 30, fault_rates: str = "", admin_listen: str = "",
                 feedback: str = "udp", sidecar_timeout_ms: int = 250):
        self.policy_path = Path(policy_path).resolve()
        self.run_dir = Path(run_dir).resolve()
        self.mode, self.listen, self.latency_scale = mode, listen, latency_scale
        self.workers = workers
        self.redis = redis
        self.tls_listen, self.redirect_http = tls_listen, redirect_http
        self.client_timeout = client_timeout
        self.request_timeout_s = request_timeout_s
        self.sidecar_timeout_ms = sidecar_timeout_ms   # a decision slower than this fails over
        self.fault_rates = fault_rates
        # Each sidecar's admin listener (/metrics, /healthz): HOST:PORT, PORT+1, ...
        host, _, port = admin_listen.rpartition(":")
        self.admin = [f"{host}:{int(port) + i}" for i in range(workers)] if admin_listen else []
        self.health_down_seconds = health_down_seconds
        self.env = {**os.environ, **(env or {})}
        self.quiet = quiet
        self.procs: dict[str, subprocess.Popen] = {}
        self.policy = load_policy(self.policy_path, self.env)
        self.sockets = [str(self.run_dir / f"sidecar-{i}.sock") for i in range(workers)]
        # The feedback channel: UDP on loopback (the default), or unix datagram sockets.
        self.feedback_sockets = ([f"127.0.0.1:{_free_udp_port()}" for _ in range(workers)]
                                 if feedback == "udp" else
                                 [str(self.run_dir / f"feedback-{i}.sock") for i in range(workers)])

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        out = open(self.run_dir / f"{name}.log", "ab") if self.quiet else None
        proc = subprocess.Popen(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT if out else None,
                                start_new_session=True)
        self.procs[name] = proc
        return proc

    def start(self) -> "Stack":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.start_mock()
            for i in range(self.workers):
                self.start_sidecar(i)
            self.start_nginx()
        except BaseException:
            self.stop()
            raise
        return self

    def start_mock(self) -> None:
        proc = self._spawn("mockllm", [sys.executable, "-m", "sidecar", "mockllm", "--policy",
                                       str(self.policy_path), "--latency-scale", str(self.latency_scale),
                                       "--fault-rates", self.fault_rates])
        for e in self.policy.endpoints:
            if e.scheme == "http" and e.host in ("127.0.0.1", "localhost"):
                wait_for(_tcp(e.host, e.port), f"mock endpoint {e.name}", proc=proc)

    def start_sidecar(self, index: int = 0) -> None:
        path = self.sockets[index]
        argv = [sys.executable, "-m", "sidecar", "serve", "--policy", str(self.policy_path),
                "--socket", path, "--feedback-socket", self.feedback_sockets[index],
                "--health-down-seconds", str(self.health_down_seconds),
                "--feedback-share", f"{index}/{self.workers}"]
        if self.redis:
            argv += ["--redis", self.redis]
        if self.admin:
            argv += ["--tcp", self.admin[index]]
        proc = self._spawn(f"sidecar-{index}", argv)
        deadline = time.monotonic() + 15
        while not os.path.exists(path):  # the old socket file was unlinked at start
            if proc.poll() is not None or time.monotonic() > deadline:
                log = self.run_dir / f"sidecar-{index}.log"
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"sidecar {index} did not start (exit {proc.poll()}); {log}:\n{tail}")
            time.sleep(0.02)
        wait_for(_unix(path), f"sidecar {index}", proc=proc)

    def certificate(self) -> tuple[str, str]:
        """A self-signed certificate for localhost, made on first run."""
        tls = self.run_dir / "tls"
        cert, key = tls / "localhost.crt", tls / "localhost.key"
        if not cert.exists():
            tls.mkdir(parents=True, exist_ok=True)
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "825",
                            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                            "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
            key.chmod(0o600)
        return str(cert), str(key)

    def stop_sidecar(self, index: int = 0, sig=signal.SIGKILL) -> None:
        proc = self.procs.pop(f"sidecar-{index}", None)
        if proc is not None:
            proc.send_signal(sig)
            proc.wait(10)

    def nginx_options(self) -> nginx_render.NginxOptions:
        cert, key = self.certificate() if self.tls_listen else ("", "")
        return nginx_render.NginxOptions(mode=self.mode, listen=self.listen,
                                         tls_listen=self.tls_listen, tls_cert=cert, tls_key=key,
                                         redirect_http=self.redirect_http,
                                         client_timeout=self.client_timeout,
                                         request_timeout_s=self.request_timeout_s,
                                         sidecar_timeout_ms=self.sidecar_timeout_ms,
                                         feedback_sockets=self.feedback_sockets,
                                         sidecar_sockets=self.sockets, run_dir=str(self.run_dir),
                                         worker_processes="2",
                                         # Workers must reach the run dir's sockets and temp files.
                                         user=getpass.getuser() if os.geteuid() == 0 else "")

    def start_nginx(self, reload: bool = False) -> None:
        conf = nginx_render.write_config(self.policy, self.nginx_options())
        check = subprocess.run(["nginx", "-t", "-q", "-p", str(self.run_dir), "-c", str(conf)],
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx rejected the rendered config:\n{check.stderr}")
        if reload:
            subprocess.run(["nginx", "-s", "reload", "-p", str(self.run_dir), "-c", str(conf)],
                           check=True, capture_output=True)
            return
        proc = self._spawn("nginx", ["nginx", "-p", str(self.run_dir), "-c", str(conf)])
        host, _, port = self.listen.rpartition(":")
        wait_for(_tcp(host, int(port)), "nginx", proc=proc)

    def sidecar_get(self, target: str, index: int = 0) -> bytes:
        """GET `target` (/healthz, /metrics) on a sidecar's socket → the body."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect(self.sockets[index])
            s.sendall(f"GET {target} HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        finally:
            s.close()
        return data.split(b"\r\n\r\n", 1)[1]

    def sidecar_health(self, index: int = 0) -> dict:
        return json.loads(self.sidecar_get("/healthz", index))

    def _nginx_workers(self) -> set[int]:
        master = self.procs["nginx"].pid
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        return {int(pid) for pid in children}

    def nginx_health(self) -> dict:
        host, _, port = self.listen.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=2)
        try:
            conn.request("GET", "/healthz")
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def _nginx_version(self) -> str:
        """The policy version nginx answers with, or "" if it does not answer."""
        try:
            return self.nginx_health().get("policy_version", "")
        except (OSError, ValueError, http.client.HTTPException):
            return ""

    def reload(self, timeout: float = 10.0) -> str:
        """Apply an edited policy: validate it, re-render and reload nginx if its
        endpoints changed, and have every sidecar swap to it. Raises PolicyError
        (and changes nothing) if the edit does not load, ReloadSuperseded if the
        file changed again meanwhile (apply the newer one), RuntimeError if a
        process did not take it in time."""
        new = load_policy(self.policy_path, self.env)
        rendered = (nginx_render.render_upstreams(new), nginx_render.render_config(new, self.nginx_options()))
        on_disk = ((self.run_dir / "upstreams.conf").read_text(), (self.run_dir / "nginx.conf").read_text())
        self.policy = new
        deadline = time.monotonic() + timeout

        def wait(done, what: str) -> None:
            while not done():
                if self.file_version() != new.version:
                    raise ReloadSuperseded(f"{self.policy_path.name} changed again while {what} "
                                           f"was taking {new.version}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{what} did not take policy {new.version}")
                time.sleep(0.02)

        # The files on disk are what the last reload wrote, not what nginx runs: a
        # reload cut short by a newer edit, or one nginx failed to take, can leave
        # this version written and never taken. Ask nginx too.
        if rendered != on_disk or self._nginx_version() != new.version:
            old_workers = self._nginx_workers()
            self.start_nginx(reload=True)
            # Old workers finish their requests while new ones start, and until they
            # exit they may still accept a connection: wait until they are gone.
            wait(lambda: (self.nginx_health().get("policy_version") == new.version
                          and not old_workers & self._nginx_workers()), "nginx")
        # Each sidecar reads the file itself on SIGHUP: if it changed since `new`
        # was loaded, the sidecar has the newer edit and `wait` says so.
        for i in range(self.workers):
            self.procs[f"sidecar-{i}"].send_signal(signal.SIGHUP)
        for i in range(self.workers):
            wait(lambda: self.sidecar_health(i)["policy_version"] == new.version, f"sidecar {i}")
        return new.version

    def file_version(self) -> str:
        """The policy version of the file as it is now (what a reload would load)."""
        try:
            return xxhash.xxh3_64_hexdigest(self.policy_path.read_bytes())
        except OSError:
            return ""

    def stop(self) -> None:
        for name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGQUIT if name == "nginx" else signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def start_prometheus(stack: "Stack", listen: str = "127.0.0.1:9090") -> subprocess.Popen:
    """Debian's prometheus with the shipped alert rules, scraping the stack's sidecars."""
    import shutil
    run = stack.run_dir / "prometheus"
    run.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", run / "alerts.yml")
    config = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    targets = ", ".join(f'"{a}"' for a in stack.admin)
    config = config.replace('["127.0.0.1:9200"]', f"[{targets}]")
    (run / "prometheus.yml").write_text(config)
    return stack._spawn("prometheus", ["prometheus", f"--config.file={run / 'prometheus.yml'}",
                                       f"--storage.tsdb.path={run / 'data'}", f"--web.listen-address={listen}"])


class ReloadSuperseded(RuntimeError):
    """The policy file changed again while a reload was being verified."""


def watch_policy(stack: Stack, interval: float = 0.5, retry_after: float = 1.0) -> None:
    """Apply every edit of the policy file until a process exits. A newer edit
    supersedes the one being verified; a reload that cannot be verified is logged
    and retried; an edit that does not load is reported and the old policy kept.
    Nothing here stops the stack."""
    applied = stack.policy.version
    retry_at = 0.0
    # A stopped stack has no processes left (stop() clears them): that ends it too.
    while stack.procs and all(p.poll() is None for p in stack.procs.values()):
        time.sleep(interval)
        wanted = stack.file_version()
        if wanted in ("", applied) or time.monotonic() < retry_at:
            continue
        try:
            applied = stack.reload()
            print(f"policy reloaded: version {applied}", flush=True)
        except PolicyError as exc:
            applied = wanted  # reported once; the next edit is tried again
            print(f"policy NOT reloaded, still serving the previous one: {exc}", flush=True)
        # A reload cut short may have left some processes on the edit it was taking.
        # Forget what was applied, so the file is applied again even when it went
        # back to that version (A -> B -> A must not leave a sidecar on B).
        except ReloadSuperseded as exc:
            applied = None
            print(f"policy reload superseded by a newer edit: {exc}", flush=True)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            applied = None
            retry_at = time.monotonic() + retry_after
            print(f"policy reload not verified, retrying in {retry_after:g} s: {exc}", flush=True)


def run(policy: str, *, mode: str, listen: str, run_dir: str, latency_scale: float,
        tls_listen: str = "", redirect_http: bool = False, fault_rates: str = "",
        admin_listen: str = "127.0.0.1:9200", monitoring: bool = False) -> int:
    stack = Stack(policy, run_dir, mode=mode, listen=listen, latency_scale=latency_scale, quiet=True,
                  tls_listen=tls_listen, redirect_http=redirect_http, fault_rates=fault_rates,
                  admin_listen=admin_listen)
    # SIGTERM (kill, timeout, systemd) must tear the children down like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    stack.start()
    print(f"local stack up ({mode} mode): http://{listen}" + (f" and https://{tls_listen} (self-signed: "
          f"{stack.run_dir}/tls/localhost.crt)" if tls_listen else "") + f"  (logs in {stack.run_dir}; Ctrl-C stops)")
    print(f"  curl -s {listen}/v1/chat/completions -H 'Content-Type: application/json' "
          f"-H 'X-Constitutional-Hash: {stack.policy.constitutional_hash}' "
          "-d '{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'")
    for address in stack.admin:  # loopback only; the public listener answers 404 for these
        print(f"metrics: http://{address}/metrics  (and /healthz)")
    if monitoring:
        import shutil
        if shutil.which("prometheus") and stack.admin:
            start_prometheus(stack)
            print("prometheus: http://127.0.0.1:9090  (the router's series, alerts at /alerts)")
        else:
            print("--monitoring: prometheus is not installed (apt-get install prometheus)")
    print(f"  edit {stack.policy_path} and the stack reloads it")
    try:
        watch_policy(stack)
        failed = [n for n, p in stack.procs.items() if p.poll() is not None]
        print(f"stopped: {', '.join(failed)} exited; see {stack.run_dir}/*.log", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()
