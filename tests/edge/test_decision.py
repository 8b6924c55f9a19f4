"""The sidecar's answer to nginx: route headers, model rewrite and its splice offset,
and that any JSON object on any API gets an answer or a refusal, never a crash."""

from __future__ import annotations

import json

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from sidecar.edge.app import Answer, Runtime, decide
from sidecar.edge.decision import DENIAL_BODY_LIMIT, DENIAL_COPY, allow, denial_body, deny, rewrite_model
from sidecar.denials import Denied
from sidecar.edge.features import Features
from sidecar.policy.spec import load_policy
from conftest import DEMO, HASH

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


@settings(max_examples=300, deadline=None)
@example(message="\U0001f600" * 400, code="invalid_request")
@example(message="\u00e9" * 1000, code="a" * 64)
@given(message=st.text(max_size=3000) | st.text(alphabet="\U0001f600\x00\n\"\\\u2028", max_size=400)
       | st.text(st.characters(categories=["Cs", "Ll"]), max_size=50),   # lone surrogates too
       code=st.sampled_from(["invalid_request", "invalid_json", "a" * 64]))
def test_a_denial_body_is_ascii_json_within_the_bound_whatever_the_message(message, code):
    # Stock mode carries a 400's body in a header: one line of ASCII that fits
    # nginx's proxy buffer. Both modes send the same bounded body.
    body = denial_body(message, "invalid_request_error", code)
    assert body.isascii() and b"\n" not in body and len(body) <= DENIAL_BODY_LIMIT
    error = json.loads(body)["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, None)
    message = json.loads(json.dumps(message))   # as JSON reads it: two escaped halves are one character
    if error["message"] != message:   # cut, and says so; all that fits is kept
        assert error["message"].endswith("\u2026") and message.startswith(error["message"][:-1])
        assert len(body) > DENIAL_BODY_LIMIT - 12   # the next character escapes to at most 12


def test_stock_mode_sends_a_400_to_nginx_as_a_redirect_carrying_its_body():
    for status, denied in ((400, Denied("invalid_json", "bad \u00e9")), (429, Denied("rate_limit_exceeded", "slow"))):
        lua = deny(denied)
        stock = deny(denied, stock_mode=True)
        assert lua[0] == status and lua[1]["X-Route-Decision"] == "deny"
        if status == 400:   # nginx answers it 400 from the header, without a body to drop
            assert stock[0] == 200 and stock[1]["X-Accel-Redirect"] == "@sidecar_bad_request"
            assert stock[1][DENIAL_COPY].encode() == lua[2] and stock[2] == b""
        else:
            assert stock == lua


# Field names every API reader, the policy and the answer look at, so generated
# bodies reach deep into the pipeline instead of failing at the first check.
FIELD_NAMES = st.sampled_from([
    "model", "messages", "role", "content", "type", "text", "prompt", "input", "instructions",
    "output", "system", "name", "tools", "functions", "tool_calls", "function_call", "arguments",
    "response_format", "stream", "stream_options", "include_usage", "max_tokens",
    "max_completion_tokens", "max_output_tokens", "n", "best_of"])
FIELD_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", "auto", "user", "assistant", "system", "nano", "expert", "text", "x"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(FIELD_NAMES, inner, max_size=4),
    max_leaves=14)
DEMO_POLICY = load_policy(DEMO, {})
# A valid request of each API, which the generated fields below then add to or
# overwrite, so most examples reach the later stages (rules, admission, the answer).
VALID = {"/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}]},
         "/v1/completions": {"prompt": "hi"}, "/v1/embeddings": {"input": "hi"},
         "/v1/responses": {"input": "hi"},
         "/v1/messages": {"max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
         "/v1/messages/count_tokens": {"messages": [{"role": "user", "content": "hi"}]},
         "/v1/responses/input_tokens": {"input": "hi"}}
API_PATHS = st.sampled_from(sorted(VALID))
# Up to three fields added or overwritten, each null, a boolean or anything: few
# enough that most examples stay valid and reach the answer.
EXTRA_FIELDS = st.dictionaries(
    st.sampled_from(["model", "stream", "stream_options", "max_tokens", "n", "best_of", "tools",
                     "functions", "response_format", "instructions", "max_completion_tokens",
                     "max_output_tokens", "system", "messages", "prompt", "input",
                     "previous_response_id", "background"]),
    st.none() | st.booleans() | FIELD_VALUES, max_size=3)


@settings(max_examples=400, deadline=None)
@given(API_PATHS, EXTRA_FIELDS, st.booleans())
def test_any_json_object_on_any_api_is_routed_or_refused_never_a_crash(path, extra, lua_mode):
    """Every stage (the readers, features, rules, admission, the answer and its
    lua body rewrite) either routes or raises a Denied: no other exception, which
    the handler would have to turn into a 500. (30,000 examples found none; a
    crash planted in the lua rewrite for `stream_options: null` is found in 400.)"""
    headers = CIMultiDict({"Content-Type": "application/json", "X-Constitutional-Hash": HASH})
    body = {**VALID[path], **extra}
    try:
        route, out_headers, out_body = decide(DEMO_POLICY, "POST", path, headers, orjson.dumps(body),
                                              peer="192.0.2.1", lua_mode=lua_mode, runtime=Runtime())
    except (Denied, Answer):
        return
    assert out_headers["X-Route-Endpoint"] == route.endpoint.name
    if out_body:
        assert isinstance(orjson.loads(out_body), dict)


KNOWN_RESPONSE = "resp_known_0001"
ID_CHARS = st.text(st.sampled_from("az09_.:-/%?&=#~ \x00\u00e9AZ"), max_size=12)


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD"]),
       st.one_of(st.just(KNOWN_RESPONSE), ID_CHARS),
       st.sampled_from(["", "/cancel", "/input_items", "/input_items/x", "/"]),
       st.one_of(st.just(""), st.text(max_size=16).map(lambda q: "?" + q)), st.booleans())
def test_a_stored_response_operation_goes_only_where_its_answer_was_made(method, response_id, suffix,
                                                                         query, lua_mode):
    """Any method, id, operation and query under /v1/responses/: routed only to the
    endpoint that served a known id, with no fallbacks and a path that is the
    request's own; anything else refused, never a crash and never guessed at."""
    from sidecar.edge.conversations import Conversations
    runtime = Runtime()
    runtime.conversations = Conversations()
    served = next(e for e in DEMO_POLICY.endpoints if "responses" in e.serves)
    runtime.conversations.remember({"response_id": KNOWN_RESPONSE, "served": served.name,
                                    "status": "200"})
    headers = CIMultiDict({"X-Constitutional-Hash": HASH})
    uri = f"/v1/responses/{response_id}{suffix}{query}"
    try:
        route, out_headers, out_body = decide(DEMO_POLICY, method, uri, headers, b"", peer="192.0.2.1",
                                              lua_mode=lua_mode, runtime=runtime)
    except Denied as denied:
        assert denied.reason in ("unknown_url", "method_not_allowed", "response_not_found",
                                 "invalid_request", "model_not_found", "invalid_json",
                                 "unsupported_media_type"), denied.reason
        return
    assert route.endpoint is served and route.fallbacks == () and out_body == b""
    assert response_id == KNOWN_RESPONSE
    assert out_headers["X-Route-Path"] == uri[3:].removesuffix("?")   # an empty query is none
    assert "X-Route-Shadow" not in out_headers


def _variants_of_known_names(policy) -> list[str]:
    """Names one keystroke from a known one: case, spaces, an invisible character, a
    provider's prefix; and every endpoint's own model id the policy does not list."""
    out = []
    for name in sorted(policy.known_models):
        out += [name.upper(), name.title(), f" {name}", f"{name} ", f"{name}\u200b", f"openai/{name}"]
    return out + [e.model for e in policy.endpoints if e.model not in policy.known_models]


NAMES = st.one_of(st.sampled_from(sorted(DEMO_POLICY.known_models)),
                  st.sampled_from(_variants_of_known_names(DEMO_POLICY)), st.text(min_size=1, max_size=24))


@settings(max_examples=400, deadline=None)
@given(API_PATHS, NAMES, st.booleans())
def test_an_endpoint_is_only_ever_asked_for_the_model_it_was_routed_for_or_a_listed_name(path, name,
                                                                                          lua_mode):
    """Lua mode rewrites the body to the routed endpoint's model, so any name may be
    routed by the rules. Stock mode forwards the name as written, so the endpoint
    would serve whatever model the client named at the router's price; there only
    the names GET /v1/models lists pass, and any other is model_not_found."""
    headers = CIMultiDict({"Content-Type": "application/json", "X-Constitutional-Hash": HASH})
    body = {**VALID[path], "model": name}
    try:
        route, _, out_body = decide(DEMO_POLICY, "POST", path, headers, orjson.dumps(body),
                                    peer="192.0.2.1", lua_mode=lua_mode, runtime=Runtime())
    except Denied as denied:
        if denied.reason != "model_not_found":
            return        # refused for another reason (a name the API does not serve, ...)
        assert not lua_mode and name not in DEMO_POLICY.known_models
        assert (denied.status, f"'{name}'" in denied.message) == (404, True)
        return
    sent = orjson.loads(out_body)["model"] if out_body else name
    assert sent == route.endpoint.model or (not lua_mode and name in DEMO_POLICY.known_models)


CHOOSER_VALUES = st.one_of(st.lists(st.text(max_size=12), max_size=3),
                           st.lists(st.fixed_dictionaries({"model": st.text(max_size=12)}), max_size=2),
                           st.text(max_size=12), st.dictionaries(st.text(max_size=6), st.text(max_size=6),
                                                                 max_size=2), st.booleans(),
                           st.integers(-2**63, 2**63 - 1))
# OpenRouter's `models` and `route`, its Messages `fallbacks`; LiteLLM's `fallbacks` and
# `context_window_fallback_dict`.
MODEL_CHOOSERS = ("models", "fallbacks", "route", "context_window_fallback_dict")


@settings(max_examples=300, deadline=None)
@given(API_PATHS, st.sampled_from(MODEL_CHOOSERS), CHOOSER_VALUES, st.booleans())
def test_a_body_cannot_name_other_models_for_an_endpoint_to_fall_back_to(path, field, value, lua_mode):
    """A gateway behind an endpoint (OpenRouter, LiteLLM) would answer with the models in
    these fields when the routed one fails or refuses, at their price: refused on every
    API in both modes, whatever the value; null means absent, as for any field."""
    headers = CIMultiDict({"Content-Type": "application/json", "X-Constitutional-Hash": HASH})
    body = {**VALID[path], field: value}
    try:
        decide(DEMO_POLICY, "POST", path, headers, orjson.dumps(body), peer="192.0.2.1",
               lua_mode=lua_mode, runtime=Runtime())
    except Denied as denied:
        assert (denied.status, denied.reason) == (400, "invalid_request")
        assert f"'{field}'" in denied.message
    else:
        raise AssertionError(f"{field}={value!r} was routed")
    decide(DEMO_POLICY, "POST", path, headers, orjson.dumps({**VALID[path], field: None}),
           peer="192.0.2.1", lua_mode=lua_mode, runtime=Runtime())
