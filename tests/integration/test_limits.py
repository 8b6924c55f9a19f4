"""Keys, tenants and limits through real nginx: one process, two processes
behind nginx's consistent hash, and the Redis store."""

from __future__ import annotations

import json
import threading

import pytest

from conftest import Client, Mocks, free_port, shifted_policy
from sidecar.access.clients import digest
from sidecar.tools.stack import Stack

EXTRA = f"""
clients:
  tenants:
    acme:    {{keys: ["{digest('acme-key')}"], tiers: [nano, fast, balanced]}}
    thrifty: {{keys: ["{digest('thrifty-key')}"], tiers: [nano, fast], above_allowed: downgrade}}
    broke:   {{keys: ["{digest('broke-key')}"], budget_usd_per_day: 0.000001}}
limits:
  - {{name: per-tenant, per: [tenant], requests: {{rate: 5, per: 1h, burst: 5}}}}
  - {{name: tokens, per: [tenant], tokens: {{rate: 100000, per: 1m, burst: 5000}}}}
  - {{name: watch-ip, per: [ip], requests: {{rate: 1, per: 1h, burst: 1}}, shadow: true}}
"""
HI = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module", params=["lua-1", "stock-1", "lua-2", "lua-redis"])
def limited(request, tmp_path_factory):
    mode, kind = request.param.split("-")
    tmp = tmp_path_factory.mktemp(f"limits-{request.param}")
    policy, ports = shifted_policy(tmp, extra=EXTRA)
    port = free_port()
    st = Stack(policy, tmp / "run", mode=mode, listen=f"127.0.0.1:{port}", latency_scale=0,
               workers=2 if kind == "2" else 1,
               redis=request.getfixturevalue("redis_url") if kind == "redis" else "")
    st.start()
    st.client, st.mocks = Client(port), Mocks(ports)
    yield st
    st.stop()


def ask(stack, key, body=HI, path="/v1/chat/completions"):
    return stack.client.chat(body, headers={"Authorization": f"Bearer {key}"}, path=path)


def test_unknown_and_malformed_keys_are_401_and_forwarded_nowhere(limited):
    limited.mocks.clear()
    for auth in ("Bearer not-a-key", "Basic abc", "Bearer "):
        status, headers, body = limited.client.chat(HI, headers={"Authorization": auth})
        assert status == 401, auth
        assert json.loads(body)["error"]["code"] == "invalid_api_key"
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert headers["X-Constitutional-Hash"]
    assert limited.mocks.total_received() == 0


# Bytes that str.strip() takes for whitespace but RFC 9110 does not (the hash
# header's own table in test_hardening.py): around a valid key they make it invalid.
NOT_WHITESPACE = [b"\xa0", b"\x85", b"\x0b", b"\x0c", b"\x1c", b"\x1f", "\u3000".encode()]


@pytest.mark.parametrize("header,prefix", [("Authorization", b"Bearer "), ("x-api-key", b"")])
def test_a_valid_key_with_anything_but_optional_whitespace_around_it_is_401(limited, header, prefix):
    limited.mocks.clear()
    for odd in NOT_WHITESPACE:
        for value in (prefix + b"acme-key" + odd, prefix + odd + b"acme-key"):
            status, headers, body = limited.client.chat(HI, headers={header: value})
            assert status == 401, value
            assert json.loads(body)["error"]["code"] == "invalid_api_key"
            assert headers["X-Constitutional-Hash"]
    assert limited.mocks.total_received() == 0


def test_a_hundred_concurrent_requests_for_one_key_admit_exactly_five(limited):
    limited.mocks.clear()
    results, start = [], threading.Barrier(100)

    def one():
        start.wait()
        results.append(ask(limited, "acme-key"))
    threads = [threading.Thread(target=one) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = [r[0] for r in results]
    assert statuses.count(200) == 5 and statuses.count(429) == 95
    assert limited.mocks.total_received() == 5
    refused = next(r for r in results if r[0] == 429)
    error = json.loads(refused[2])["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"
    assert 0 < int(refused[1]["Retry-After"]) <= 720
    assert refused[1]["RateLimit-Policy"] == '"per-tenant";q=5;w=3600'
    admitted = next(r for r in results if r[0] == 200)
    assert admitted[1]["RateLimit-Policy"].startswith('"per-tenant";q=5')
    assert admitted[1]["RateLimit"].startswith('"per-tenant";r=')


def test_a_request_bigger_than_a_limit_is_not_retryable(limited):
    body = {"model": "auto", "max_tokens": 9000, "messages": [{"role": "user", "content": "hi"}]}
    status, headers, text = ask(limited, "thrifty-key", body)
    assert status == 429 and "Retry-After" not in headers
    assert "retrying will not help" in json.loads(text)["error"]["message"]


# Burst 5,000 tokens, and three ways a request outgrows it that a count of its
# messages' characters misses: 24,000 characters of tool description (~6,000 tokens),
# n = 8 answers of up to 1,000 tokens each, or 7,000 characters of Chinese (~10,000
# tokens for GPT-4's tokenizer; 1,750 at four characters a token, 5,250 at four bytes).
HIDDEN_SIZE = {
    "tool description": {"tools": [{"type": "function", "function": {"name": "f",
                                                                     "description": "word " * 4800}}]},
    "eight choices": {"max_tokens": 1000, "n": 8},
    "chinese text": {"messages": [{"role": "user", "content": "请总结这份报告。" * 1000}]},
}


@pytest.mark.parametrize("extra", HIDDEN_SIZE.values(), ids=HIDDEN_SIZE.keys())
def test_tokens_beyond_the_messages_count_against_a_token_limit(limited, extra):
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **extra}
    limited.mocks.clear()
    status, headers, text = ask(limited, "thrifty-key", body)
    assert status == 429 and "Retry-After" not in headers
    assert "limit 'tokens'" in json.loads(text)["error"]["message"]
    assert limited.mocks.total_received() == 0


def test_tiers_a_tenant_may_not_use_are_refused_or_downgraded(limited):
    expert = {"model": "expert", "messages": [{"role": "user", "content": "hi"}]}
    status, _, text = ask(limited, "acme-key", expert)
    assert status in (403, 429)  # acme's 5 requests may already be spent
    if status == 403:
        assert json.loads(text)["error"]["code"] == "tier_not_allowed"
    status, headers, _ = ask(limited, "thrifty-key", expert)
    assert status == 200 and headers["X-Route-Tier"] == "fast"


def test_a_spent_budget_is_429_until_midnight(limited):
    status, headers, text = ask(limited, "broke-key", {"model": "expert", "messages": [
        {"role": "user", "content": "hi"}]})
    assert status == 429
    assert json.loads(text)["error"]["code"] == "budget_exceeded"
    assert 0 < int(headers["Retry-After"]) <= 86400
