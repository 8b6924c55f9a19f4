"""Which endpoint holds each Responses conversation.

A Responses request may continue an earlier answer by naming it
(`previous_response_id`); only the provider that produced that answer has it, and
any other answers 404. Lua mode reads each Responses answer's id (hir.lua) into the
feedback log, every sidecar process reads every line, and a follow-up goes to the
endpoint that served the answer it names, with no fallbacks: no other endpoint could
serve it. An id this process never saw (another host, a restart, evicted, or stock
mode, where nginx cannot read answers) is routed by the rules as before."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily

from sidecar.policy.compiled import Route

CAPACITY = 100_000   # ids remembered, oldest forgotten first: ~15 MB at most
RULE = "previous_response"


class Conversations:
    __slots__ = ("capacity", "endpoints", "continued")

    def __init__(self, capacity: int = CAPACITY):
        self.capacity = capacity
        self.endpoints: dict[str, str] = {}   # response id -> endpoint name, oldest first
        self.continued = {"pinned": 0, "unknown": 0}

    def remember(self, entry: dict) -> None:
        """From a feedback line: the endpoint that served a Responses answer with an id."""
        response_id = entry.get("response_id")
        if response_id and entry.get("status") == "200" and entry.get("served"):
            self.endpoints[response_id] = entry["served"]
            if len(self.endpoints) > self.capacity:
                del self.endpoints[next(iter(self.endpoints))]

    def route(self, policy, feats) -> Route | None:
        """The route of a request that continues an answer this process saw, else None."""
        previous = feats.body.get("previous_response_id") if feats.api == "responses" else None
        if not previous:
            return None
        endpoint = policy.endpoint_by_name.get(self.endpoints.get(previous, ""))
        if endpoint is None or "responses" not in endpoint.serves:
            self.continued["unknown"] += 1
            return None
        self.continued["pinned"] += 1
        return Route(RULE, endpoint, ())

    def collect(self):
        family = CounterMetricFamily(
            "router_responses_continued", "Responses requests naming a previous_response_id: sent to "
            "the endpoint that served it (pinned), or routed by the rules because this process never "
            "saw it (unknown)", labels=["result"])
        for result, n in self.continued.items():
            family.add_metric([result], n)
        yield family
