"""Per-tenant spend per UTC day, in USD estimated from endpoint prices.

A request reserves prompt tokens × input price + completion tokens reserved ×
output price of the endpoint it goes to, in the same store call as its rate
limits (sidecar.access.limits.Spend), so Redis keeps budgets across hosts too. Amounts
are integer micro-dollars.
"""

from __future__ import annotations

RESERVE_COMPLETION_TOKENS = 256  # when a request sets no max_tokens
DAY = 86_400


def day_of(now_ns: int) -> int:
    return now_ns // 1_000_000_000 // DAY


def seconds_to_midnight(now_ns: int) -> int:
    return DAY - (now_ns // 1_000_000_000) % DAY


def cost_usd(endpoint, prompt_tokens: int, completion_tokens: int, cache_read: int = 0,
             cache_write: int = 0, web_searches: int = 0, cache_write_1h: int = 0) -> float:
    """The endpoint's price for these tokens. `cache_read` and `cache_write` are the
    part of `prompt_tokens` the provider's prompt cache served or stored, each at its
    own price (by default the input price), and `cache_write_1h` the part of the writes
    kept an hour (Anthropic), at its price (by default the write price); `web_searches`,
    the searches the provider ran for the answer and reported (Anthropic), at its
    price per search."""
    fresh = max(0, prompt_tokens - cache_read - cache_write)
    return (fresh * endpoint.price_in + cache_read * endpoint.price_cache_read
            + (cache_write - cache_write_1h) * endpoint.price_cache_write
            + cache_write_1h * endpoint.price_cache_write_1h + completion_tokens * endpoint.price_out
            + web_searches * endpoint.price_web_search)


def estimate_micros(endpoint, prompt_tokens: int, completion_tokens: int, cache_read: int = 0,
                    cache_write: int = 0, web_searches: int = 0, cache_write_1h: int = 0) -> int:
    usd = cost_usd(endpoint, prompt_tokens, completion_tokens, cache_read, cache_write, web_searches,
                   cache_write_1h)
    return max(1, round(usd * 1_000_000)) if usd > 0 else 0


def spend_key(tenant: str, now_ns: int) -> str:
    return f"budget|{tenant}|{day_of(now_ns)}"
