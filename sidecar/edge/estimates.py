"""Token counts for an answer whose usage nobody read: every answer in stock mode
(nginx cannot read bodies), and in lua mode a stream cut short or a provider that
sends no usage.

The prompt is the decision's own count of the request's text (the `tokens` it
logged in X-Route-Features, which limits and budgets reserved), not the request's
bytes, which carry headers and the JSON around the text.

The answer is its body's bytes (nginx's $upstream_response_length: no headers) over
a bytes-per-token ratio for its API, streamed or whole. The two differ by 40x: a
whole answer is 250-1,000 bytes of JSON around text at ~4-6 bytes a token, while a
stream frames each delta as an event of its own. OpenAI's chat, completions and
Responses streams send one token per event, each event ~160-300 bytes (ids, model,
indices, nulls); Anthropic's deltas carry a few tokens in ~120 bytes. A single ratio
for both, over bytes that included the headers, made a stock-mode stream count
60-75x its real tokens against the client's token limits (a whole answer 3-16x). Lua mode learns each ratio from the answers that did
report usage; stock mode keeps these defaults.
"""

from __future__ import annotations

from sidecar.access.budgets import RESERVE_COMPLETION_TOKENS

# The JSON around a whole answer's text (ids, model, usage, and for the Responses
# API every setting of the request echoed back), from the providers' documented objects.
ENVELOPE_BYTES = {"chat": 550, "completions": 250, "messages": 400, "responses": 1000}
WHOLE_BYTES_PER_TOKEN = 5.0        # JSON-escaped text
# The events that open a stream and do not grow with its tokens: Anthropic's
# message_start (usage and settings) and content_block_start; the Responses API's
# response.created and .in_progress (each the whole response object, every setting
# echoed) and the output item and part being added. Only the opening ones, so a stream
# cut early is not estimated at nothing; a finished stream's closing events (~260
# bytes, ~1.9 KB) count as a few tokens too many, never too few.
STREAM_ENVELOPE_BYTES = {"messages": 530, "responses": 2000}
STREAM_BYTES_PER_TOKEN = {"messages": 45.0,    # Anthropic: a few tokens per content_block_delta
                          "responses": 240.0}  # a typed event per token; the text again at the end
DEFAULT_STREAM_BYTES_PER_TOKEN = 200.0        # OpenAI-style: one token per event
LEARNING_WEIGHT = 0.05             # how fast a learned ratio follows new answers
APIS = ("chat", "completions", "responses", "messages", "embeddings", "stored", "count")
# Answers that are no generated tokens: vectors, a stored response's operations
# (retrieve, delete, cancel, list its input; sidecar.edge.stored_responses), token
# counts (sidecar.edge.token_counts).
GENERATE_NOTHING = ("embeddings", "stored", "count")


def _last_number(value) -> int | None:
    """The served hop's figure: the last number of nginx's "12, 0 : 345"."""
    text = str(value or "")
    if text.isdigit():
        return int(text)   # one hop: the usual case, and the cheap one
    for part in reversed(text.replace(":", ",").split(",")):
        part = part.strip()
        if part.isdigit():
            return int(part)
    return None


def api_of(entry: dict) -> str:
    api = (entry.get("features") or "").partition(";")[0]
    return api if api in APIS else "chat"


def _features(entry: dict) -> list[str]:
    """api;tokens;messages;max_tokens;complexity;tier_hint;flags;model, split."""
    return (entry.get("features") or "").split(";", 7)


def background(entry: dict) -> bool:
    """A Responses request sent with background: true (flag b): its answer is `queued`,
    its tokens are spent later."""
    if not (entry.get("features") or "").startswith("responses;"):
        return False   # every other line: no split
    fields = _features(entry)
    return len(fields) == 8 and "b" in fields[6]


def prompt_tokens(entry: dict) -> int:
    """The decision's count of the prompt; the request's bytes / 4 if it logged none."""
    fields = (entry.get("features") or "").split(";", 2)
    if len(fields) > 2 and fields[1].isdigit():
        return int(fields[1])
    return (_last_number(entry.get("bytes_in")) or 0) // 4


class TokenEstimates:
    def __init__(self):
        self.learned: dict[tuple[str, bool], float] = {}   # (api, streamed) -> bytes per token

    def bytes_per_token(self, api: str, streamed: bool) -> float:
        learned = self.learned.get((api, streamed))
        if learned is not None:
            return learned
        if streamed:
            return STREAM_BYTES_PER_TOKEN.get(api, DEFAULT_STREAM_BYTES_PER_TOKEN)
        return WHOLE_BYTES_PER_TOKEN

    @staticmethod
    def _text_bytes(entry: dict, api: str) -> tuple[int, bool]:
        """(the answer's bytes that scale with its tokens, whether it was streamed)."""
        size = _last_number(entry.get("upstream_body_bytes"))
        if size is None:
            size = _last_number(entry.get("bytes_out")) or 0
        streamed = entry.get("stream") == "1"
        envelope = (STREAM_ENVELOPE_BYTES if streamed else ENVELOPE_BYTES).get(api, 0)
        return max(0, size - envelope), streamed

    def completion_tokens(self, entry: dict) -> int:
        api = api_of(entry)
        if api in GENERATE_NOTHING:
            return 0
        if api == "responses" and background(entry):   # answered `queued`: what it reserved
            max_tokens = _features(entry)[3]
            return int(max_tokens) if max_tokens.isdigit() and max_tokens != "0" else RESERVE_COMPLETION_TOKENS
        size, streamed = self._text_bytes(entry, api)
        return round(size / self.bytes_per_token(api, streamed))

    def learn(self, entry: dict, completion: int) -> None:
        """An answer that reported its usage tunes its API's ratio."""
        if completion <= 0 or not entry.get("upstream_body_bytes"):
            return
        api = api_of(entry)
        size, streamed = self._text_bytes(entry, api)
        if size <= 0:
            return
        key = (api, streamed)
        ratio = self.learned.get(key) or self.bytes_per_token(api, streamed)
        self.learned[key] = ratio + LEARNING_WEIGHT * (size / completion - ratio)
