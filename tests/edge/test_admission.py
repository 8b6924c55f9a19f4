"""Admission: tenant tiers, budgets and limits, with an injected clock."""

from __future__ import annotations

import ipaddress

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from sidecar.edge.app import Runtime, decide
from sidecar.access.clients import digest
from sidecar.denials import Denied
from sidecar.policy.spec import compile_policy
from conftest import DEMO, HASH

NS = 1_000_000_000
EXTRA = f"""
clients:
  tenants:
    strict:  {{keys: ["{digest('strict')}"], tiers: [nano, fast], above_allowed: deny}}
    flex:    {{keys: ["{digest('flex')}"], tiers: [nano, fast], above_allowed: downgrade}}
    saver:   {{keys: ["{digest('saver')}"], budget_usd_per_day: 0.0005, when_budget_spent: downgrade}}
    spender: {{keys: ["{digest('spender')}"], budget_usd_per_day: 0.0005}}
limits:
  - {{name: per-client, per: [client], requests: {{rate: 2, per: 1m, burst: 2}}}}
  - {{name: shadow-ip, per: [ip], requests: {{rate: 1, per: 1h, burst: 1}}, shadow: true}}
"""
POLICY = compile_policy((DEMO.read_text().split("\n# Who may call")[0] + EXTRA).encode(), "t.yaml", {})


class Clock:
    def __init__(self):
        self.now = 1_800_000_000 * NS

    def __call__(self):
        return self.now


def call(runtime, key=None, model="expert", max_tokens=None):
    headers = CIMultiDict({"Content-Type": "application/json", "X-Constitutional-Hash": HASH})
    if key:
        headers["Authorization"] = f"Bearer {key}"
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if max_tokens:
        body["max_tokens"] = max_tokens
    return decide(POLICY, "POST", "/v1/chat/completions", headers, orjson.dumps(body),
                  peer="192.0.2.9", runtime=runtime)


def test_a_tier_above_the_tenants_is_refused_or_downgraded():
    with pytest.raises(Denied) as info:
        call(Runtime(), "strict")
    assert (info.value.status, info.value.reason) == (403, "tier_not_allowed")
    route, headers, _ = call(Runtime(), "flex")
    assert route.endpoint.tier.name == "fast" and route.rule.endswith("+tier-downgrade")
    assert all(f.tier.name in ("nano", "fast") for f in route.fallbacks)


def test_a_spent_budget_downgrades_or_denies_until_midnight():
    clock = Clock()
    runtime = Runtime(clock_ns=clock)
    # Expert costs 0.000015/token: 256 reserved completion tokens ≈ $0.0039 > $0.0005.
    route, _, _ = call(runtime, "saver")
    assert route.endpoint.tier.name == "nano" and route.rule.endswith("+budget-downgrade")
    with pytest.raises(Denied) as info:
        call(runtime, "spender")
    assert (info.value.status, info.value.reason) == (429, "budget_exceeded")
    assert 0 < int(dict(info.value.headers)["Retry-After"]) <= 86400


def test_limits_refuse_with_retry_after_and_recover_with_time():
    clock = Clock()
    runtime = Runtime(clock_ns=clock)
    for _ in range(2):
        call(runtime, model="nano")
    with pytest.raises(Denied) as info:
        call(runtime, model="nano")
    headers = dict(info.value.headers)
    assert info.value.status == 429 and headers["Retry-After"] == "30"
    assert headers["RateLimit-Policy"] == '"per-client";q=2;w=60'
    clock.now += 30 * NS
    _, out, _ = call(runtime, model="nano")
    assert out["X-Route-RateLimit"] == '"per-client";r=0;t=60'


def test_shadow_limits_are_reported_not_enforced():
    runtime = Runtime(clock_ns=Clock())
    call(runtime, model="nano")
    call(runtime, model="nano")
    assert runtime.shadow_denied == ["shadow-ip"]


def test_a_refused_request_spends_no_budget():
    clock = Clock()
    runtime = Runtime(clock_ns=clock)
    for _ in range(2):
        call(runtime, "saver", model="nano")
    spent = dict(runtime.store.spent)
    assert list(spent.values())[0] > 0
    with pytest.raises(Denied) as info:
        call(runtime, "saver", model="nano")
    assert info.value.reason == "rate_limit_exceeded"
    assert runtime.store.spent == spent


TOKEN_LIMIT = compile_policy((DEMO.read_text().split("\n# Who may call")[0] + """
limits:
  - {name: tokens, per: [client], tokens: {rate: 1000000, per: 1m, burst: 20000}}
""").encode(), "t.yaml", {})


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 4000), st.integers(1, 40),
       st.sampled_from([("/v1/chat/completions", "n"), ("/v1/completions", "n"),
                        ("/v1/completions", "best_of")]))
def test_every_completion_a_request_asks_for_is_reserved(max_tokens, choices, where):
    """n (or best_of) answers may each run to max_tokens: a token limit must see
    all of them before the request goes out, not after the bill."""
    path, field = where
    body = ({"messages": [{"role": "user", "content": "hi"}]} if path.endswith("chat/completions")
            else {"prompt": "hi"})
    body.update({"model": "auto", "max_tokens": max_tokens, field: choices})
    headers = CIMultiDict({"Content-Type": "application/json", "X-Constitutional-Hash": HASH})
    prompt = 5  # "hi": one token of text, four of framing
    try:
        decide(TOKEN_LIMIT, "POST", path, headers, orjson.dumps(body), peer="192.0.2.9",
               runtime=Runtime())
    except Denied as denied:
        assert prompt + max_tokens * choices > 20000
        assert (denied.status, denied.reason) == (429, "rate_limit_exceeded")
        assert "retrying will not help" in denied.message
    else:
        assert prompt + max_tokens * choices <= 20000


@pytest.mark.parametrize("operation", ["follow-up", "retrieve"])
def test_a_request_naming_a_stored_answer_is_refused_rather_than_downgraded_away_from_it(operation):
    """A tenant that may only use cheap tiers is downgraded, except when the request
    names an answer held on a higher tier's endpoint: no other endpoint has it."""
    from sidecar.edge.conversations import Conversations
    runtime = Runtime()
    runtime.conversations = Conversations()
    held = next(e for e in POLICY.endpoints if e.tier.name == "expert" and "responses" in e.serves)
    runtime.conversations.remember({"response_id": "resp_x", "served": held.name, "status": "200",
                                    "tenant": "flex"})   # the asker's own answer
    headers = CIMultiDict({"Content-Type": "application/json", "X-Constitutional-Hash": HASH,
                           "Authorization": "Bearer flex"})
    if operation == "follow-up":
        args = ("POST", "/v1/responses", orjson.dumps({"model": "auto", "input": "and then?",
                                                       "previous_response_id": "resp_x"}))
    else:
        args = ("GET", "/v1/responses/resp_x", b"")
    with pytest.raises(Denied) as info:
        decide(POLICY, *args[:2], headers, args[2], peer="192.0.2.9", runtime=runtime)
    assert (info.value.status, info.value.reason) == (403, "tier_not_allowed")


@pytest.mark.parametrize("key", ["strict", "flex", "saver", "spender", None])
@pytest.mark.parametrize("path,body", [
    ("/v1/messages/count_tokens", {"model": "expert", "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/responses/input_tokens", {"model": "expert", "input": "hi"}),
    ("/v1/responses", {"model": "expert", "input": "hi", "background": True})])
def test_counts_and_background_requests_are_admitted_or_refused_for_every_kind_of_tenant(key, path, body):
    """Tier downgrades and budgets pick endpoints by the request's API: a count is
    admitted as the request it counts (a crash here was a 500)."""
    headers = CIMultiDict({"Content-Type": "application/json", "X-Constitutional-Hash": HASH})
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        route, out, _ = decide(POLICY, "POST", path, headers, orjson.dumps(body), peer="192.0.2.9",
                               runtime=Runtime())
    except Denied as denied:
        assert denied.reason in ("tier_not_allowed", "api_not_served", "budget_exceeded")
        return
    api = out["X-Route-Features"].split(";")[0]
    assert api == ("responses" if path == "/v1/responses" else "count")
    assert route.endpoint.serves & {"messages", "responses"}


ANY_PATH = st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
                            "/v1/messages", "/v1/messages/count_tokens", "/v1/responses/input_tokens",
                            "/v1/responses/resp_held", "/v1/responses/resp_held/cancel",
                            "/v1/responses/resp_held/input_items", "/v1/models", "/v1/models/nano"])
ANY_BODY = st.fixed_dictionaries({}, optional={
    "model": st.sampled_from(["auto", "nano", "expert", "premium", "gpt-x"]),
    "messages": st.just([{"role": "user", "content": "prove it step by step"}]),
    "input": st.sampled_from(["hi", "derive a proof " * 50]), "prompt": st.just("hi"),
    "max_tokens": st.integers(1, 5000), "max_output_tokens": st.integers(1, 5000),
    "stream": st.booleans(), "background": st.booleans(),
    "previous_response_id": st.sampled_from(["resp_held", "resp_unknown"])})


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["strict", "flex", "saver", "spender", None]), ANY_PATH,
       st.sampled_from(["GET", "POST", "DELETE"]), ANY_BODY, st.booleans())
def test_any_tenant_on_any_path_is_routed_or_refused_never_a_crash(key, path, method, body, lua_mode):
    """Tenants' tier limits and budgets (deny or downgrade) on every path the router
    serves, with a stored answer known: a route or a Denied, nothing else (a
    KeyError here was a 500 for counts and retrieves)."""
    from sidecar.edge.app import Answer
    from sidecar.edge.conversations import Conversations
    runtime = Runtime()
    runtime.conversations = Conversations()
    held = next(e for e in POLICY.endpoints if e.tier.name == "expert" and "responses" in e.serves)
    runtime.conversations.remember({"response_id": "resp_held", "served": held.name, "status": "200"})
    headers = CIMultiDict({"Content-Type": "application/json", "X-Constitutional-Hash": HASH})
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        route, out, _ = decide(POLICY, method, path, headers, orjson.dumps(body), peer="192.0.2.9",
                               lua_mode=lua_mode, runtime=runtime)
    except (Denied, Answer):
        return
    names_held = path.startswith("/v1/responses/resp_held") or (
        body.get("previous_response_id") == "resp_held" and path in ("/v1/responses", "/v1/responses/input_tokens"))
    if names_held:   # where the answer is, or refused: never elsewhere
        assert route.endpoint is held and route.fallbacks == ()


SHADOWED = compile_policy((DEMO.read_text() + "shadow: {endpoint: expert-grok-4, share: 1.0}\n").encode(),
                          "t.yaml", {})


@pytest.mark.parametrize("path,body,mirrored", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, True),
    ("/v1/responses", {"input": "hi"}, True),
    # The shadow (OpenAI-style) does not speak Anthropic Messages, nor embed.
    ("/v1/messages", {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, False),
    ("/v1/embeddings", {"input": "hi"}, False),
    # A token count generates nothing; a follow-up names an answer the shadow never held.
    ("/v1/responses/input_tokens", {"input": "hi"}, False),
    ("/v1/responses", {"input": "and then?", "previous_response_id": "resp_abc"}, False),
    # On the primary's provider account the shadow's answer would join the client's conversation.
    ("/v1/responses", {"input": "and then?", "conversation": "conv_abc"}, False),
    ("/v1/responses", {"input": "and then?", "conversation": {"id": "conv_abc"}}, False),
])
def test_a_request_is_mirrored_only_where_the_shadow_can_answer_it(path, body, mirrored):
    headers = CIMultiDict({"Content-Type": "application/json", "X-Constitutional-Hash": HASH,
                           "X-Hir-Internal-Id": "0123456789abcdef"})
    _, out, _ = decide(SHADOWED, "POST", path, headers, orjson.dumps({"model": "auto", **body}),
                       peer="192.0.2.9", runtime=Runtime())
    assert ("X-Route-Shadow" in out) is mirrored
    if mirrored:
        assert out["X-Route-Shadow"] == "expert-grok-4"


def _per_client(extra: str = "") -> object:
    return compile_policy((DEMO.read_text().split("\n# Who may call")[0] + extra + """
limits:
  - {name: per-client, per: [client], requests: {rate: 1, per: 1h, burst: 3}}
  - {name: per-ip, per: [ip], requests: {rate: 1, per: 1h, burst: 3}, shadow: true}
""").encode(), "t.yaml", {})


@pytest.mark.parametrize("prefix", [None, 48, 64, 96])
def test_an_ipv6_client_cannot_take_a_fresh_limit_by_taking_a_fresh_address(prefix):
    """Every request from another address of the same network draws on one limit
    (per client and per ip alike); a neighbouring network has its own."""
    policy = _per_client("" if prefix is None else f"clients: {{ipv6_prefix: {prefix}}}\n")
    prefix = prefix or 64
    network = ipaddress.IPv6Network(f"2001:db8:abcd:1200::/{prefix}", strict=False)
    headers = CIMultiDict({"Content-Type": "application/json", "X-Constitutional-Hash": HASH})
    body = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    runtime = Runtime(clock_ns=lambda: 10**18)
    host_bits = 128 - prefix   # five addresses across the network: its first, last, middle, ...
    hosts = [str(network.network_address + offset)
             for offset in (1, (1 << host_bits) - 2, 1 << (host_bits - 1), 7, 12345)]
    admitted = []
    for host in hosts:
        try:
            _, out, _ = decide(policy, "POST", "/v1/chat/completions", headers, body, peer=host, runtime=runtime)
            admitted.append(out["X-Route-RateLimit"])
        except Denied as denied:
            assert denied.reason == "rate_limit_exceeded"
            admitted.append(None)
    assert [a is not None for a in admitted] == [True, True, True, False, False]
    neighbour = str(network.network_address + (1 << (128 - prefix)))   # the next network along
    decide(policy, "POST", "/v1/chat/completions", headers, body, peer=neighbour, runtime=runtime)


def test_per_address_limits_can_be_asked_for():
    policy = _per_client("clients: {ipv6_prefix: 128}\n")
    headers = CIMultiDict({"Content-Type": "application/json", "X-Constitutional-Hash": HASH})
    body = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    runtime = Runtime(clock_ns=lambda: 10**18)
    for i in range(6):   # six addresses of one /64, each its own client
        decide(policy, "POST", "/v1/chat/completions", headers, body, peer=f"2001:db8::{i + 1}", runtime=runtime)
