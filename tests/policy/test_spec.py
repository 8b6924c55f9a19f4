"""Policy loading: every bad-policy fixture fails with its exact message; good
policies compile into the objects the hot path reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.policy import matchers as m
from sidecar.policy.compiled import DenyAction
from sidecar.policy.spec import PolicyError, compile_policy, load_policy

ROOT = Path(__file__).resolve().parents[2]
BAD = sorted((Path(__file__).parent / "bad_policies").glob("*.yaml"))
GOOD_HEAD = """version: 1
tiers:
  low:  {rank: 1}
  high: {rank: 2}
endpoints:
  - {name: low-a,  tier: low,  url: "http://127.0.0.1:9001/v1", model: small}
  - {name: low-b,  tier: low,  url: "http://127.0.0.1:9002", model: small, weight: 3}
  - {name: high-a, tier: high, url: "https://api.example.com:8443/openai/v1/", model: big, api_key: "${KEY}"}
"""


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_each_bad_policy_fails_with_its_exact_message(path):
    expected = path.read_text().splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value) == expected


def test_the_shipped_policies_load():
    for name in ("demo.yaml", "production.yaml"):
        policy = load_policy(ROOT / "policies" / name, {})
        assert sum("chat" in e.serves for e in policy.endpoints) == 11
        assert [t.rank for t in policy.tiers] == [1, 2, 3, 4, 5]


def test_endpoint_url_parts_and_credentials_from_the_environment():
    policy = compile_policy((GOOD_HEAD + "default: {tier: low}\n").encode(), "p.yaml", {"KEY": "s3cret"})
    high = policy.endpoint_by_name["high-a"]
    assert (high.scheme, high.host, high.port, high.base_path) == ("https", "api.example.com", 8443, "/openai/v1")
    assert high.host_header == "api.example.com:8443"
    assert high.authorization == "Bearer s3cret"
    low_b = policy.endpoint_by_name["low-b"]
    assert (low_b.port, low_b.base_path, low_b.weight, low_b.authorization) == (9002, "", 3, "")
    assert policy.missing_env == ()


def test_a_missing_credential_is_reported_not_fatal():
    policy = compile_policy((GOOD_HEAD + "default: {tier: low}\n").encode(), "p.yaml", {})
    assert policy.missing_env == ("KEY",)
    assert policy.endpoint_by_name["high-a"].authorization == ""


def _priced(price: str):
    head = GOOD_HEAD.replace("model: small}", f"model: small, price: {price}}}", 1)
    return compile_policy((head + "default: {tier: low}\n").encode(), "p.yaml", {}).endpoint_by_name["low-a"]


def test_cache_prices_default_to_the_input_price_and_may_be_set_apart():
    e = _priced("{input: 0.000003, output: 0.000015}")
    assert (e.price_in, e.price_out, e.price_cache_read, e.price_cache_write) == (3e-6, 1.5e-5, 3e-6, 3e-6)
    e = _priced("{input: 0.000003, cache_read: 0.0000003, cache_write: 0.00000375}")
    assert (e.price_out, e.price_cache_read, e.price_cache_write) == (0.0, 3e-7, 3.75e-6)
    # A write kept an hour costs what any write does unless its own price is set.
    assert e.price_cache_write_1h == 3.75e-6
    assert _priced("{input: 0.000003}").price_cache_write_1h == 3e-6
    assert _priced("{input: 0.000003, cache_write_1h: 0.000006}").price_cache_write_1h == 6e-6


@pytest.mark.parametrize("key", ["input", "output", "cache_read", "cache_write", "cache_write_1h"])
@pytest.mark.parametrize("value", ["-0.1", ".nan", ".inf", "true", '"0.1"', "[1]"])
def test_a_price_is_a_finite_non_negative_number(key, value):
    with pytest.raises(PolicyError, match=rf"price\.{key}: expected a non-negative USD price per token"):
        _priced(f"{{{key}: {value}}}")


def test_the_version_is_the_content_hash():
    a = compile_policy((GOOD_HEAD + "default: {tier: low}\n").encode(), "p.yaml", {})
    b = compile_policy((GOOD_HEAD + "default: {tier: high}\n").encode(), "p.yaml", {})
    assert len(a.version) == 16 and a.version != b.version


@pytest.mark.parametrize("spec,cls", [
    ('{tokens: "100..4000"}', m.FieldRange),
    ('{complexity: ">= 0.62"}', m.FieldRange),
    ('{code: true}', m.FieldIs),
    ('{model: {prefix: [gpt-, o1]}}', m.FieldText),
    ('{headers: {x-team: true}}', m.Header),
    ('{any: [{code: true}, {math: true}]}', m.Any),
    ('{not: {stream: true}}', m.Not),
    ('{code: true, math: true}', m.All),
])
def test_conditions_compile_to_matchers(spec, cls):
    text = GOOD_HEAD + f"rules:\n  - {{when: {spec}, tier: high}}\ndefault: {{tier: low}}\n"
    policy = compile_policy(text.encode(), "p.yaml", {})
    assert isinstance(policy.rules[0].when, cls)


def test_deny_rules_compile_to_deny_actions():
    text = GOOD_HEAD + ("rules:\n  - {name: legacy, when: {model: {regex: '^legacy-'}}, "
                        "deny: {status: 403, code: model_not_allowed, message: nope}}\n"
                        "default: {tier: low}\n")
    rule = compile_policy(text.encode(), "p.yaml", {}).rules[0]
    assert rule.action == DenyAction(403, "model_not_allowed", "nope")


def test_an_open_failover_to_an_endpoint_with_a_key_is_refused():
    """nginx fails open without the sidecar, which holds the provider keys: it would
    send the endpoint no credential, and every failed-open request would be a 502."""
    text = GOOD_HEAD + "default: {tier: low}\nfailover: {default: closed, paths: {/v1/completions: {endpoint: high-a}}}\n"
    with pytest.raises(PolicyError, match=r"failover.paths./v1/completions: an open failover forwards without "
                                          r"the sidecar, which holds endpoint 'high-a''s api_key"):
        compile_policy(text.encode(), "t.yaml", {"KEY": "sk-test"})
    # Unset, the key is empty: nothing to send, so failing open there is allowed.
    assert compile_policy(text.encode(), "t.yaml", {}).failover[-1].endpoint == "high-a"
