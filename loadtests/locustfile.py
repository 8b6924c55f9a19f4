"""Load test for the router: LLM API traffic from real prompts.

    python loadtests/run.py --stack            # the local stack, report in loadtests/reports/
    locust -f loadtests/locustfile.py --host http://127.0.0.1:8080 --headless -u 20 -r 5 -t 2m \
        --kit-out loadtests/reports/manual --html loadtests/reports/manual/locust.html

`RouterUser` sends the scenario mix (loadtests/scenarios.py) as OpenAI Chat
Completions, OpenAI Responses and Anthropic Messages requests (the profile's
`apis`, or `--kit-apis`); a share of its Responses requests continue its last
answer (`previous_response_id`), which fails if the router loses the
conversation. Each request is named by the tier that served it (X-Route-Tier),
and the API when it is not chat, so Locust's tables split by both; streams add
"TTFT" and "ITL" (inter-token latency) entries. `EdgeCaseUser`
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
import apis  # noqa: E402
import report  # noqa: E402
import scenarios  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STATE = {"records": [], "scenarios": None, "options": None, "repeat_share": 0.0}
CHAT = "/v1/chat/completions"


@events.init_command_line_parser.add_listener
def _options(parser):
    kit = parser.add_argument_group("router kit")
    kit.add_argument("--kit-policy", default=str(ROOT / "policies" / "demo.yaml"),
                     help="policy for prices, tiers and latency targets in the report")
    kit.add_argument("--kit-profile", default=str(ROOT / "loadtests" / "profiles" / "default.yaml"))
    kit.add_argument("--kit-mix", default="", help="override weights, e.g. chat=5,code=2")
    kit.add_argument("--kit-apis", default="", help="override API weights, e.g. chat=7,responses=2,messages=1")
    kit.add_argument("--kit-followup-share", type=float, default=-1, help="default: the profile's")
    kit.add_argument("--kit-stream-share", type=float, default=-1, help="default: the profile's")
    kit.add_argument("--kit-repeat-share", type=float, default=-1, help="default: the profile's")
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
    followup = (options.kit_followup_share if options.kit_followup_share >= 0
                else profile.get("followup_share", 0.3))
    mix = scenarios.parse_mix(options.kit_mix, options.kit_profile)
    api_mix = scenarios.parse_apis(options.kit_apis, options.kit_profile)
    STATE["scenarios"] = scenarios.Scenarios(mix, scenarios.load_prompts(), stream, rng, api_mix, followup)
    STATE["repeat_share"] = (options.kit_repeat_share if options.kit_repeat_share >= 0
                             else profile.get("repeat_share", 0.0))
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


def _headers(user, api: str = "chat", **extra) -> dict:
    options = STATE["options"]
    h = {"Content-Type": "application/json", "X-Constitutional-Hash": options.kit_hash,
         # One simulated client per user: the stack trusts its loopback proxy, so
         # per-client limits apply per user, not to the whole load test.
         "X-Forwarded-For": user.client_ip}
    if options.kit_key:
        h["Authorization"] = f"Bearer {options.kit_key}"
    if api == "messages":
        h["anthropic-version"] = "2023-06-01"
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
        self.last_response_id = None  # this user's last Responses answer, for follow-ups
        self.last_buffered = None     # (kind, api, body, previous) of its last non-streamed request

    @task
    def routed(self):
        scenes = STATE["scenarios"]
        if self.last_buffered and scenes.rng.random() < STATE["repeat_share"]:
            self._buffered(*self.last_buffered, repeat=True)   # the same request again, byte for byte
            return
        kind, api, body, followup = scenes.draw()
        previous = self.last_response_id if followup else None
        body = apis.shape(api, body, previous)
        if body.get("stream"):
            self._stream(kind, api, body, previous)
        else:
            self.last_buffered = (kind, api, body, previous)
            self._buffered(kind, api, body, previous)

    def _buffered(self, kind, api, body, previous, repeat=False):
        started = time.perf_counter()
        with self.client.post(apis.PATHS[api], data=json.dumps(body), headers=_headers(self, api),
                              name="routing", catch_response=True) as resp:
            ms = (time.perf_counter() - started) * 1000
            tier = _tier_name(resp)
            resp.request_meta["name"] = _request_name(tier, api)
            usage = {}
            if resp.status_code == 200:
                try:
                    answer = json.loads(resp.content) or {}
                    usage = apis.usage(api, answer)
                    if api == "responses":
                        self.last_response_id = answer.get("id") or self.last_response_id
                except ValueError:
                    resp.failure("routed answer is not JSON")
            elif resp.status_code == 429:
                resp.success()  # a limit doing its job, recorded as such
            _check_followup(resp, previous)
            _check_hash(resp)
            _record(kind=kind, api=api, followup=bool(previous), stream=False, **_outcome(resp, tier, ms),
                    ttft_ms=None, itl_ms=None, usage=usage, text_chars=len(resp.content or b""), repeat=repeat)

    def _stream(self, kind, api, body, previous):
        started = time.perf_counter()
        with self.client.post(apis.PATHS[api], data=json.dumps(body), headers=_headers(self, api),
                              name="routing", stream=True, catch_response=True) as resp:
            tier = _tier_name(resp)
            resp.request_meta["name"] = _request_name(tier, api)
            reader, arrivals = apis.StreamReader(api), []
            if resp.status_code == 200:
                while chunk := resp.stream.read(8192):
                    now = time.perf_counter()
                    arrivals += [now] * reader.feed(chunk)
                if reader.response_id:
                    self.last_response_id = reader.response_id
            ms = (time.perf_counter() - started) * 1000
            resp.request_meta["response_time"] = ms
            if resp.status_code == 429:
                resp.success()
            ttft = (arrivals[0] - started) * 1000 if arrivals else None
            # Inter-token latency: the time after the first chunk over the tokens that
            # followed it (from usage), else per chunk.
            after = len(arrivals) > 1 and (arrivals[-1] - arrivals[0]) * 1000
            tokens = reader.usage.get("completion_tokens") or 0
            per_chunk = tokens / len(arrivals) if tokens and arrivals else 1
            itl = after / max(1.0, tokens - per_chunk) if after and tokens else (
                after / (len(arrivals) - 1) if after else None)
            if resp.status_code == 200 and ttft is None:
                resp.failure("stream ended without a chunk")
            _check_followup(resp, previous)
            _check_hash(resp)
        name = _request_name(tier, api)
        if ttft is not None:
            events.request.fire(request_type="TTFT", name=name, response_time=ttft, response_length=0,
                                exception=None, context={})
        if itl is not None:
            events.request.fire(request_type="ITL", name=name, response_time=itl, response_length=0,
                                exception=None, context={})
        _record(kind=kind, api=api, followup=bool(previous), stream=True, **_outcome(resp, tier, ms),
                ttft_ms=ttft, itl_ms=itl, usage=reader.usage, text_chars=reader.chars)


# What EdgeCaseUser sends and the status the router documents for it:
# (name, status, method, path, body, headers).
def _edge_cases(user):
    good = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    unknown_answer = f"{apis.PATHS['responses']}/resp_{random.randrange(16**24):024x}"
    return [
        ("edge: bad hash", 412, "POST", CHAT, good, _headers(user, **{"X-Constitutional-Hash": "f" * 16})),
        ("edge: no hash", 428, "POST", CHAT, good, _headers(user, **{"X-Constitutional-Hash": None})),
        ("edge: malformed hash", 400, "POST", CHAT, good, _headers(user, **{"X-Constitutional-Hash": "CDD0"})),
        ("edge: invalid JSON", 400, "POST", CHAT, good[:-3], _headers(user)),
        ("edge: duplicate key", 400, "POST", CHAT, '{"model":"auto","model"  :"expert","messages":[]}',
         _headers(user)),
        ("edge: wrong content type", 415, "POST", CHAT, good, _headers(user, **{"Content-Type": "text/plain"})),
        ("edge: messages without max_tokens", 400, "POST", apis.PATHS["messages"], good,
         _headers(user, "messages")),
        ("edge: unknown stored response", 404, "GET", unknown_answer, None, _headers(user, "responses")),
    ]


class EdgeCaseUser(FastHttpUser):
    """Clients over their limit, bad hashes, malformed bodies: the documented error is a success."""

    weight = 10
    wait_time = between(0.05, 0.3)

    def on_start(self):
        self.client_ip = "10.255.255.254"  # every edge user is one client, so its limit is met

    @task(6)
    def refused(self):
        name, status, method, path, body, headers = random.choice(_edge_cases(self))
        self._expect(name, (status,), method, path, body, headers)

    @task(4)
    def over_the_limit(self):
        body = json.dumps({"model": "nano", "messages": [{"role": "user", "content": "again"}]})
        self._expect("edge: over the limit", (200, 429), "POST", CHAT, body, _headers(self))

    def _expect(self, name, statuses, method, path, body, headers):
        started = time.perf_counter()
        with self.client.request(method, path, data=body, headers=headers, name=name,
                                 catch_response=True) as resp:
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


def _request_name(tier: str, api: str) -> str:
    return tier if api == "chat" else f"{tier} ({api})"


def _check_followup(resp, previous) -> None:
    if previous and resp.status_code == 404:
        resp.failure("a follow-up lost its conversation: the router sent it to an endpoint "
                     "that never made the answer it continues")


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
            "cache": h.get("X-Cache-Status") or "",
            "router_ms": report.server_timing_ms(h.get("Server-Timing") or "")}
