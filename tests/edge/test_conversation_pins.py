from types import SimpleNamespace

from sidecar.edge.conversations import RULE, Conversations

RESPONSES = SimpleNamespace(name="a", serves=frozenset({"chat", "responses"}))
CHAT_ONLY = SimpleNamespace(name="b", serves=frozenset({"chat"}))
POLICY = SimpleNamespace(endpoint_by_name={"a": RESPONSES, "b": CHAT_ONLY})


def line(response_id, served="a", status="200"):
    return {"response_id": response_id, "served": served, "status": status}


def follow_up(previous, api="responses"):
    return SimpleNamespace(api=api, body={"input": "more", "previous_response_id": previous})


def test_a_follow_up_is_pinned_to_the_endpoint_that_served_the_answer_with_no_fallbacks():
    c = Conversations()
    c.remember(line("resp_1"))
    route = c.route(POLICY, follow_up("resp_1"))
    assert route.endpoint is RESPONSES and route.fallbacks == () and route.rule == RULE
    assert c.continued == {"pinned": 1, "unknown": 0}


def test_what_cannot_be_pinned_is_left_to_the_rules():
    c = Conversations()
    c.remember(line("resp_failed", status="502"))     # no answer was stored there
    c.remember(line("resp_gone", served="removed"))   # an endpoint a reload took away
    c.remember(line("resp_chat", served="b"))         # no longer serves the Responses API
    for previous in ("resp_failed", "resp_gone", "resp_chat", "resp_never_seen"):
        assert c.route(POLICY, follow_up(previous)) is None
    assert c.continued == {"pinned": 0, "unknown": 4}
    assert c.route(POLICY, follow_up(None)) is None                       # not a follow-up
    assert c.route(POLICY, follow_up("resp_1", api="chat")) is None      # not the Responses API
    assert c.continued["unknown"] == 4


def test_the_oldest_ids_are_forgotten_first():
    c = Conversations(capacity=3)
    for i in range(5):
        c.remember(line(f"resp_{i}"))
    assert list(c.endpoints) == ["resp_2", "resp_3", "resp_4"]
    c.remember(line("resp_2", served="b"))   # an id seen again keeps its newest endpoint
    assert c.endpoints["resp_2"] == "b" and len(c.endpoints) == 3


class _Shared:
    def __init__(self):
        self.written, self.kept = [], {"resp_elsewhere": "a"}

    def remember_response(self, response_id, endpoint):
        self.written.append((response_id, endpoint))

    def response_endpoint(self, response_id):
        return self.kept.get(response_id)


def test_only_the_process_that_decided_a_request_shares_its_answer_and_any_finds_it():
    shared = _Shared()
    c = Conversations(store_ref=lambda: shared)
    c.decide("nginx-1")
    c.remember({**line("resp_mine"), "internal_id": "nginx-1"})
    c.remember({**line("resp_other_process"), "internal_id": "nginx-2"})
    c.remember({**line("resp_mine"), "internal_id": "nginx-1"})   # a repeated datagram
    assert shared.written == [("resp_mine", "a")]
    assert c.route(POLICY, follow_up("resp_elsewhere")).endpoint is RESPONSES   # another host's
    assert c.route(POLICY, follow_up("resp_nowhere")) is None
