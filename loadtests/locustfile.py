"""Load test for the router: OpenAI-compatible traffic from real prompts.

    python loadtests/run.py --stack            # the local stack, report in loadtests/reports/
    locust -f loadtests/locustfile.py --host http://127.0.0.1:8080 --headless -u 20 -r 5 -t 2m \
        --kit-out loadtests/reports/manual --html loadtests/reports/manual/locust.html

`RouterUser` sends the scenario mix (loadtests/scenarios.py); each request is named
by the tier that served it (X-Route-Tier), so Locust's tables split by tier;
streams add "TTFT" and "ITL" (inter-token latency) entries. `EdgeCaseUser`
sends what real traffic also has — clients over their limit, bad hashes,
malformed bodies — and counts the documented error as a success. Every answer
is checked for the constitutional hash. Records go to --kit-out; the report
(loadtests/report.py) is written when the run ends. Open-loop arrivals:
`--kit-rate R` paces users so requests arrive as a Poisson process at R/s; a
step ramp: add `-f loadtests/locustfile.py,loadtests/shapes.py`; more load than
one core gives: `--processes N` (Locust forks N workers; records and the report
still come out whole).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

from locust import FastHttpUser, between, events, task
from locust.runners import WorkerRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scenarios, report
import report  # noqa: E402
import scenarios  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STATE = {"records": [], "scenarios": None, "options": None}
CHAT = "/v1/chat/completions"


@events.init_command_line_parser.add_listener
def _options(parser):
    kit = parser.add_argument_group("router kit")
    kit.add_argument("--kit-policy", default=str(ROOT / "policies" / "demo.yaml"),
                     help="policy for prices, tiers and latency targets in the report")
    kit.add_argument("--kit-profile", default=str(ROOT / "loadtests" / "profiles" / "default.yaml"))
    kit.add_argument("--kit-mix", default="", help="override weights, e.g. chat=5,code=2")
    kit.add_argument("--kit-stream-share", type=float, default=-1, help="default: the profile's")
    kit.add_argument("--kit-edge-share", type=float, default=-1, help="default: the profile's")
    kit.add_argument("--kit-hash", default="cdd01ef066bc6cf2")
    kit.add_argument("--kit-key", default="", help="API key (Authorization: Bearer)")
    kit.add_argument("--kit-rate", type=float, default=0, help="open loop: target requests/s in all")
    kit.add_argument("--kit-out", default="", help="directory for records and the report")
    kit.add_argument("--kit-seed", type=int, default=0)
    kit.add_argument("--kit-step-users", type=int, default=5, help="shapes.py: users added per step")
    kit.add_argument("--kit-step-seconds", type=float, default=30, help="shapes.py: seconds per step")


@events.init.add_listener
def _init(environment, **_):
    options = environment.parsed_options
    if options is None:
        return
    import yaml
    profile = yaml.safe_load(Path(options.kit_profile).read_text()) if options.kit_profile else {}
    stream = options.kit_stream_share if options.kit_stream_share >= 0 else profile.get("stream_share", 0.3)
    edge = options.kit_edge_share if options.kit_edge_share >= 0 else profile.get("edge_share", 0.1)
    RouterUser.weight = max(1, round(100 * (1 - edge)))
    EdgeCaseUser.weight = round(100 * edge)
    rng = random.Random(options.kit_seed or None)
    mix = scenarios.parse_mix(options.kit_mix, options.kit_profile)
    STATE["scenarios"] = scenarios.Scenarios(mix, scenarios.load_prompts(), stream, rng)
    STATE["options"] = options


@events.test_stop.add_listener
def _flush(environment, **_):
    options = STATE["options"]
    if options is None or not options.kit_out or not STATE["records"]:
        return
    out = Path(options.kit_out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / f"records-{os.getpid()}.jsonl").open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in STATE["records"])
    STATE["records"].clear()


@events.quitting.add_listener
def _report(environment, **_):
    options = STATE["options"]
    if options is None or not options.kit_out or isinstance(environment.runner, WorkerRunner):
        return
    _flush(environment)
    summary = report.write(Path(options.kit_out), options.kit_policy)
    print(f"router report: {Path(options.kit_out) / 'report.html'} "
          f"({summary['requests']} requests, hash on {summary['hash_share']:.1%} of answers)")


def _headers(user, **extra) -> dict:
    options = STATE["options"]
    h = {"Content-Type": "application/json", "X-Constitutional-Hash": options.kit_hash,
         # One simulated client per user: the stack trusts its loopback proxy, so
         # per-client limits apply per user, not to the whole load test.
         "X-Forwarded-For": user.client_ip}
    if options.kit_key:
        h["Authorization"] = f"Bearer {options.kit_key}"
    h.update(extra)
    return {k: v for k, v in h.items() if v is not None}


def _record(**fields) -> None:
    STATE["records"].append({"t": time.time(), **fields})


class RouterUser(FastHttpUser):
    """Routed traffic: the scenario mix, named by the serving tier."""

    weight = 90

    def wait_time(self):
        rate = STATE["options"].kit_rate
        if rate > 0:  # Poisson arrivals: every user an exponential clock at rate/users
            return random.expovariate(rate / max(1, self.environment.runner.user_count))
        return between(0.05, 0.5)(self)

    def on_start(self):
        n = random.randrange(1, 2**24)
        self.client_ip = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"

    @task
    def routed(self):
        kind, body = STATE["scenarios"].draw()
        if body.get("stream"):
            self._stream(kind, body)
        else:
            self._buffered(kind, body)

    def _buffered(self, kind, body):
        started = time.perf_counter()
        with self.client.post(CHAT, data=json.dumps(body), headers=_headers(self), name="routing",
                              catch_response=True) as resp:
            ms = (time.perf_counter() - started) * 1000
            tier = _tier_name(resp)
            resp.request_meta["name"] = tier
            usage = {}
            if resp.status_code == 200:
                try:
                    usage = (json.loads(resp.content) or {}).get("usage") or {}
                except ValueError:
                    resp.failure("routed answer is not JSON")
            elif resp.status_code == 429:
                resp.success()  # a limit doing its job, recorded as such
            _check_hash(resp)
            _record(kind=kind, stream=False, **_outcome(resp, tier, ms), ttft_ms=None, itl_ms=None,
                    usage=usage, text_chars=len(resp.content or b""))

    def _stream(self, kind, body):
        started = time.perf_counter()
        with self.client.post(CHAT, data=json.dumps(body), headers=_headers(self), name="routing",
                              stream=True, catch_response=True) as resp:
            tier = _tier_name(resp)
            resp.request_meta["name"] = tier
            arrivals, usage, chars, buffer = [], {}, 0, b""
            if resp.status_code == 200:
                while chunk := resp.stream.read(8192):
                    now = time.perf_counter()
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if not line.startswith(b"data: ") or line == b"data: [DONE]":
                            continue
                        event = json.loads(line[6:])
                        if event.get("usage"):
                            usage = event["usage"]
                        if event.get("choices"):
                            arrivals.append(now)
                            chars += len(event["choices"][0].get("delta", {}).get("content") or "")
            ms = (time.perf_counter() - started) * 1000
            resp.request_meta["response_time"] = ms
            if resp.status_code == 429:
                resp.success()
            ttft = (arrivals[0] - started) * 1000 if arrivals else None
            # Inter-token latency: the time after the first chunk over the tokens that
            # followed it (from usage), else per chunk.
            after = len(arrivals) > 1 and (arrivals[-1] - arrivals[0]) * 1000
            tokens = usage.get("completion_tokens") or 0
            per_chunk = tokens / len(arrivals) if tokens and arrivals else 1
            itl = after / max(1.0, tokens - per_chunk) if after and tokens else (
                after / (len(arrivals) - 1) if after else None)
            if resp.status_code == 200 and ttft is None:
                resp.failure("stream ended without a chunk")
            _check_hash(resp)
        if ttft is not None:
            events.request.fire(request_type="TTFT", name=tier, response_time=ttft, response_length=0,
                                exception=None, context={})
        if itl is not None:
            events.request.fire(request_type="ITL", name=tier, response_time=itl, response_length=0,
                                exception=None, context={})
        _record(kind=kind, stream=True, **_outcome(resp, tier, ms), ttft_ms=ttft, itl_ms=itl,
                usage=usage, text_chars=chars)


# What EdgeCaseUser sends and the status the router documents for it.
def _edge_cases(user):
    good = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    return [
        ("edge: bad hash", 412, good, _headers(user, **{"X-Constitutional-Hash": "f" * 16})),
        ("edge: no hash", 428, good, _headers(user, **{"X-Constitutional-Hash": None})),
        ("edge: malformed hash", 400, good, _headers(user, **{"X-Constitutional-Hash": "CDD0"})),
        ("edge: invalid JSON", 400, good[:-3], _headers(user)),
        ("edge: duplicate key", 400, '{"model":"auto","model"  :"expert","messages":[]}', _headers(user)),
        ("edge: wrong content type", 415, good, _headers(user, **{"Content-Type": "text/plain"})),
    ]


class EdgeCaseUser(FastHttpUser):
    """Clients over their limit, bad hashes, malformed bodies: the documented error is a success."""

    weight = 10
    wait_time = between(0.05, 0.3)

    def on_start(self):
        self.client_ip = "10.255.255.254"  # every edge user is one client, so its limit is met

    @task(6)
    def refused(self):
        name, status, body, headers = random.choice(_edge_cases(self))
        self._expect(name, (status,), body, headers)

    @task(4)
    def over_the_limit(self):
        body = json.dumps({"model": "nano", "messages": [{"role": "user", "content": "again"}]})
        self._expect("edge: over the limit", (200, 429), body, _headers(self))

    def _expect(self, name, statuses, body, headers):
        started = time.perf_counter()
        with self.client.post(CHAT, data=body, headers=headers, name=name, catch_response=True) as resp:
            ok = resp.status_code in statuses
            if ok and resp.status_code >= 400:
                error = _error(resp)
                ok = error is not None and (resp.status_code != 429 or resp.headers.get("Retry-After"))
            if ok:
                resp.success()
            else:
                resp.failure(f"expected {statuses}, got {resp.status_code}")
            _check_hash(resp)
            _record(kind=name, stream=False, **_outcome(resp, _tier_name(resp), (time.perf_counter() - started) * 1000),
                    ttft_ms=None, itl_ms=None, usage={}, text_chars=0, expected=bool(ok))


def _tier_name(resp) -> str:
    tier = resp.headers.get("X-Route-Tier") if resp.headers else None
    return tier or f"not routed ({resp.status_code})"


def _error(resp):
    try:
        error = json.loads(resp.content)["error"]
        return error if error.get("message") and error.get("type") else None
    except (ValueError, KeyError, TypeError):
        return None


def _check_hash(resp) -> None:
    wanted = STATE["options"].kit_hash
    if resp.headers and resp.headers.get("X-Constitutional-Hash") != wanted:
        resp.failure("answer without the constitutional hash")


def _outcome(resp, tier: str, ms: float) -> dict:
    h = resp.headers or {}
    service = h.get("X-Mock-Service-Ms")
    return {"status": resp.status_code, "tier": tier, "endpoint": h.get("X-Route-Endpoint"),
            "ms": ms, "hop": int(h.get("X-Route-Hop") or 0), "failover": bool(h.get("X-Route-Failover")),
            "hash": h.get("X-Constitutional-Hash") == STATE["options"].kit_hash,
            "service_ms": float(service) if service else None,
            "router_ms": report.server_timing_ms(h.get("Server-Timing") or "")}
