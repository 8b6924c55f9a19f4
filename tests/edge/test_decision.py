"""The sidecar's answer to nginx: route headers, model rewrite and its splice offset."""

from __future__ import annotations

import json

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.edge.decision import allow, deny, rewrite_model
from sidecar.denials import Denied
from sidecar.edge.features import Features
from sidecar.policy.spec import load_policy
from conftest import DEMO

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
bodies = st.dictionaries(st.text(max_size=10), json_values, max_size=6)
models = st.text(min_size=1, max_size=40)


def splice(body: bytes, at: str, model: str) -> bytes:
    """What nginx/hir.lua does before a fallback hop (1-based offset, byte length)."""
    start, length = (int(x) for x in at.split(","))
    return body[:start - 1] + json.dumps(model).encode() + body[start - 1 + length:]


@settings(max_examples=300, deadline=None)
@given(bodies, models, models)
def test_rewrite_changes_only_the_model_and_reports_where_it_is(body, first, second):
    out, at = rewrite_model(body, first)
    parsed = orjson.loads(out)
    assert parsed["model"] == first
    assert {k: v for k, v in parsed.items() if k != "model"} == {k: v for k, v in body.items() if k != "model"}
    assert list(parsed) == list({**body, "model": first})  # order kept, model in place
    spliced = orjson.loads(splice(out, at, second))
    assert spliced == {**parsed, "model": second}


def test_allow_names_the_endpoint_its_fallbacks_and_credentials_internally():
    policy = load_policy(DEMO, {})
    f = Features("POST", "/v1/chat/completions", {})
    f.body, f.model, f.stream = {"model": "auto", "messages": []}, "auto", True
    route = policy.route(f)
    headers, body = allow(route, f, lua_mode=True, path_suffix="/chat/completions")
    assert headers["X-Accel-Redirect"] == f"@stream_{route.endpoint.tier.name}"
    assert headers["X-Route-Endpoint"] == route.endpoint.name
    assert headers["X-Route-Fallback"] == route.fallbacks[0].name
    assert headers["X-Route-Fallback2"] == route.fallbacks[1].name
    assert orjson.loads(body)["model"] == route.endpoint.model
    stock_headers, stock_body = allow(route, f, lua_mode=False, path_suffix="/chat/completions")
    assert stock_body == b"" and "X-Route-Model-At" not in stock_headers


def test_no_rewrite_when_every_hop_already_has_the_requested_model():
    policy = load_policy(DEMO, {})
    f = Features("POST", "/v1/chat/completions", {"x": "y"})
    f.body, f.model = {"model": "grok-4"}, "grok-4"
    expert = policy.endpoint_by_name["expert-grok-4"]
    route = policy.route(f)._replace(endpoint=expert, fallbacks=())
    headers, body = allow(route, f, lua_mode=True, path_suffix="/chat/completions")
    assert body == b"" and "X-Route-Model-At" not in headers


def test_deny_is_an_openai_error_with_a_marker_for_nginx():
    status, headers, body = deny(Denied("hash_mismatch", "nope", headers=(("X-Constitutional-Hash", "abc"),)))
    assert status == 412
    assert headers["X-Route-Decision"] == "deny"
    assert headers["X-Constitutional-Hash"] == "abc"
    assert orjson.loads(body) == {"error": {"message": "nope", "type": "invalid_request_error",
                                            "param": None, "code": "hash_mismatch"}}
