"""The router in a container: one supervisor process (PID 1's child under the
container runtime) that renders nginx from the policy, runs the sidecar and
nginx, and stops the container when either dies.

    python -m sidecar container [--role all|sidecar|nginx]

- SIGHUP: reload the policy. It is loaded first; a policy that does not load is
  logged and the running one kept. Then nginx is re-rendered, checked (`nginx
  -t`) and reloaded, and the sidecar is told (it compiles the file itself).
- SIGTERM / SIGINT: drain. nginx stops accepting and finishes what it has
  (SIGQUIT), then the sidecar stops. Exit 0.
- Either process exiting on its own: the other is stopped, exit 1, so the
  runtime (or Kubernetes) restarts the container.
- The policy file changing (a Kubernetes ConfigMap update swaps a symlink) is a
  SIGHUP too: checked every `--watch-seconds`.
- Endpoint host names that do not resolve (yet) must not keep the edge from
  starting: their upstream is rendered as unreachable (nginx answers 502 and the
  decision's fallbacks take over), a warning names them, and they are resolved
  again every `--resolve-seconds`; when that changes, nginx is reloaded. The
  request path pays nothing for this.

`--role sidecar` / `--role nginx` split the two for a Kubernetes pod with one
container each (sockets and the rendered config on a shared emptyDir; the
sidecar container re-renders and signals nginx through the shared process
namespace).

Everything writable lives under `--run-dir` (a tmpfs), so the root filesystem
can be read-only.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from sidecar.policy.spec import PolicyError, load_policy
from sidecar.tools import nginx_render

log = logging.getLogger("sidecar.container")


def add_arguments(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    p.add_argument("--role", choices=("all", "sidecar", "nginx"), default=env("HIR_ROLE", "all"))
    p.add_argument("--policy", default=env("HIR_POLICY", "/etc/hir/policy.yaml"))
    p.add_argument("--mode", choices=("lua", "stock"), default=env("HIR_MODE", "lua"))
    p.add_argument("--listen", default=env("HIR_LISTEN", "0.0.0.0:8080"))
    p.add_argument("--tls-listen", default=env("HIR_TLS_LISTEN", "0.0.0.0:8443"),
                   help="used when the certificate and key exist")
    p.add_argument("--tls-cert", default=env("HIR_TLS_CERT", "/etc/hir/tls/tls.crt"))
    p.add_argument("--tls-key", default=env("HIR_TLS_KEY", "/etc/hir/tls/tls.key"))
    p.add_argument("--admin-listen", default=env("HIR_ADMIN_LISTEN", "0.0.0.0:9200"),
                   help="the sidecar's /metrics and /healthz")
    p.add_argument("--feedback", default=env("HIR_FEEDBACK", "127.0.0.1:9190"),
                   help="where nginx sends its access log to the sidecar: loopback HOST:PORT (UDP) "
                        "or a unix socket path")
    p.add_argument("--redis", default=env("HIR_REDIS", ""), help="shared limits (several replicas)")
    p.add_argument("--run-dir", default=env("HIR_RUN_DIR", "/tmp/hir"))
    p.add_argument("--watch-seconds", type=float, default=float(env("HIR_WATCH_SECONDS", "2")))
    p.add_argument("--resolve-seconds", type=float, default=float(env("HIR_RESOLVE_SECONDS", "30")))
    p.add_argument("--drain-seconds", type=float, default=float(env("HIR_DRAIN_SECONDS", "20")))


def unresolvable(policy) -> set[str]:
    """Names of endpoints whose host does not resolve now."""
    out = set()
    for e in policy.endpoints:
        try:
            socket.getaddrinfo(e.host, e.port, proto=socket.IPPROTO_TCP)
        except (socket.gaierror, UnicodeError):
            out.add(e.name)
    return out


class Supervisor:
    def __init__(self, args):
        self.args = args
        self.run_dir = Path(args.run_dir)
        self.policy = load_policy(args.policy, os.environ)
        self.unresolved: set[str] = set()
        self.procs: dict[str, subprocess.Popen] = {}
        self.stopping = False
        self.reload_wanted = False
        self.policy_stat = self._stat()

    # -- rendering -----------------------------------------------------------
    def options(self) -> nginx_render.NginxOptions:
        a = self.args
        tls = Path(a.tls_cert).is_file() and Path(a.tls_key).is_file()
        return nginx_render.NginxOptions(
            mode=a.mode, listen=a.listen, sidecar_sockets=[str(self.run_dir / "sidecar.sock")],
            run_dir=str(self.run_dir), feedback_sockets=[a.feedback],
            tls_listen=a.tls_listen if tls else "", tls_cert=a.tls_cert if tls else "",
            tls_key=a.tls_key if tls else "", daemon=False,
            # Started as root (not in the image, which runs as uid 10001): workers keep
            # this user so they can reach the run dir's sockets.
            user=getpass.getuser() if os.geteuid() == 0 else "")

    def render(self, policy) -> Path:
        unresolved = unresolvable(policy)
        for name in sorted(unresolved - self.unresolved):
            e = policy.endpoint_by_name[name]
            log.warning("endpoint %s: host %s does not resolve; nginx answers 502 for it (its "
                        "fallbacks take over) until it does (checked every %g s)",
                        name, e.host, self.args.resolve_seconds)
        for name in sorted(self.unresolved - unresolved):
            log.info("endpoint %s resolves now", name)
        self.unresolved = unresolved
        conf = nginx_render.write_config(policy, self.options(), unresolved=unresolved)
        check = subprocess.run(["nginx", "-e", "stderr", "-t", "-q", "-p", str(self.run_dir),
                                "-c", str(conf)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx rejected the rendered config: {check.stderr.strip()}")
        return conf

    # -- processes -------------------------------------------------------------
    def start_sidecar(self) -> None:
        a = self.args
        argv = [sys.executable, "-m", "sidecar", "serve", "--policy", a.policy,
                "--socket", str(self.run_dir / "sidecar.sock"),
                "--feedback-socket", a.feedback, "--tcp", a.admin_listen]
        if a.redis:
            argv += ["--redis", a.redis]
        self.procs["sidecar"] = subprocess.Popen(argv)
        deadline = time.monotonic() + 30
        while not (self.run_dir / "sidecar.sock").exists():
            if self.procs["sidecar"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the sidecar did not start")
            time.sleep(0.05)

    def start_nginx(self) -> None:
        conf = self.run_dir / "nginx.conf"
        self.procs["nginx"] = subprocess.Popen(["nginx", "-e", "stderr", "-p", str(self.run_dir),
                                                "-c", str(conf)])

    def nginx_pid(self) -> int | None:
        if "nginx" in self.procs:
            return self.procs["nginx"].pid
        try:  # --role sidecar: nginx runs in the other container of the pod
            return int((self.run_dir / "nginx.pid").read_text())
        except (OSError, ValueError):
            return None

    # -- reload ----------------------------------------------------------------
    def _stat(self):
        try:
            st = os.stat(self.args.policy)  # follows the ConfigMap's symlinks
            return (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            return None

    def reload(self) -> None:
        try:
            new = load_policy(self.args.policy, os.environ)
        except PolicyError as exc:
            log.error("policy NOT reloaded, still serving %s: %s", self.policy.version, exc)
            return
        self._apply(new)

    def _apply(self, new) -> None:
        if self.args.role in ("all", "sidecar"):
            try:
                self.render(new)
            except RuntimeError as exc:
                log.error("policy %s NOT applied: %s", new.version, exc)
                return
            if "sidecar" in self.procs:
                self.procs["sidecar"].send_signal(signal.SIGHUP)
            pid = self.nginx_pid()
            if pid:
                os.kill(pid, signal.SIGHUP)
        self.policy = new
        log.info("policy %s applied", new.version)

    def recheck_hosts(self) -> None:
        if unresolvable(self.policy) != self.unresolved:
            self._apply(self.policy)

    # -- main loop -------------------------------------------------------------
    def run(self) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        signal.signal(signal.SIGHUP, lambda *_: setattr(self, "reload_wanted", True))
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "stopping", True))
        role = self.args.role
        if role == "nginx":
            # The sidecar container renders the config into the shared run dir.
            deadline = time.monotonic() + 60
            while not (self.run_dir / "nginx.conf").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            self.start_nginx()
        else:
            self.render(self.policy)
            self.start_sidecar()
            if role == "all":
                self.start_nginx()
        log.info("router up: role %s, policy %s version %s", role, self.policy.source, self.policy.version)
        next_watch = next_resolve = time.monotonic()
        while not self.stopping:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    log.error("%s exited with %s; stopping the container", name, proc.returncode)
                    self.stop()
                    return 1
            now = time.monotonic()
            if role != "nginx" and now >= next_watch:
                next_watch = now + self.args.watch_seconds
                stat = self._stat()
                if stat != self.policy_stat:
                    self.policy_stat = stat
                    self.reload_wanted = True
            if self.reload_wanted:
                self.reload_wanted = False
                if role == "nginx":
                    self.procs["nginx"].send_signal(signal.SIGHUP)
                else:
                    self.reload()
            if role != "nginx" and now >= next_resolve:
                next_resolve = now + self.args.resolve_seconds
                if self.unresolved:
                    self.recheck_hosts()
            time.sleep(0.1)
        self.stop()
        return 0

    def stop(self) -> None:
        """nginx first (it drains: stops accepting, finishes requests in flight, which
        still need the sidecar for fallbacks' feedback), then the sidecar."""
        deadline = time.monotonic() + self.args.drain_seconds
        for name in ("nginx", "sidecar"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGQUIT if name == "nginx" else signal.SIGTERM)
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()


def main(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        supervisor = Supervisor(args)
    except PolicyError as exc:
        log.error("cannot start: %s", exc)
        return 2
    try:
        return supervisor.run()
    except RuntimeError as exc:
        log.error("cannot start: %s", exc)
        supervisor.stop()
        return 1


def healthcheck() -> int:
    """The image's HEALTHCHECK: nginx answers /healthz and the sidecar its own."""
    import urllib.request
    listen = os.environ.get("HIR_LISTEN", "0.0.0.0:8080").rpartition(":")[2]
    admin = os.environ.get("HIR_ADMIN_LISTEN", "0.0.0.0:9200").rpartition(":")[2]
    try:
        for port in (listen, admin):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status != 200:
                    return 1
    except OSError:
        return 1
    return 0
