"""Per-tenant spend per UTC day, in USD estimated from endpoint prices.

A request reserves prompt tokens × input price + completion tokens reserved ×
output price of the endpoint it goes to; settling with the usage the endpoint
reported gives back the difference. Amounts are integer micro-dollars.
"""

from __future__ import annotations

RESERVE_COMPLETION_TOKENS = 256  # when a request sets no max_tokens
DAY = 86_400


def day_of(now_ns: int) -> int:
    return now_ns // 1_000_000_000 // DAY


def seconds_to_midnight(now_ns: int) -> int:
    return DAY - (now_ns // 1_000_000_000) % DAY


def estimate_micros(endpoint, prompt_tokens: int, completion_tokens: int) -> int:
    usd = prompt_tokens * endpoint.price_in + completion_tokens * endpoint.price_out
    return max(1, round(usd * 1_000_000)) if usd > 0 else 0


class BudgetBook:
    """In-process spend ledger: {(tenant, day): micro-USD}."""

    def __init__(self):
        self.spent: dict[tuple[str, int], int] = {}

    def reserve(self, tenant: str, now_ns: int, micros: int, cap_micros: int) -> bool:
        key = (tenant, day_of(now_ns))
        spent = self.spent.get(key, 0)
        if spent + micros > cap_micros:
            return False
        self.spent[key] = spent + micros
        if len(self.spent) > 100_000:  # yesterday's entries are dead weight
            today = key[1]
            self.spent = {k: v for k, v in self.spent.items() if k[1] >= today}
        return True

    def refund(self, tenant: str, now_ns: int, micros: int) -> None:
        key = (tenant, day_of(now_ns))
        if key in self.spent:
            self.spent[key] = max(0, self.spent[key] - micros)
