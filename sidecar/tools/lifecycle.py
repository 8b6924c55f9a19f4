"""Changing policy safely: every policy the router applies is kept by version in
a state directory, a deploy checks, applies, verifies and rolls itself back, and
state can be backed up and restored.

    python -m sidecar policy deploy CANDIDATE --live PATH --state DIR --health URL [--probe URL]
    python -m sidecar policy rollback [VERSION] --live PATH --state DIR --health URL
    python -m sidecar policy history --state DIR
    python -m sidecar policy backup OUT.tar.gz --state DIR [--redis URL]
    python -m sidecar policy restore IN.tar.gz --state DIR [--redis URL]

deploy: load + golden suite (`check`) -> render nginx and `nginx -t` it -> keep the
version -> replace the live file atomically -> have the router reload (SIGHUP to
`--pid-file`'s process, e.g. the container supervisor; without one, the stack's
or the container's file watcher notices) -> health check: the sidecar's
/healthz (`--health`) reports the new version, and each `--probe` URL answers a
routed request with 2xx -> on any failure the previous version goes back the
same way and the deploy exits 1. The version is the policy's own (xxh3 of the
file), so the state directory and /healthz agree on names.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import xxhash

from sidecar.policy.spec import PolicyError, load_policy
from sidecar.tools import golden, nginx_render

PROBE_BODY = b'{"model":"auto","messages":[{"role":"user","content":"health check"}],"max_tokens":1}'


class DeployFailed(Exception):
    pass


class State:
    """versions/<version>.yaml and history.jsonl under one directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.versions = self.root / "versions"
        self.versions.mkdir(parents=True, exist_ok=True)
        self.history_path = self.root / "history.jsonl"

    def keep(self, raw: bytes) -> str:
        version = xxhash.xxh3_64_hexdigest(raw)
        path = self.versions / f"{version}.yaml"
        if not path.exists():
            path.write_bytes(raw)
        return version

    def raw(self, version: str) -> bytes:
        matches = sorted(self.versions.glob(f"{version}*.yaml"))
        if len(matches) != 1:
            raise DeployFailed(f"no single kept version matches {version!r} "
                               f"({len(matches)} found; see `policy history`)")
        return matches[0].read_bytes()

    def record(self, **entry) -> None:
        entry = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **entry}
        with self.history_path.open("a") as f:
            f.write(json.dumps(entry) + "\n")

    def history(self) -> list[dict]:
        if not self.history_path.exists():
            return []
        return [json.loads(line) for line in self.history_path.read_text().splitlines() if line]

    def applied(self) -> list[str]:
        """Versions that ended up live, oldest first (a rolled-back deploy does not count)."""
        return [e["version"] for e in self.history() if e["result"] in ("applied", "restored")]


def check(path: Path) -> None:
    try:
        policy = load_policy(path, os.environ)
    except PolicyError as exc:
        raise DeployFailed(f"check: {exc}") from None
    suite = golden.suite_for(path)
    if suite.exists():
        failures = golden.run_suite(policy, suite)
        if failures:
            raise DeployFailed("check: golden suite: " + "; ".join(failures[:3]))
    if subprocess.run(["which", "nginx"], capture_output=True).returncode == 0:
        with tempfile.TemporaryDirectory() as tmp:
            opts = nginx_render.NginxOptions(run_dir=tmp, sidecar_sockets=[f"{tmp}/s.sock"])
            conf = nginx_render.write_config(policy, opts)
            test = subprocess.run(["nginx", "-e", "stderr", "-t", "-q", "-p", tmp, "-c", str(conf)],
                                  capture_output=True, text=True)
            if test.returncode != 0:
                raise DeployFailed(f"check: nginx -t: {test.stderr.strip()}")


def _write_live(live: Path, raw: bytes) -> None:
    tmp = live.with_name(f".{live.name}.{os.getpid()}.tmp")
    tmp.write_bytes(raw)
    os.replace(tmp, live)   # atomic: a watcher never reads half a file


def _signal(pid_file: str) -> None:
    if pid_file:
        os.kill(int(Path(pid_file).read_text().split()[0]), signal.SIGHUP)


def _get(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def verify(version: str, health: str, probes: list[str], chash: str, timeout: float) -> None:
    """The sidecar serves `version` and every probe gets a routed 2xx, within `timeout`."""
    deadline = time.monotonic() + timeout
    seen = ""
    while True:
        try:
            status, body = _get(health)
            seen = json.loads(body).get("policy_version", "") if status == 200 else f"HTTP {status}"
        except (OSError, ValueError) as exc:
            seen = str(exc)
        if seen == version:
            break
        if time.monotonic() > deadline:
            raise DeployFailed(f"health: {health} still reports {seen!r}, not {version}")
        time.sleep(0.1)
    for url in probes:
        request = urllib.request.Request(url, data=PROBE_BODY, method="POST", headers={
            "Content-Type": "application/json", "X-Constitutional-Hash": chash})
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                status = r.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError as exc:
            raise DeployFailed(f"probe {url}: {exc}") from None
        if not 200 <= status < 300:
            raise DeployFailed(f"probe {url}: HTTP {status}")


def apply(state: State, live: Path, raw: bytes, *, action: str, health: str, probes: list[str],
          pid_file: str = "", timeout: float = 20.0) -> str:
    """Make `raw` the live policy and verify it; on failure put the previous one back."""
    previous_raw = live.read_bytes() if live.exists() else b""
    previous = state.keep(previous_raw) if previous_raw else ""
    version = state.keep(raw)
    policy = load_policy(state.versions / f"{version}.yaml", os.environ)
    _write_live(live, raw)
    _signal(pid_file)
    try:
        verify(version, health, probes, policy.constitutional_hash, timeout)
    except DeployFailed as exc:
        if not previous_raw:
            state.record(action=action, version=version, previous="", result="failed", detail=str(exc))
            raise
        _write_live(live, previous_raw)
        _signal(pid_file)
        back = load_policy(state.versions / f"{previous}.yaml", os.environ)
        try:
            verify(previous, health, [], back.constitutional_hash, timeout)
            detail = f"{exc}; rolled back to {previous}"
        except DeployFailed as again:
            detail = f"{exc}; rolling back to {previous} did not verify either: {again}"
        state.record(action=action, version=version, previous=previous, result="rolled-back",
                     detail=detail)
        raise DeployFailed(detail) from None
    state.record(action=action, version=version, previous=previous, result="applied")
    return version


def deploy(args) -> str:
    candidate = Path(args.candidate)
    check(candidate)
    state = State(args.state)
    live = Path(args.live)
    if live.exists() and not state.applied():
        state.record(action="adopt", version=state.keep(live.read_bytes()), previous="", result="applied")
    return apply(state, live, candidate.read_bytes(), action="deploy", health=args.health,
                 probes=args.probe or [], pid_file=args.pid_file, timeout=args.timeout)


def rollback(args) -> str:
    state = State(args.state)
    live = Path(args.live)
    if args.version:
        raw = state.raw(args.version)
    else:
        current = xxhash.xxh3_64_hexdigest(live.read_bytes())
        earlier = [v for v in state.applied() if v != current]
        if not earlier:
            raise DeployFailed("nothing to roll back to: no earlier version was applied")
        raw = state.raw(earlier[-1])
    return apply(state, live, raw, action="rollback", health=args.health, probes=args.probe or [],
                 pid_file=args.pid_file, timeout=args.timeout)


def backup(args) -> int:
    """The state directory and, with --redis, the router's limit and budget keys
    (DUMP + PTTL), in one tar.gz."""
    state = State(args.state)
    with tarfile.open(args.archive, "w:gz") as tar:
        tar.add(state.root, arcname="state")
        if args.redis:
            dumped = _redis_dump(args.redis, args.redis_prefix)
            with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
                for key, ttl, value in dumped:
                    f.write(json.dumps({"key": key, "pttl": ttl, "dump": value.hex()}) + "\n")
            tar.add(f.name, arcname="redis.jsonl")
            os.unlink(f.name)
            print(f"redis: {len(dumped)} keys")
    print(f"backup: {args.archive} ({len(state.applied())} applied versions)")
    return 0


def restore(args) -> int:
    state_root = Path(args.state)
    with tarfile.open(args.archive, "r:gz") as tar, tempfile.TemporaryDirectory() as tmp:
        tar.extractall(tmp, filter="data")
        src = Path(tmp) / "state"
        for path in src.rglob("*"):
            if path.is_file():
                dest = state_root / path.relative_to(src)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(path.read_bytes())
        redis_file = Path(tmp) / "redis.jsonl"
        if args.redis and redis_file.exists():
            rows = [json.loads(line) for line in redis_file.read_text().splitlines() if line]
            _redis_restore(args.redis, rows)
            print(f"redis: {len(rows)} keys restored")
    State(state_root).record(action="restore", version="", previous="", result="restored-state")
    print(f"restored into {state_root}")
    return 0


def _redis_dump(url: str, prefix: str):
    import redis
    client = redis.Redis.from_url(url)
    out = []
    for key in client.scan_iter(match=prefix + "*", count=1000):
        value = client.dump(key)
        if value is not None:
            out.append((key.decode(), client.pttl(key), value))
    return out


def _redis_restore(url: str, rows) -> None:
    import redis
    client = redis.Redis.from_url(url)
    for row in rows:
        ttl = row["pttl"] if row["pttl"] and row["pttl"] > 0 else 0
        client.restore(row["key"], ttl, bytes.fromhex(row["dump"]), replace=True)


def history(args) -> int:
    for e in State(args.state).history():
        print(f"{e['at']}  {e['action']:9} {e['version'] or '-':16}  {e['result']}"
              + (f"  ({e['detail']})" if e.get("detail") else ""))
    return 0
