"""Which endpoint holds each Responses conversation, and the background responses
whose usage is still to come.

A Responses request may continue an earlier answer by naming it
(`previous_response_id`); only the provider that produced that answer has it, and
any other answers 404. Lua mode reads each Responses answer's id (hir.lua) into the
feedback log, every sidecar process reads every line, and a follow-up goes to the
endpoint that served the answer it names, with no fallbacks: no other endpoint could
serve it. An id this process never saw (another host, a restart, evicted, or stock
mode, where nginx cannot read answers) is routed by the rules as before. With Redis
(`serve --redis`), the map is shared: a follow-up may reach any host.

An answer belongs to the tenant whose key asked for it ("" for clients without a
key). The router holds one provider account for all of them, so the provider
would give any of them any answer by its id: the router must not. A follow-up or
an operation naming another tenant's answer is refused with the 404 an unknown id
gets from a provider, and nothing is forwarded.

A `background` request is answered at once, `queued`, with no usage: the tokens are
spent later, and their count arrives when the client retrieves the finished answer
(GET /v1/responses/{id}). So the request's usage waits here, and is counted (and its
reservation settled) from the first retrieve that reports it; a retrieve never
counts otherwise. If none comes within `WAIT_NS`, the wait ends at the estimate: the
request's reservation (its prompt and max_output_tokens, or 256)."""

from __future__ import annotations

import sys
import time

from prometheus_client.core import CounterMetricFamily

from sidecar.denials import Denied
from sidecar.edge import bodies
from sidecar.edge.estimates import background
from sidecar.policy.compiled import Route

CAPACITY = 100_000   # ids remembered, oldest forgotten first: ~20 MB (53-character ids, with owners)
AWAITING = 10_000    # background requests waiting for their usage (~1 KB each)
IN_FLIGHT = 10_000   # Responses requests this process decided whose answer is still to come
WAIT_NS = 600 * 1_000_000_000   # as long as a reservation is held (sidecar.edge.settlement)
RULE = "previous_response"
USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "cache_read_tokens", "cache_write_tokens")


class Foreign(Exception):
    """A response id another tenant's request made."""


class Conversations:
    __slots__ = ("capacity", "endpoints", "continued", "awaiting", "overflow", "clock_ns", "store_ref",
                 "decided")

    def __init__(self, capacity: int = CAPACITY, clock_ns=time.time_ns, store_ref=None):
        self.capacity = capacity
        # callable -> the limit store: Redis shares the map between hosts (none in memory)
        self.store_ref = store_ref
        # nginx ids of the Responses requests this process decided: only it tells Redis
        # (every process reads every feedback line; one write each is enough)
        self.decided: dict[str, None] = {}
        # response id -> (endpoint name, tenant name or ""), oldest first
        self.endpoints: dict[str, tuple[str, str]] = {}
        self.continued = {"pinned": 0, "unknown": 0, "refused": 0}
        # background response id -> (its create's feedback entry, when it was seen), oldest first
        self.awaiting: dict[str, tuple[dict, int]] = {}
        self.overflow: list[dict] = []   # pushed out of `awaiting` by newer ones: due now
        self.clock_ns = clock_ns

    def remember(self, entry: dict) -> None:
        """From a feedback line: the endpoint that served a Responses answer with an id."""
        response_id = entry.get("response_id")
        if response_id and entry.get("status") == "200" and entry.get("served"):
            tenant = entry.get("tenant") or ""
            # A few names, many ids: one string each.
            self.endpoints[response_id] = (sys.intern(entry["served"]), sys.intern(tenant))
            if len(self.endpoints) > self.capacity:
                del self.endpoints[next(iter(self.endpoints))]
            if self.store_ref is not None and entry.get("internal_id") in self.decided:
                del self.decided[entry["internal_id"]]
                self.store_ref().remember_response(response_id, entry["served"], tenant)   # ~160 us

    def decide(self, internal_id: str) -> None:
        """This process routed a Responses request: its answer's id is this process's
        to share."""
        if self.store_ref is not None and internal_id:
            self.decided[internal_id] = None
            if len(self.decided) > IN_FLIGHT:
                del self.decided[next(iter(self.decided))]

    def endpoint_for(self, response_id: str, tenant: str) -> str | None:
        """The endpoint holding `response_id` (this process's map, then the shared one)
        if it is `tenant`'s; None if unknown. Raises Foreign when it is another
        tenant's. An owner is None where none was recorded (Redis entries filed
        before owners were): not checked."""
        held = self.endpoints.get(response_id)
        if held is None and self.store_ref is not None:
            held = self.store_ref().response_holder(response_id)
        if held is None:
            return None
        if held[1] is not None and held[1] != tenant:
            raise Foreign(response_id)
        return held[0]

    def observe(self, entry: dict, retrieved: dict | None) -> dict | None:
        """A feedback line with a response id. A background create is marked `deferred`
        (its usage is not in its answer) and waits; a retrieve that reports a waiting
        response's usage (`retrieved`) returns that create's entry with it, now due."""
        features = entry.get("features") or ""
        if features.startswith("responses;"):
            self.remember(entry)
            if entry.get("status") == "200" and background(entry):
                entry["deferred"] = True
                self.awaiting[entry["response_id"]] = (entry, self.clock_ns())
                if len(self.awaiting) > AWAITING:
                    oldest = next(iter(self.awaiting))
                    self.overflow.append(self.awaiting.pop(oldest)[0])
            return None
        if retrieved and retrieved.get("completion_tokens") and entry.get("response_id") in self.awaiting:
            created, _ = self.awaiting.pop(entry["response_id"])
            # The create's bytes were the `queued` answer's: no ratio to learn from them.
            return {**created, **retrieved, "deferred": False, "upstream_body_bytes": ""}
        return None

    def expire(self) -> list[dict]:
        """The background creates whose wait ended without a reported usage (timed
        out, or pushed out by newer ones): each is now due at its estimate."""
        if not (self.awaiting or self.overflow):
            return []   # the usual case, on every feedback line: no clock read
        ended = [{**created, "deferred": False} for created in self.overflow]
        self.overflow.clear()
        cutoff = self.clock_ns() - WAIT_NS
        while self.awaiting:
            response_id, (created, seen_ns) = next(iter(self.awaiting.items()))
            if seen_ns > cutoff:
                break
            del self.awaiting[response_id]
            ended.append({**created, "deferred": False})
        return ended

    def route(self, policy, feats, tenant: str) -> Route | None:
        """The route of a request that continues an answer this process saw, else None.
        Denied 404 for an answer another tenant's request made."""
        if policy.reject_unknown_conversations and feats.api in ("responses", "messages"):
            # A code container a provider-run tool made for an earlier request: it holds
            # that request's files, and the router never learns whose it is.
            container = bodies.container_id(feats.body)
            if container is not None:
                self._unknown(policy, "container_not_found", f"Container with id '{container}' not found.")
        if feats.api != "responses":
            return None
        conversation = bodies.conversation_id(feats.body)
        if conversation is not None:
            # A conversation is made through the provider's Conversations API, which the
            # router does not serve: no request through it made this one, so whose it is
            # cannot be checked, and the provider would read and extend it for anyone.
            return self._unknown(policy, "conversation_not_found",
                                 f"Conversation with id '{conversation}' not found.")
        # An item of an earlier answer, named by id: the router learns answers' ids, not
        # their items', so whose it is cannot be checked either (read only where that
        # refuses it: routed by the rules, such a request is any other request).
        if policy.reject_unknown_conversations and (item := bodies.item_reference(feats.body)):
            self._unknown(policy, "item_not_found", f"Item with id '{item}' not found.")
        previous = feats.body.get("previous_response_id")
        if not previous:
            return None
        try:
            endpoint = policy.endpoint_by_name.get(self.endpoint_for(previous, tenant) or "")
            foreign = False
        except Foreign:
            endpoint, foreign = None, True
        if endpoint is not None and "responses" in endpoint.serves:
            self.continued["pinned"] += 1
            return Route(RULE, endpoint, ())
        # Another tenant's answer is refused; one this process never saw is unknown.
        message = f"Previous response with id '{previous}' not found."
        if foreign:
            self.continued["refused"] += 1
            raise Denied("previous_response_not_found", message)
        return self._unknown(policy, "previous_response_not_found", message)

    def _unknown(self, policy, reason: str, message: str) -> None:
        """A follow-up of state whose tenant cannot be checked: routed by the rules, or
        refused where the policy asked for no guess (conversations.unknown: reject)."""
        if policy.reject_unknown_conversations:
            self.continued["refused"] += 1
            raise Denied(reason, message)
        self.continued["unknown"] += 1
        return None

    def collect(self):
        family = CounterMetricFamily(
            "router_responses_continued", "Responses requests naming a previous_response_id or a "
            "conversation: sent to "
            "the endpoint that served it (pinned), routed by the rules because this process never "
            "saw it (unknown), or refused: another tenant's request made it, or the router never "
            "saw it and the policy says conversations.unknown: reject (refused)",
            labels=["result"])
        for result, n in self.continued.items():
            family.add_metric([result], n)
        yield family
