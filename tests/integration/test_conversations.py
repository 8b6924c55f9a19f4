"""A Responses request that continues an earlier answer (previous_response_id) goes
to the endpoint that served that answer: only it holds the conversation, and any
other endpoint answers 404 previous_response_not_found, as the mock does, like
OpenAI. Lua mode reads each answer's id; stock mode cannot read answers, so there
a follow-up is routed by the rules (docs/policy.md)."""

from __future__ import annotations

import json
import time

import pytest

from conftest import Client, Mocks, free_port, shifted_policy
from sidecar.access.clients import digest
from sidecar.tools.stack import Stack
from test_api_surface import stream_events

HARD = ("Prove rigorously, step by step, that the sum of the first n odd numbers is n^2, derive "
        "a closed form for the sum of cubes and discuss the trade-offs of each proof. " * 3)


def _first_answer(st, streamed: bool) -> tuple[str, str]:
    """(the answer's id, the endpoint that served it) for a greeting: a nano-tier endpoint."""
    body = {"model": "auto", "input": "hi", "stream": streamed}
    if streamed:
        status, headers, text = stream_events(st, "/v1/responses", body)
        created = next(json.loads(line[6:]) for line in text.splitlines()
                       if line.startswith("data: {") and '"response.created"' in line)
        response_id = created["response"]["id"]
    else:
        status, headers, out = st.client.chat(body, path="/v1/responses")
        response_id = json.loads(out)["id"]
    assert status == 200 and headers["X-Route-Tier"] == "nano"
    return response_id, headers["X-Mock-Endpoint"]


def _follow_up(st, previous: str):
    """A hard follow-up, which the rules alone send to a higher tier's endpoint."""
    return st.client.chat({"model": "auto", "previous_response_id": previous, "input": [
        {"role": "user", "content": [{"type": "input_text", "text": HARD}]}]}, path="/v1/responses")


# The first read of a stream ends inside the answer's id (the mock's `split` fault):
# the id starts at byte 95, after 'event: response.created\ndata: {..."response":{"id":"'.
SPLIT_IN_ID = "split=105"


@pytest.mark.parametrize("streamed,fault", [(False, ""), (True, ""), (True, SPLIT_IN_ID)],
                         ids=["whole", "streamed", "id-split-across-reads"])
def test_a_follow_up_goes_to_the_endpoint_that_holds_the_conversation(stack, streamed, fault):
    for name in stack.mocks.ports:
        stack.mocks.fault(name, fault)
    try:
        response_id, served = _first_answer(stack, streamed)
    finally:
        for name in stack.mocks.ports:
            stack.mocks.fault(name, "")
    if stack.mode == "stock":
        status, headers, out = _follow_up(stack, response_id)
        assert headers["X-Route-Tier"] != "nano"
        assert status == 404 and json.loads(out)["error"]["code"] == "previous_response_not_found"
        return
    # Once the feedback log has reported the first answer; a few tries at most, each
    # 0.1 s apart, so the demo policy's per-client burst (120) is never reached.
    for _ in range(40):
        status, headers, out = _follow_up(stack, response_id)
        if status == 200:
            break
        time.sleep(0.1)
    assert status == 200, out
    assert headers["X-Mock-Endpoint"] == served and headers["X-Route-Tier"] == "nano"
    assert json.loads(out)["object"] == "response"


def test_an_unknown_previous_response_is_routed_by_the_rules(stack):
    status, headers, out = _follow_up(stack, "resp_this_router_never_saw")
    assert headers["X-Route-Tier"] != "nano"
    assert status == 404 and json.loads(out)["error"]["code"] == "previous_response_not_found"


@pytest.mark.parametrize("value", [7, ["resp_a"], {"id": "resp_a"}, True])
def test_a_previous_response_id_that_is_not_a_string_is_refused(stack, value):
    status, _, out = stack.client.chat({"model": "auto", "input": "hi", "previous_response_id": value},
                                       path="/v1/responses")
    assert status == 400 and "previous_response_id" in json.loads(out)["error"]["message"]


def stored_operation(st, response_id: str, method: str = "GET", suffix: str = ""):
    """A stored-response operation, retried until the feedback log has reported the
    answer (a few tries, 0.1 s apart)."""
    for _ in range(40):
        status, headers, out = st.client.chat(None, path=f"/v1/responses/{response_id}{suffix}",
                                              headers={"Content-Type": None}, method=method)
        if status != 404 or json.loads(out)["error"]["code"] != "response_not_found":
            return status, headers, out
        time.sleep(0.1)
    return status, headers, out


def test_a_stored_response_is_retrieved_listed_and_deleted_where_it_was_made(stack):
    response_id, served = _first_answer(stack, streamed=False)
    if stack.mode == "stock":   # nginx alone never reads the answer's id: nothing is forwarded
        before = stack.mocks.received(served)
        status, _, out = stored_operation(stack, response_id)
        assert status == 404 and json.loads(out)["error"]["code"] == "response_not_found"
        assert stack.mocks.received(served) == before
        return
    status, headers, out = stored_operation(stack, response_id)
    assert status == 200 and json.loads(out)["id"] == response_id
    assert headers["X-Mock-Endpoint"] == served and headers["X-Route-Tier"] == "nano"
    status, headers, out = stored_operation(stack, response_id, suffix="/input_items?limit=5&order=asc")
    assert status == 200 and json.loads(out)["data"][0]["content"][0]["text"] == "hi"
    assert stack.mocks.received(served)[-1]["path"].endswith(f"/responses/{response_id}/input_items"
                                                              "?limit=5&order=asc")
    status, _, out = stored_operation(stack, response_id, "POST", "/cancel")   # not a background response
    assert status == 400 and "background" in json.loads(out)["error"]["message"]
    status, _, out = stored_operation(stack, response_id, "DELETE")
    assert status == 200 and json.loads(out) == {"id": response_id, "object": "response.deleted",
                                                 "deleted": True}
    status, headers, out = stored_operation(stack, response_id)   # still its endpoint's to answer: gone
    assert status == 404 and headers["X-Mock-Endpoint"] == served


def test_a_background_response_is_polled_where_it_runs(stack):
    if stack.mode == "stock":
        pytest.skip("stock mode cannot read the answer's id (docs/policy.md); the refusal is "
                    "tested above")
    status, headers, out = stack.client.chat({"model": "auto", "input": "hi", "background": True},
                                             path="/v1/responses")
    queued = json.loads(out)
    assert status == 200 and queued["status"] == "queued"
    status, polled_headers, out = stored_operation(stack, queued["id"])
    assert status == 200 and json.loads(out)["status"] == "completed"
    assert polled_headers["X-Mock-Endpoint"] == headers["X-Mock-Endpoint"]
    status, _, out = stored_operation(stack, queued["id"], "POST", "/cancel")
    assert status == 200 and json.loads(out)["id"] == queued["id"]


@pytest.mark.parametrize("method,path,status,code", [
    ("GET", "/v1/responses/resp_never_seen", 404, "response_not_found"),
    ("PUT", "/v1/responses/resp_never_seen", 405, "method_not_allowed"),
    ("GET", "/v1/responses/resp_never_seen/cancel", 405, "method_not_allowed"),
    ("POST", "/v1/responses/resp_never_seen/input_items", 405, "method_not_allowed"),
    ("GET", "/v1/responses/resp_x/input_items/extra", 404, "unknown_url"),
    ("GET", "/v1/responses/.hidden", 404, "unknown_url"),
    ("GET", "/v1/responses/resp_x%2F..%2Fmodels", 404, "unknown_url"),
    ("GET", "/v1/responses/" + "a" * 129, 404, "unknown_url"),
    ("GET", "/v1/responses/resp_x?after=a%22b&x=<y>", 400, "invalid_request"),
])
def test_stored_response_requests_that_cannot_be_served_are_refused_before_any_endpoint(
        stack, method, path, status, code):
    before = stack.mocks.total_received()
    got, headers, out = stack.client.chat(None, path=path, headers={"Content-Type": None}, method=method)
    assert got == status and json.loads(out)["error"]["code"] == code, out
    assert headers["Content-Type"] == "application/json" and "X-Content-Type-Options" in headers
    if status == 405:
        assert method not in headers["Allow"]
    assert stack.mocks.total_received() == before


# Two tenants; clients without a key are still let in (as themselves: tenant "").
TENANTS = f"""
clients:
  tenants:
    acme: {{keys: ["{digest('acme-key')}"]}}
    beta: {{keys: ["{digest('beta-key')}"]}}
"""
KEYS = {"acme": {"Authorization": "Bearer acme-key"}, "beta": {"x-api-key": "beta-key"}, "anonymous": {}}


def _as(who: str, extra: dict | None = None) -> dict:
    return {**KEYS[who], **(extra or {})}


def _operation(st, who: str, response_id: str, method: str = "GET", suffix: str = ""):
    return st.client.chat(None, path=f"/v1/responses/{response_id}{suffix}", method=method,
                          headers=_as(who, {"Content-Type": None}))


def _owned_answer(st, owner: str) -> tuple[str, str]:
    """An answer `owner` asked for, once the router has learned it (its owner can
    retrieve it): (its id, the endpoint holding it)."""
    status, headers, out = st.client.chat({"model": "auto", "input": "my plan is X"},
                                          path="/v1/responses", headers=_as(owner))
    assert status == 200, out
    response_id = json.loads(out)["id"]
    for _ in range(40):
        status, _, _ = _operation(st, owner, response_id)
        if status == 200:
            return response_id, headers["X-Mock-Endpoint"]
        time.sleep(0.1)
    raise AssertionError(f"the router never learned {response_id}")


def _assert_not_given(st, asker: str, response_id: str) -> None:
    """Every operation and a follow-up are refused as for an id nobody made, and
    nothing reaches an endpoint (which, holding one account for all, would answer)."""
    before = st.mocks.total_received()
    for method, suffix in (("GET", ""), ("GET", "/input_items"), ("POST", "/cancel"), ("DELETE", "")):
        status, _, out = _operation(st, asker, response_id, method, suffix)
        assert status == 404, (method, suffix, out[:200])
        assert json.loads(out)["error"]["code"] == "response_not_found"
    status, _, out = st.client.chat({"model": "auto", "input": "what was my plan?",
                                     "previous_response_id": response_id},
                                    path="/v1/responses", headers=_as(asker))
    assert status == 404, out[:200]
    assert json.loads(out)["error"]["code"] == "previous_response_not_found"
    assert response_id in json.loads(out)["error"]["message"]
    assert st.mocks.total_received() == before


@pytest.fixture(scope="module")
def tenants(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tenants")
    policy, ports = shifted_policy(tmp, extra=TENANTS)
    port = free_port()
    st = Stack(policy, tmp / "run", mode="lua", listen=f"127.0.0.1:{port}", latency_scale=0)
    st.start()
    st.client, st.mocks = Client(port), Mocks(ports)
    yield st
    st.stop()


@pytest.mark.parametrize("owner,asker", [("acme", "beta"), ("beta", "acme"), ("acme", "anonymous"),
                                         ("anonymous", "acme")])
def test_an_answer_is_given_only_to_the_tenant_it_was_made_for(tenants, owner, asker):
    """The router holds one provider account for every tenant, so a provider hands
    any answer to whoever names its id: the router is the one that must not."""
    response_id, served = _owned_answer(tenants, owner)
    _assert_not_given(tenants, asker, response_id)
    # Still its owner's: a follow-up goes where it is held, and it can be deleted.
    status, headers, _ = tenants.client.chat({"model": "auto", "input": "and then?",
                                              "previous_response_id": response_id},
                                             path="/v1/responses", headers=_as(owner))
    assert status == 200 and headers["X-Mock-Endpoint"] == served
    status, _, out = _operation(tenants, owner, response_id, "DELETE")
    assert status == 200 and json.loads(out)["deleted"] is True


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory, redis_url):
    """Two routers (lua mode) sharing one Redis and one set of model endpoints, as two
    hosts behind a load balancer would."""
    tmp = tmp_path_factory.mktemp("two-hosts")
    policy, ports = shifted_policy(tmp, extra=TENANTS)
    hosts = []
    try:
        for name in ("a", "b"):
            port = free_port()
            st = Stack(policy, tmp / name, mode="lua", listen=f"127.0.0.1:{port}", latency_scale=0,
                       redis=redis_url)
            if not hosts:
                st.start()
            else:   # the endpoints are the first host's
                st.run_dir.mkdir(parents=True)
                st.start_sidecar(0)
                st.start_nginx()
            st.client, st.mocks = Client(port), Mocks(ports)
            hosts.append(st)
        yield hosts
    finally:
        for st in reversed(hosts):
            st.stop()


def test_another_host_finds_the_conversation_through_redis(two_hosts):
    first, second = two_hosts
    response_id, served = _first_answer(first, streamed=False)
    for _ in range(40):   # once the first host's feedback has reached Redis
        status, headers, out = _follow_up(second, response_id)
        if status == 200:
            break
        time.sleep(0.1)
    assert status == 200 and headers["X-Mock-Endpoint"] == served, out
    status, headers, out = stored_operation(second, response_id)
    assert status == 200 and headers["X-Mock-Endpoint"] == served and json.loads(out)["id"] == response_id


def test_another_host_knows_whose_answer_it_is(two_hosts):
    first, second = two_hosts
    response_id, _ = _owned_answer(first, "acme")
    for _ in range(40):   # once the first host's feedback has reached Redis
        status, _, _ = _operation(second, "acme", response_id)
        if status == 200:
            break
        time.sleep(0.1)
    assert status == 200
    _assert_not_given(second, "beta", response_id)


@pytest.fixture(scope="module", params=["lua", "stock"])
def strict(request, tmp_path_factory):
    """A policy that refuses follow-ups it cannot check (conversations: {unknown: reject})."""
    tmp = tmp_path_factory.mktemp(f"strict-{request.param}")
    policy, ports = shifted_policy(tmp, extra=TENANTS + "conversations: {unknown: reject}\n"
                                   "provider_tools: {allow: [code_interpreter, code_execution]}\n")
    port = free_port()
    st = Stack(policy, tmp / "run", mode=request.param, listen=f"127.0.0.1:{port}", latency_scale=0)
    st.start()
    st.client, st.mocks, st.mode = Client(port), Mocks(ports), request.param
    yield st
    st.stop()


@pytest.mark.parametrize("conversation", ["conv_made_elsewhere", {"id": "conv_made_elsewhere"}])
def test_with_unknown_reject_a_request_in_a_conversation_is_never_forwarded(strict, conversation):
    """No request through the router made a conversation (it does not serve the
    Conversations API), so whose it is cannot be checked, in either mode."""
    before = strict.mocks.total_received()
    for tenant in ("acme", "beta"):
        status, headers, out = strict.client.chat({"model": "auto", "input": "what did I say?",
                                                   "conversation": conversation},
                                                  path="/v1/responses", headers=_as(tenant))
        assert status == 404, out
        assert json.loads(out)["error"]["code"] == "conversation_not_found"
        assert headers["X-Content-Type-Options"] == "nosniff"
    assert strict.mocks.total_received() == before


def test_with_unknown_reject_an_item_named_by_id_is_never_forwarded(strict):
    before = strict.mocks.total_received()
    for tenant in ("acme", "beta"):
        status, headers, out = strict.client.chat({"model": "auto", "input": [
            {"type": "item_reference", "id": "msg_made_for_someone_else"},
            {"role": "user", "content": "repeat that"}]}, path="/v1/responses", headers=_as(tenant))
        assert status == 404 and json.loads(out)["error"]["code"] == "item_not_found", out
        assert headers["X-Content-Type-Options"] == "nosniff"
    assert strict.mocks.total_received() == before


@pytest.mark.parametrize("path,body", [
    ("/v1/messages", {"model": "auto", "max_tokens": 32, "container": "container_of_someone_else",
                      "tools": [{"type": "code_execution_20250825", "name": "code_execution"}],
                      "messages": [{"role": "user", "content": "list the files"}]}),
    ("/v1/responses", {"model": "auto", "input": "list the files", "tools": [
        {"type": "code_interpreter", "container": "cntr_of_someone_else"}]}),
], ids=["messages", "responses"])
def test_with_unknown_reject_a_code_container_named_by_id_is_never_forwarded(strict, path, body):
    before = strict.mocks.total_received()
    status, _, out = strict.client.chat(body, path=path, headers=_as("acme", {"anthropic-version": "2023-06-01"}))
    assert status == 404 and json.loads(out)["error"]["code"] == "container_not_found", out
    fresh = {**body, "container": None} if path == "/v1/messages" else {
        **body, "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}
    status, _, out = strict.client.chat(fresh, path=path, headers=_as("acme", {"anthropic-version": "2023-06-01"}))
    assert status == 200, out
    assert strict.mocks.total_received() == before + 1


def test_with_unknown_reject_only_follow_ups_the_router_can_check_are_forwarded(strict):
    before = strict.mocks.total_received()
    status, _, out = strict.client.chat({"model": "auto", "input": "go on",
                                         "previous_response_id": "resp_this_router_never_saw"},
                                        path="/v1/responses", headers=_as("acme"))
    assert status == 404 and json.loads(out)["error"]["code"] == "previous_response_not_found"
    assert strict.mocks.total_received() == before
    if strict.mode == "stock":   # stock mode never learns an answer's id: every follow-up is refused
        return
    response_id, served = _owned_answer(strict, "acme")
    status, headers, _ = strict.client.chat({"model": "auto", "input": "and then?",
                                             "previous_response_id": response_id},
                                            path="/v1/responses", headers=_as("acme"))
    assert status == 200 and headers["X-Mock-Endpoint"] == served
    _assert_not_given(strict, "beta", response_id)
