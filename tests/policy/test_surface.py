"""The API surface in the policy: which endpoints serve which API, context
windows, aliases and unknown model names, CORS and retry-budget keys.

The routing properties are checked over generated policies: whatever the tiers,
capabilities and windows, a request only ever goes (first hop or fallback) to an
endpoint that serves its API and holds it, or is refused with the right code."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.denials import Denied
from sidecar.edge.features import Features
from sidecar.policy.apis import APIS
from sidecar.policy.spec import PolicyError, compile_policy

BASE = """version: 1
tiers:
  low:  {rank: 1}
  mid:  {rank: 2}
  high: {rank: 3}
endpoints:
  - {name: low-chat,  tier: low,  url: "http://127.0.0.1:9001/v1", model: small, context_tokens: 1000}
  - {name: low-embed, tier: low,  url: "http://127.0.0.1:9002/v1", model: embed, serves: [embeddings]}
  - {name: mid-chat,  tier: mid,  url: "http://127.0.0.1:9003/v1", model: mid, context_tokens: 8000}
  - {name: high-msgs, tier: high, url: "https://api.anthropic.com/v1", model: claude, serves: [messages], auth: x-api-key, api_key: "${K}", failover_on: [500, 502, 503, 504]}
  - {name: high-chat, tier: high, url: "http://127.0.0.1:9005/v1", model: big, serves: [chat, completions, responses]}
rules:
  - {name: hard, when: {complexity: ">= 0.7"}, tier: high}
default: {tier: low}
"""
PATH_OF = APIS


def policy(extra: str = "", base: str = BASE):
    return compile_policy((base + extra).encode(), "p.yaml", {"K": "sk-ant-secret"})


def request(api: str, model: str = "auto", tokens: int = 10, max_tokens: int = 0) -> Features:
    f = Features("POST", PATH_OF[api], {})
    f.model, f.tokens, f.max_tokens = model, tokens, max_tokens
    return f


def test_endpoint_keys_compile_with_their_defaults():
    p = policy()
    chat, msgs = p.endpoint_by_name["low-chat"], p.endpoint_by_name["high-msgs"]
    assert chat.serves == {"chat", "completions"} and chat.auth == "bearer"
    # By default every 5xx and redirect fails over: Anthropic's 529 and Cloudflare's 52x too.
    assert chat.failover_on >= {401, 403, 429, 301, 304, 308, 500, 501, 502, 503, 504, 507, 520, 524, 529, 530}
    assert all(s in chat.failover_on for s in range(500, 512))
    assert msgs.failover_on == {500, 502, 503, 504}
    # Anthropic takes the bare key in x-api-key; nginx puts it in the header the endpoint takes.
    assert msgs.authorization == "sk-ant-secret"
    assert p.served_apis == set(APIS)


@pytest.mark.parametrize("line, message", [
    ("serves: [chat, speech]", "endpoints[0].serves: unknown API \"speech\""),
    ("serves: []", "endpoints[0].serves: expected a list of APIs"),
    ("auth: basic", "endpoints[0].auth: expected one of bearer, x-api-key"),
    ("context_tokens: -5", "endpoints[0].context_tokens: expected a positive number"),
    ("failover_on: [404]", "endpoints[0].failover_on: expected a list of statuses from 300, 301"),
])
def test_bad_endpoint_keys_are_refused_by_path(line, message):
    text = BASE.replace("model: small, context_tokens: 1000}", f"model: small, {line}}}")
    with pytest.raises(PolicyError) as info:
        policy(base=text)
    assert message in str(info.value)


@pytest.mark.parametrize("extra, message", [
    ("models: {unknown: drop}\n", 'models.unknown: expected "route" or "reject"'),
    ("models: {status: 418}\n", "models.status: expected 404 or 400"),
    ("models: {aliases: {low: {tier: high}}}\n", "already a model name of the router"),
    ("models: {aliases: {gpt-4o: {tier: nope}}}\n", "models.aliases.gpt-4o.tier: unknown tier \"nope\""),
    ("models: {aliases: {gpt-4o: {tier: low, endpoint: mid-chat}}}\n", "exactly one target"),
    ("cors: {origins: [\"https://a.example/path\"]}\n", "cors.origins[0]: expected"),
    ("cors: {origins: [\"*\"], credentials: true}\n", "browsers refuse credentials"),
    ("cors: {origins: [\"*\", \"https://a.example\"]}\n", '"*" already allows every origin'),
    ("retry_budget: {ratio: 20}\n", "retry_budget.ratio: expected a number from 0 to 10"),
])
def test_bad_surface_keys_are_refused_by_path(extra, message):
    with pytest.raises(PolicyError) as info:
        policy(extra)
    assert message in str(info.value)


def test_each_api_goes_to_an_endpoint_that_serves_it():
    p = policy()
    assert p.route(request("embeddings")).endpoint.name == "low-embed"
    # No low or mid endpoint speaks Anthropic Messages: the nearest tier that does.
    assert p.route(request("messages")).endpoint.name == "high-msgs"
    assert p.route(request("responses")).endpoint.name == "high-chat"
    route = p.route(request("chat"))
    assert route.endpoint.name == "low-chat"
    assert [e.name for e in route.fallbacks] == ["mid-chat", "high-chat"]


def test_an_api_no_endpoint_serves_is_refused():
    only_chat = BASE.replace("serves: [messages]", "serves: [chat]")
    with pytest.raises(Denied) as info:
        policy(base=only_chat).route(request("messages"))
    assert (info.value.status, info.value.reason) == (404, "api_not_served")


def test_a_request_larger_than_a_window_skips_that_endpoint_and_its_fallbacks_fit():
    p = policy()
    route = p.route(request("chat", tokens=900, max_tokens=500))
    assert route.endpoint.name == "mid-chat"
    assert [e.name for e in route.fallbacks] == ["high-chat"]
    with pytest.raises(Denied) as info:
        policy(base=BASE.replace("model: big,", "model: big, context_tokens: 9000,")).route(
            request("chat", tokens=9000, max_tokens=1))
    assert (info.value.status, info.value.reason) == (400, "context_length_exceeded")


def test_aliases_pin_before_the_rules_and_unknown_names_are_routed_or_refused():
    extra = "models:\n  aliases:\n    gpt-4o: {tier: high}\n    text-embedding-3-small: {endpoint: low-embed}\n"
    routed = policy(extra)
    assert routed.route(request("chat", model="gpt-4o")).endpoint.name == "high-chat"
    assert routed.route(request("chat", model="gpt-4o")).rule == "alias:gpt-4o"
    assert routed.route(request("embeddings", model="text-embedding-3-small")).endpoint.name == "low-embed"
    assert routed.route(request("chat", model="whatever")).rule == "default"
    with pytest.raises(Denied) as info:   # an embedding model asked to chat
        routed.route(request("chat", model="text-embedding-3-small"))
    assert (info.value.status, info.value.reason) == (400, "invalid_request")
    strict = policy(extra.replace("models:\n", "models:\n  unknown: reject\n"))
    for known in ("auto", "low", "mid", "high", "gpt-4o", ""):
        strict.route(request("chat", model=known))
    with pytest.raises(Denied) as info:
        strict.route(request("chat", model="gpt-5-turbo"))
    assert (info.value.status, info.value.reason) == (404, "model_not_found")
    status_400 = policy(extra.replace("models:\n", "models:\n  unknown: reject\n  status: 400\n"))
    with pytest.raises(Denied) as info:
        status_400.route(request("chat", model="x"))
    assert info.value.status == 400


def test_cors_lists_the_default_headers_and_the_policys_own():
    p = policy('cors: {origins: ["https://app.example"], headers: [X-Team], expose: [X-Extra]}\n')
    assert p.cors.origins == ("https://app.example",)
    assert "X-Constitutional-Hash" in p.cors.headers and "X-Team" in p.cors.headers
    assert "X-Extra" in p.cors.expose and p.cors.max_age == 600
    assert policy().cors is None


APIS_ST = st.sampled_from(sorted(APIS))


@st.composite
def generated_policies(draw):
    lines, n = [], 0
    for rank, tier in enumerate(("t1", "t2", "t3"), start=1):
        for _ in range(draw(st.integers(1, 3))):
            serves = draw(st.lists(APIS_ST, min_size=1, max_size=5, unique=True))
            if rank == 1 and n == 0:
                serves = sorted({*serves, "chat"})
            window = draw(st.sampled_from([0, 500, 4000, 100000]))
            n += 1
            lines.append(f'  - {{name: e{n}, tier: {tier}, url: "http://127.0.0.1:{9000 + n}/v1", '
                         f'model: m{n}, context_tokens: {window}, serves: [{", ".join(serves)}]}}')
    text = ("version: 1\ntiers:\n  t1: {rank: 1}\n  t2: {rank: 2}\n  t3: {rank: 3}\nendpoints:\n"
            + "\n".join(lines) + "\nrules:\n  - {name: up, when: {complexity: \">= 0.5\"}, tier: t3}\n"
            "default: {tier: t1}\n")
    return compile_policy(text.encode(), "gen.yaml", {})


@settings(max_examples=300, deadline=None)
@given(generated_policies(), APIS_ST, st.integers(1, 120000), st.integers(0, 5000),
       st.floats(0, 1), st.sets(st.integers(1, 9), max_size=4))
def test_routes_only_ever_name_endpoints_that_serve_and_hold_the_request(p, api, tokens, max_tokens,
                                                                          score, down):
    for i in down:
        if f"e{i}" in p.endpoint_by_name:
            p.health.mark_down(f"e{i}", 60)
    f = request(api, tokens=tokens, max_tokens=max_tokens)
    f.complexity = score
    need = tokens + max_tokens
    serving = [e for e in p.endpoints if api in e.serves]
    fitting = [e for e in serving if not e.context_tokens or need <= e.context_tokens]
    try:
        route = p.route(f)
    except Denied as denied:
        if not serving:
            assert denied.reason == "api_not_served"
        else:
            assert denied.reason == "context_length_exceeded" and not fitting
        return
    for e in (route.endpoint, *route.fallbacks):
        assert api in e.serves
        assert e in fitting
    assert len(set(route.fallbacks)) == len(route.fallbacks) and route.endpoint not in route.fallbacks
    # A healthy endpoint that fits is preferred to one marked down.
    if any(p.health.is_up(e) for e in fitting) and route.endpoint.tier.name in {
            e.tier.name for e in fitting if p.health.is_up(e)}:
        assert p.health.is_up(route.endpoint)


def test_a_split_sends_each_client_to_one_side_by_weight():
    p = compile_policy(BASE.replace("rules:\n", "rules:\n  - {name: canary, when: {model: gpt}, split: "
                                    "[{tier: low, weight: 80}, {tier: mid, weight: 20}]}\n").encode(), "p.yaml", {"K": "k"})
    sides = {}
    for client in range(2000):
        f = request("chat", model="gpt")
        f.sticky = f"ip:10.0.{client // 256}.{client % 256}"
        route = p.route(f)
        again = p.route(f)
        assert route.rule == again.rule            # sticky
        sides[f.sticky] = route.rule
    share = sum(rule == "canary:mid" for rule in sides.values()) / len(sides)
    assert set(sides.values()) == {"canary:low", "canary:mid"} and 0.15 < share < 0.25
    with pytest.raises(PolicyError, match="at least two"):
        compile_policy(BASE.replace("rules:\n", "rules:\n  - {name: c, split: [{tier: low, weight: 1}]}\n").encode(),
                       "p.yaml", {"K": "k"})


def test_shadow_samples_its_share_by_request_id():
    from sidecar.edge.decision import add_shadow
    p = policy("shadow: {endpoint: high-chat, share: 0.1}\n")
    sampled = 0
    for i in range(5000):
        headers = {}
        add_shadow(headers, p.shadow, f"req-{i}")
        if headers:
            assert headers["X-Route-Shadow"] == "high-chat"
            sampled += 1
        again = {}
        add_shadow(again, p.shadow, f"req-{i}")
        assert again == headers
    assert 400 < sampled < 600
    with pytest.raises(PolicyError, match="shadow.share"):
        policy("shadow: {endpoint: high-chat, share: 2}\n")


def test_the_logged_features_never_carry_header_breaking_model_text():
    from sidecar.edge.decision import features_header
    from sidecar.tools.replay import parse_features
    f = request("messages", model="evil\r\nX-Injected: 1;x")
    f.complexity, f.tier_hint, f.code, f.stream = 0.4321, 3, True, True
    text = features_header(f)
    assert "\r" not in text and "\n" not in text and " " not in text
    back = parse_features(text)
    assert (back.api, back.tokens, back.complexity, back.tier_hint, back.code, back.stream, back.math) == \
        ("messages", 10, 0.4321, 3, True, True, False)
    assert all(c.isalnum() or c in "._:/@-?" for c in back.model)
