from types import SimpleNamespace

import pytest

from sidecar.denials import Denied
from sidecar.edge import stored_responses
from sidecar.edge.conversations import RULE, Conversations

RESPONSES = SimpleNamespace(name="a", serves=frozenset({"chat", "responses"}))
CHAT_ONLY = SimpleNamespace(name="b", serves=frozenset({"chat"}))
POLICY = SimpleNamespace(endpoint_by_name={"a": RESPONSES, "b": CHAT_ONLY}, reject_unknown_conversations=False)
STRICT = SimpleNamespace(endpoint_by_name=POLICY.endpoint_by_name, reject_unknown_conversations=True)


def line(response_id, served="a", status="200", tenant=""):
    return {"response_id": response_id, "served": served, "status": status, "tenant": tenant}


def follow_up(previous, api="responses"):
    return SimpleNamespace(api=api, body={"input": "more", "previous_response_id": previous})


def test_a_follow_up_is_pinned_to_the_endpoint_that_served_the_answer_with_no_fallbacks():
    c = Conversations()
    c.remember(line("resp_1"))
    route = c.route(POLICY, follow_up("resp_1"), "")
    assert route.endpoint is RESPONSES and route.fallbacks == () and route.rule == RULE
    assert c.continued == {"pinned": 1, "unknown": 0, "refused": 0}


def test_what_cannot_be_pinned_is_left_to_the_rules():
    c = Conversations()
    c.remember(line("resp_failed", status="502"))     # no answer was stored there
    c.remember(line("resp_gone", served="removed"))   # an endpoint a reload took away
    c.remember(line("resp_chat", served="b"))         # no longer serves the Responses API
    for previous in ("resp_failed", "resp_gone", "resp_chat", "resp_never_seen"):
        assert c.route(POLICY, follow_up(previous), "") is None
    assert c.continued == {"pinned": 0, "unknown": 4, "refused": 0}
    assert c.route(POLICY, follow_up(None), "") is None                       # not a follow-up
    assert c.route(POLICY, follow_up("resp_1", api="chat"), "") is None      # not the Responses API
    assert c.continued["unknown"] == 4


def test_the_oldest_ids_are_forgotten_first():
    c = Conversations(capacity=3)
    for i in range(5):
        c.remember(line(f"resp_{i}"))
    assert list(c.endpoints) == ["resp_2", "resp_3", "resp_4"]
    c.remember(line("resp_2", served="b"))   # an id seen again keeps its newest endpoint
    assert c.endpoints["resp_2"] == ("b", "") and len(c.endpoints) == 3


class _Shared:
    def __init__(self):
        self.written = []
        self.kept = {"resp_elsewhere": ("a", "acme"), "resp_filed_before_owners": ("a", None)}

    def remember_response(self, response_id, endpoint, tenant):
        self.written.append((response_id, endpoint, tenant))

    def response_holder(self, response_id):
        return self.kept.get(response_id)


def test_only_the_process_that_decided_a_request_shares_its_answer_and_any_finds_it():
    shared = _Shared()
    c = Conversations(store_ref=lambda: shared)
    c.decide("nginx-1")
    c.remember({**line("resp_mine", tenant="acme"), "internal_id": "nginx-1"})
    c.remember({**line("resp_other_process"), "internal_id": "nginx-2"})
    c.remember({**line("resp_mine", tenant="acme"), "internal_id": "nginx-1"})   # a repeated datagram
    assert shared.written == [("resp_mine", "a", "acme")]
    assert c.route(POLICY, follow_up("resp_elsewhere"), "acme").endpoint is RESPONSES   # another host's
    assert c.route(POLICY, follow_up("resp_nowhere"), "acme") is None
    with pytest.raises(Denied):                                          # another host's, not yours
        c.route(POLICY, follow_up("resp_elsewhere"), "beta")
    # Filed before owners were recorded: nobody can be told apart, so nobody is refused.
    assert c.route(POLICY, follow_up("resp_filed_before_owners"), "beta").endpoint is RESPONSES


TENANTS = ["", "acme", "beta", "acme-2"]


@pytest.mark.parametrize("owner", TENANTS)
@pytest.mark.parametrize("asker", TENANTS)
def test_an_answer_is_continued_and_operated_on_only_by_the_tenant_it_was_made_for(owner, asker):
    """One provider account serves every tenant, so it would hand any of them any
    answer by id: the router is the only one who can tell them apart."""
    c = Conversations()
    c.remember(line("resp_1", tenant=owner))
    if asker == owner:
        assert c.route(POLICY, follow_up("resp_1"), asker).endpoint is RESPONSES
        assert stored_responses.route(POLICY, c, "resp_1", asker).endpoint is RESPONSES
        return
    with pytest.raises(Denied) as refused:
        c.route(POLICY, follow_up("resp_1"), asker)
    assert (refused.value.status, refused.value.reason) == (404, "previous_response_not_found")
    assert c.continued["refused"] == 1
    # An operation on it is told exactly what an unknown id is told: nothing about whether it exists.
    with pytest.raises(Denied) as foreign:
        stored_responses.route(POLICY, c, "resp_1", asker)
    with pytest.raises(Denied) as unknown:
        stored_responses.route(POLICY, c, "resp_1".replace("1", "2"), asker)
    assert (foreign.value.status, foreign.value.reason) == (404, "response_not_found")
    assert str(foreign.value).replace("resp_1", "resp_2") == str(unknown.value)


def test_with_unknown_reject_a_follow_up_that_cannot_be_checked_is_refused():
    """conversations: {unknown: reject}: an id the router never saw (stock mode, a
    restart, evicted) is refused rather than routed, since the provider would continue
    it for anyone; one it knows still goes where it is held."""
    c = Conversations()
    c.remember(line("resp_known", tenant="acme"))
    c.remember(line("resp_gone", served="removed", tenant="acme"))
    for previous in ("resp_never_seen", "resp_gone"):
        with pytest.raises(Denied) as refused:
            c.route(STRICT, follow_up(previous), "acme")
        assert (refused.value.status, refused.value.reason) == (404, "previous_response_not_found")
    assert c.route(STRICT, follow_up("resp_known"), "acme").endpoint is RESPONSES
    assert c.route(STRICT, follow_up(None), "acme") is None              # not a follow-up
    assert c.continued == {"pinned": 1, "unknown": 0, "refused": 2}


CONVERSATION_IDS = ["conv_68a1", "conv_" + "f" * 48, "x", "conv with spaces", "конв_1"]


@pytest.mark.parametrize("conversation_id", CONVERSATION_IDS)
@pytest.mark.parametrize("as_object", [False, True])
def test_a_request_in_a_conversation_is_unknown_state_whoever_asks(conversation_id, as_object):
    """The router does not serve the Conversations API, so no request through it made
    a conversation: whose it is cannot be checked. Routed by the rules by default;
    refused under unknown: reject, for every tenant, whether or not it also names
    an answer the router knows."""
    value = {"id": conversation_id} if as_object else conversation_id
    request = SimpleNamespace(api="responses", body={"input": "more", "conversation": value})
    c = Conversations()
    c.remember(line("resp_known", tenant="acme"))
    assert c.route(POLICY, request, "acme") is None
    assert c.continued == {"pinned": 0, "unknown": 1, "refused": 0}
    for tenant in ("", "acme", "beta"):
        with pytest.raises(Denied) as refused:
            c.route(STRICT, request, tenant)
        assert (refused.value.status, refused.value.reason) == (404, "conversation_not_found")
        assert conversation_id in refused.value.message
    assert c.continued["refused"] == 3


@pytest.mark.parametrize("value", [5, "", [], {}, {"id": 5}, {"id": ""}, True])
def test_a_conversation_that_is_not_an_id_is_a_bad_request(value):
    request = SimpleNamespace(api="responses", body={"input": "more", "conversation": value})
    with pytest.raises(Denied) as refused:
        Conversations().route(POLICY, request, "")
    assert (refused.value.status, refused.value.reason) == (400, "invalid_request")


ITEMS = [{"type": "item_reference", "id": "msg_68a1"},
         {"type": "item_reference", "id": "rs_" + "0" * 40},
         {"type": "item_reference", "id": "fc_1 with spaces"}]
AROUND = [[], [{"role": "user", "content": "and?"}],
          [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}] * 2]


@pytest.mark.parametrize("item", ITEMS, ids=lambda i: i["id"][:12])
@pytest.mark.parametrize("before", range(len(AROUND)))
@pytest.mark.parametrize("previous", [None, "resp_known"])
def test_an_item_named_by_id_is_unknown_state_whoever_asks(item, before, previous):
    """A Responses input may name a stored item of an earlier answer (`item_reference`);
    the provider reads it for whoever names it. The router learns answers' ids, not
    their items', so under unknown: reject such a request is refused for every tenant,
    even as a follow-up of an answer the router knows; by default it is routed."""
    body = {"input": [*AROUND[before], item, {"role": "user", "content": "go on"}]}
    if previous:
        body["previous_response_id"] = previous
    request = SimpleNamespace(api="responses", body=body)
    c = Conversations()
    c.remember(line("resp_known", tenant="acme"))
    routed = c.route(POLICY, request, "acme")
    assert (routed.endpoint if routed else None) is (RESPONSES if previous else None)
    for tenant in ("", "acme", "beta"):
        with pytest.raises(Denied) as refused:
            c.route(STRICT, request, tenant)
        assert (refused.value.status, refused.value.reason) == (404, "item_not_found")
        assert item["id"] in refused.value.message
    assert c.continued["refused"] == 3


@pytest.mark.parametrize("item", [{"type": "item_reference"}, {"type": "item_reference", "id": 7},
                                  {"type": "item_reference", "id": ""}])
def test_an_item_reference_without_an_id_is_a_bad_request_where_items_are_refused(item):
    request = SimpleNamespace(api="responses", body={"input": [item]})
    with pytest.raises(Denied) as refused:
        Conversations().route(STRICT, request, "")
    assert (refused.value.status, refused.value.reason) == (400, "invalid_request")


CONTAINER_BODIES = {
    "messages container id": ("messages", {"container": "container_011CPR5CNjB747bTd36fQLFk"}),
    "messages container object": ("messages", {"container": {"id": "container_1", "skills": []}}),
    "responses tool container": ("responses", {"tools": [
        {"type": "function", "name": "f"}, {"type": "code_interpreter", "container": "cntr_68a1"}]}),
}


@pytest.mark.parametrize("name", CONTAINER_BODIES)
def test_a_code_container_named_by_id_is_unknown_state_whoever_asks(name):
    """A provider-run code tool keeps its files in a container, reusable by id; the
    router never learns whose a container is, so under unknown: reject a request naming
    one is refused for every tenant; by default it is routed by the rules."""
    api, fields = CONTAINER_BODIES[name]
    request = SimpleNamespace(api=api, body={"input": "more", **fields})
    c = Conversations()
    assert c.route(POLICY, request, "acme") is None
    for tenant in ("", "acme", "beta"):
        with pytest.raises(Denied) as refused:
            c.route(STRICT, request, tenant)
        assert (refused.value.status, refused.value.reason) == (404, "container_not_found")
    assert c.continued["refused"] == 3


@pytest.mark.parametrize("fields", [{"container": None}, {"container": {"type": "auto"}},
                                    {"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]},
                                    {"tools": [{"type": "code_interpreter", "container": ""}]}])
def test_a_new_container_is_no_stored_state(fields):
    for api in ("responses", "messages"):
        assert Conversations().route(STRICT, SimpleNamespace(api=api, body={"input": "x", **fields}), "") is None
