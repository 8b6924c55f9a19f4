"""Request → Features: strict parsing of the body and the signals rules match on.

Everything a policy rule can look at is computed here, once per request, into a
slotted `Features` object. Parsing is strict (a body that is not what an
OpenAI-compatible endpoint expects is refused here, never forwarded).
"""

from __future__ import annotations

import operator
import re
from collections import OrderedDict


from sidecar.complexity import complexity, signals
from sidecar.denials import Denied
from sidecar.edge import bodies, strictjson, unpriced
from sidecar.edge.spellings import FieldNames
from sidecar.policy.apis import API_BY_PATH

# Paths the router forwards, and the API each one is (sidecar.policy.apis).
ROUTED_PATHS = API_BY_PATH
# Fields with which a gateway behind an endpoint answers with other models than
# `model` when that one fails, is rate-limited or refuses (OpenRouter's `models`
# and `route: "fallback"`, its Messages `fallbacks`; LiteLLM's `fallbacks` and
# `context_window_fallback_dict`; AssemblyAI's `fallbacks`), billed at their
# price and past a tenant's tiers. No API the router serves defines them.
MODEL_CHOOSERS = frozenset({"models", "fallbacks", "route", "context_window_fallback_dict"})
# Every top-level field the router reads: a key that folds onto one without being
# it ("Model", "MAX_TOKENS") is refused (sidecar.edge.spellings).
TOP_LEVEL_NAMES = FieldNames({"model", "background"} | MODEL_CHOOSERS | unpriced.READ | bodies.READ)
# The APIs whose requests a provider answers by generating, and so may run tools
# or a processing tier for (not embeddings, not token counts).
RUNS_TOOLS = frozenset({"chat", "completions", "responses", "messages"})
CODE_MARKERS = ("```", "def ", "function ", "#include", "public static", "=> {", "};", "import ")
MATH_MARKERS = ("\\frac", "\\sqrt", "\\int", "\\sum", "$$", "\\(", "\\[", "^{", "_{", "∫", "√", "∑")
# One scan for "any marker in the text" instead of one `in` per marker.
_CODE_SCAN = re.compile("|".join(map(re.escape, CODE_MARKERS))).search
_MATH_SCAN = re.compile("|".join(map(re.escape, MATH_MARKERS))).search


# What a body determines (and the feature cache keeps), as opposed to the
# request around it (method, path, headers, peer).
BODY_FEATURES = ("body", "model", "prompt", "tokens", "messages", "system_prompt", "code", "math",
                 "tools", "stream", "max_tokens", "choices", "complexity", "tier_hint",
                 "unpriced")
_body_features = operator.attrgetter(*BODY_FEATURES)


class Features:
    __slots__ = ("method", "path", "api", "headers", "body", "model", "text", "prompt", "tokens",
                 "messages", "system_prompt", "code", "math", "tools", "stream", "max_tokens",
                 "choices", "complexity", "tier_hint", "unpriced", "ip", "sticky",
                 "cache_slot")

    def __init__(self, method: str, path: str, headers, ip: str = ""):
        self.method = method
        self.path = path
        self.api = API_BY_PATH.get(path, "chat")
        self.headers = headers  # case-insensitive mapping
        self.ip = ip
        self.sticky = ""  # the client's id: keeps a canary split the same for one client
        # From the response-cache key: every repeat of a cacheable request goes to the
        # same endpoint of a tier, the one that holds its answer (None: round robin).
        self.cache_slot: int | None = None
        self.body: dict = {}
        self.model = ""
        self.text = ""
        self.prompt = ""  # what `prompt:` rules match: the text, or its head and tail if long
        self.tokens = 0
        self.messages = 0
        self.system_prompt = False
        self.code = False
        self.math = False
        self.tools = False
        self.stream = False
        self.max_tokens = 0
        self.choices = 1  # completions generated per request (n, best_of)
        self.complexity = 0.0
        self.tier_hint = 1
        # What a provider would bill beside the tokens (sidecar.edge.unpriced).
        self.unpriced: tuple = ()


_bad = bodies.bad


def content_type(headers) -> str:
    """The one Content-Type a request sent. Two are refused whatever their order:
    nginx, the sidecar and a provider could each read a different one."""
    values = headers.getall("Content-Type", ())
    if len(values) > 1:
        raise _bad(f"the Content-Type header was sent {len(values)} times; send it once")
    return values[0] if values else ""


def check_media_type(content_type: str) -> None:
    media_type = content_type.split(";", 1)[0].strip(" \t").lower()
    if media_type != "application/json":
        shown = media_type or "none"
        raise Denied("unsupported_media_type",
                     f"Content-Type must be application/json, got {shown}")


def check_content_coding(headers) -> None:
    """A body the router reads must be the bytes a provider is sent: nginx
    forwards no Content-Encoding, and the router decodes none (a compressed body
    is also a decompression bomb waiting to be opened). Anything but identity is
    refused with 415 and the one coding accepted (RFC 9110 15.5.16)."""
    for value in headers.getall("Content-Encoding", ()):
        for coding in value.split(","):
            coding = coding.strip(" \t").lower()
            if coding not in ("", "identity"):
                raise Denied("unsupported_content_encoding",
                             f"Content-Encoding {coding[:32]!r} is not supported; send the body "
                             "uncompressed", headers=(("Accept-Encoding", "identity"),))


def parse_body(raw: bytes, content_type: str) -> dict:
    """The body as a JSON object, or a Denied saying exactly what is wrong."""
    return read_body(raw, content_type)[0]


def read_body(raw: bytes, content_type: str) -> tuple[dict, int]:
    """`parse_body`, and how many values the body holds (what keeping it costs)."""
    check_media_type(content_type)
    if not raw:
        raise Denied("invalid_json", "request body is empty; expected a JSON object")
    body, values = strictjson.loads_counted(raw)
    if not isinstance(body, dict):
        raise Denied("invalid_json",
                     f"request body must be a JSON object, got {_json_type(body)}")
    return body, values


_json_type = bodies.json_type


def extract(feats: Features, body: dict) -> Features:
    """Fill `feats` from a parsed body. Raises Denied on wrong field types."""
    feats.body = body
    TOP_LEVEL_NAMES.check(body)
    model = bodies.optional(body, "model", str, "a string")
    feats.model = model if model is not None else ""
    if not MODEL_CHOOSERS.isdisjoint(body):   # one C call when, as usual, none is there
        _refuse_model_choosers(body)
    read = bodies.READERS[feats.api](body)
    feats.text, feats.messages, feats.system_prompt = read.text, read.messages, read.system_prompt
    feats.stream, feats.max_tokens, feats.tools = read.stream, read.max_tokens, read.tools
    feats.choices = read.choices
    if feats.api in RUNS_TOOLS:
        feats.unpriced = unpriced.requested(body)

    text = feats.text
    # ~4 bytes of UTF-8 per token (4 characters of English; bodies.utf8_length says why
    # not characters); 4 tokens of framing per message.
    feats.tokens = (bodies.utf8_length(text) + read.beyond_text + 3) // 4 + 4 * feats.messages
    feats.prompt = head = signals.windows(text)
    feats.code = _CODE_SCAN(head) is not None
    feats.math = _MATH_SCAN(head) is not None or (
        head.count("$") >= 2 and any(op in head for op in ("^", "=", "\\")))  # $x^2$, not "$5"
    if feats.api != "embeddings":  # an embedding costs the same however hard the text
        feats.complexity, feats.tier_hint = complexity.assess(text, feats.messages)
    return feats


def _refuse_model_choosers(body: dict) -> None:
    named = sorted(field for field in MODEL_CHOOSERS & body.keys() if body[field] is not None)
    if named:   # null is absent, as for any field
        raise bodies.bad(f"'{named[0]}' is not accepted: it would let an endpoint answer with another "
                         "model than the one the router chooses (the router picks the model and "
                         "its fallbacks; GET /v1/models lists the names a client may ask for)")


def entry_weight(size: int, values: int) -> int:
    """The most memory a cached body of `size` bytes holding `values` JSON values
    takes: a parsed value up to ~135 bytes (a small dict under a new key), its text
    up to ~2 bytes a byte, and the fields read from it. Bytes alone do not bound
    it: 32 KB of `[{},{},...]` parses to ~770 KB."""
    return 2 * size + 160 * values + 2048


class FeatureCache:
    """Body-derived features of bodies already seen, keyed by (path, xxh3 of the
    body): retries and repeated prompts cost a hash and a lookup. Bounded LRU, by
    entries and by memory (each entry weighed by `entry_weight`, so bodies built
    to parse large cannot fill the process); large bodies are not kept.

    An entry is the body's fields alone, taken in one call (a miss is most of
    real traffic): never the request's headers, which carry the client's key."""

    __slots__ = ("capacity", "max_body", "max_bytes", "entries", "weights", "held", "hits", "misses")

    def __init__(self, capacity: int = 4096, max_body: int = 32 * 1024, max_bytes: int = 64 << 20):
        self.capacity = capacity
        self.max_body = max_body
        self.max_bytes = max_bytes
        self.entries: OrderedDict = OrderedDict()
        self.weights: dict = {}
        self.held = 0          # the entries' weights: an upper bound of their memory
        self.hits = 0
        self.misses = 0

    def fill(self, feats: Features, key) -> bool:
        """Copy cached features into `feats`; False on a miss."""
        values = self.entries.get(key)
        if values is None:
            self.misses += 1
            return False
        self.entries.move_to_end(key)
        self.hits += 1
        for name, value in zip(BODY_FEATURES, values):
            setattr(feats, name, value)
        return True

    def store(self, feats: Features, key, size: int, values: int) -> None:
        weight = entry_weight(size, values)
        if size > self.max_body or weight > self.max_bytes or key in self.entries:
            return
        self.entries[key] = _body_features(feats)
        self.weights[key] = weight
        self.held += weight
        while len(self.entries) > self.capacity or self.held > self.max_bytes:
            oldest, _ = self.entries.popitem(last=False)
            self.held -= self.weights.pop(oldest)
