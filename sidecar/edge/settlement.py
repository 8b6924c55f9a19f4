"""Settling what admission reserved with what a request really used.

At admission a request reserves its estimate (prompt tokens + max_tokens, or 256,
for each of n choices) against its token limits, and the same estimate in USD
against its tenant's daily budget. When the feedback log says what happened, the
difference is given back (or, if it used more, charged), once per request: the entry
is taken out of `pending` by nginx's own request id, so a repeated datagram settles
nothing, and only the process that admitted a request holds its entry (every process
hears every datagram). Usage is the provider's when lua mode parsed it; otherwise
(stock mode, a stream cut short) the estimate from the answer's bytes, so a client
that disconnects mid-stream pays for what was produced, not zero. An entry whose
feedback never comes stays at the estimate: it expires after `TIMEOUT_NS`, and the
table is bounded.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from sidecar.access import budgets, limits
from sidecar.edge.outcomes import Usage, provider_usage

TIMEOUT_NS = 600 * 1_000_000_000
MAX_PENDING = 100_000


class Pending(NamedTuple):
    reservation: limits.Reservation
    spend_key: str
    spend_micros: int
    endpoint: str          # the decision's endpoint (a fallback may serve; prices are per endpoint)
    prompt_tokens: int     # the estimate at admission
    at_ns: int


class Settlements:
    def __init__(self, store_ref, clock_ns):
        self.store_ref = store_ref    # callable -> the limit store in use
        self.clock_ns = clock_ns
        self.pending: OrderedDict[str, Pending] = OrderedDict()
        self.settled = 0
        self.expired = 0

    def hold(self, internal_id: str, pending: Pending) -> None:
        if not internal_id:
            return
        self.pending[internal_id] = pending
        if len(self.pending) > MAX_PENDING:
            self.pending.popitem(last=False)
            self.expired += 1

    def settle(self, entry: dict, policy, estimates) -> bool:
        """Settle the request `entry` describes, if this process holds it."""
        held = self.pending.pop(entry.get("internal_id") or "", None)
        if held is None:
            return False
        endpoint = policy.endpoint_by_name.get(entry.get("served") or "") or \
            policy.endpoint_by_name.get(held.endpoint)
        usage = _usage(entry, held, estimates, endpoint)
        now = self.clock_ns()
        store = self.store_ref()
        limits.settle(store, held.reservation, usage.prompt + usage.completion, now)
        if held.spend_key and endpoint is not None:
            used = budgets.estimate_micros(endpoint, *usage)
            if used != held.spend_micros:
                store.refund_spend(held.spend_key, held.spend_micros - used)
        self.settled += 1
        return True

    def collect(self):
        done = CounterMetricFamily("router_settlements", "Reservations settled from feedback, or "
                                   "left at the estimate (expired)", labels=["result"])
        done.add_metric(["settled"], self.settled)
        done.add_metric(["expired"], self.expired)
        yield done
        waiting = GaugeMetricFamily("router_settlements_pending", "Reservations waiting for feedback")
        waiting.add_metric([], len(self.pending))
        yield waiting

    def expire(self) -> None:
        """Forget entries whose feedback never came (they stay at the estimate)."""
        cutoff = self.clock_ns() - TIMEOUT_NS
        while self.pending:
            key, held = next(iter(self.pending.items()))
            if held.at_ns > cutoff:
                break
            del self.pending[key]
            self.expired += 1


def _usage(entry: dict, held: Pending, estimates, endpoint) -> Usage:
    if entry.get("cache") == "HIT":
        return Usage(0, 0)   # nginx's response cache answered: no endpoint did any work
    reported = provider_usage(entry, endpoint.context_tokens if endpoint is not None else 0)
    if reported is not None:
        return reported
    if not str(entry.get("status", "")).startswith("2"):
        return Usage(0, 0)   # nothing was produced: the reservation comes back whole
    return Usage(held.prompt_tokens, estimates.completion_tokens(entry))
