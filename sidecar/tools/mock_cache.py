"""A simulated provider prompt cache, so usage reports cached input as real ones do.

A request whose prefix (its system text, tools and every message but the last) was
seen before reads that prefix from the cache. As the providers document it: OpenAI
caches any prefix of 1,024 tokens or more by itself, in steps of 128 tokens;
Anthropic caches only where the request marks a breakpoint (`cache_control`), and
reports the first request as a cache write. Token counts are the mock's own
(bytes / 4), like the rest of its usage.
"""

from __future__ import annotations

from collections import OrderedDict

import orjson
import xxhash

MIN_TOKENS = 1024
OPENAI_STEP = 128
PREFIX_FIELDS = ("system", "instructions", "tools", "functions")


def _prefix(body: dict) -> dict:
    prefix = {k: body[k] for k in PREFIX_FIELDS if k in body}
    for key in ("messages", "input"):
        items = body.get(key)
        if isinstance(items, list) and len(items) > 1:
            prefix[key] = items[:-1]
    return prefix


class PromptCache:
    def __init__(self, size: int = 10_000):
        self.size = size
        self.seen: OrderedDict[int, None] = OrderedDict()

    def lookup(self, api: str, body: dict, raw: bytes, prompt_tokens: int) -> tuple[int, int]:
        """(tokens read from the cache, tokens written to it) for this request."""
        anthropic = api == "messages"
        if anthropic and b'"cache_control"' not in raw:
            return 0, 0
        prefix = orjson.dumps(_prefix(body))
        tokens = min(len(prefix) // 4, prompt_tokens - 1)
        if tokens < MIN_TOKENS:
            return 0, 0
        key = xxhash.xxh64_intdigest(prefix)
        if key in self.seen:
            self.seen.move_to_end(key)
            return (tokens if anthropic else tokens // OPENAI_STEP * OPENAI_STEP), 0
        self.seen[key] = None
        if len(self.seen) > self.size:
            self.seen.popitem(last=False)
        return 0, (tokens if anthropic else 0)
