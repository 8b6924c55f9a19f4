"""Request → Features: strict parsing of the body and the signals rules match on.

Everything a policy rule can look at is computed here, once per request, into a
slotted `Features` object. Parsing is strict (a body that is not what an
OpenAI-compatible endpoint expects is refused here, never forwarded).
"""

from __future__ import annotations

from collections import OrderedDict


from sidecar.complexity import complexity, signals
from sidecar.edge import strictjson
from sidecar.denials import Denied

# Paths the router forwards, and the body field that carries the prompt.
ROUTED_PATHS = {
    "/v1/chat/completions": "messages",
    "/v1/completions": "prompt",
}
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_MESSAGES = 2048
CODE_MARKERS = ("```", "def ", "function ", "#include", "public static", "=> {", "};", "import ")
MATH_MARKERS = ("\\frac", "\\sqrt", "\\int", "\\sum", "$$", "\\(", "\\[", "^{", "_{", "∫", "√", "∑")


# What a body determines (and the feature cache keeps), as opposed to the
# request around it (method, path, headers, peer).
BODY_FEATURES = ("body", "model", "prompt", "tokens", "messages", "system_prompt", "code", "math",
                 "tools", "stream", "max_tokens", "complexity", "tier_hint")


class Features:
    __slots__ = ("method", "path", "headers", "body", "model", "text", "prompt", "tokens",
                 "messages", "system_prompt", "code", "math", "tools", "stream", "max_tokens",
                 "complexity", "tier_hint", "ip")

    def __init__(self, method: str, path: str, headers, ip: str = ""):
        self.method = method
        self.path = path
        self.headers = headers  # case-insensitive mapping
        self.ip = ip
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
        self.complexity = 0.0
        self.tier_hint = 1


def _bad(message: str) -> Denied:
    return Denied("invalid_request", message)


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


def parse_body(raw: bytes, content_type: str) -> dict:
    """The body as a JSON object, or a Denied saying exactly what is wrong."""
    check_media_type(content_type)
    if not raw:
        raise Denied("invalid_json", "request body is empty; expected a JSON object")
    body = strictjson.loads(raw)
    if not isinstance(body, dict):
        raise Denied("invalid_json",
                     f"request body must be a JSON object, got {_json_type(body)}")
    return body


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _message_text(messages: list, feats: Features) -> str:
    if not messages:
        raise _bad("'messages' must be a non-empty array")
    if len(messages) > MAX_MESSAGES:
        raise _bad(f"'messages' has {len(messages)} entries; at most {MAX_MESSAGES} are allowed")
    parts = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _bad(f"'messages[{i}]' must be an object, got {_json_type(message)}")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise _bad(f"'messages[{i}].role' must be one of {', '.join(sorted(ROLES))}")
        if role in ("system", "developer"):
            feats.system_prompt = True
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise _bad(f"'messages[{i}].content[{j}]' must be an object with a 'type'")
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
        elif content is not None:
            raise _bad(f"'messages[{i}].content' must be a string, an array or null, "
                       f"got {_json_type(content)}")
    return "\n".join(parts)


def _prompt_text(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return "\n".join(prompt)
    raise _bad("'prompt' must be a string or a non-empty array of strings")


def _optional(body: dict, field: str, kind, label: str):
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) and kind is not bool:
        raise _bad(f"'{field}' must be {label}, got boolean")
    if not isinstance(value, kind):
        raise _bad(f"'{field}' must be {label}, got {_json_type(value)}")
    return value


def extract(feats: Features, body: dict) -> Features:
    """Fill `feats` from a parsed body. Raises Denied on wrong field types."""
    feats.body = body
    prompt_field = ROUTED_PATHS[feats.path]
    model = _optional(body, "model", str, "a string")
    feats.model = model if model is not None else ""
    if prompt_field == "messages":
        if "messages" not in body:
            raise _bad("'messages' is required")
        messages = body["messages"]
        if not isinstance(messages, list):
            raise _bad(f"'messages' must be an array, got {_json_type(messages)}")
        feats.text = _message_text(messages, feats)
        feats.messages = len(messages)
    else:
        if "prompt" not in body:
            raise _bad("'prompt' is required")
        feats.text = _prompt_text(body["prompt"])
        feats.messages = 1
    stream = _optional(body, "stream", bool, "a boolean")
    feats.stream = bool(stream)
    max_tokens = _optional(body, "max_tokens", int, "an integer")
    if max_tokens is None:
        max_tokens = _optional(body, "max_completion_tokens", int, "an integer")
    if max_tokens is not None and max_tokens < 1:
        raise _bad("'max_tokens' must be at least 1")
    feats.max_tokens = max_tokens or 0
    tools = _optional(body, "tools", list, "an array")
    functions = _optional(body, "functions", list, "an array")
    feats.tools = bool(tools) or bool(functions)

    text = feats.text
    # ~4 characters per token for English; 4 tokens of framing per message.
    feats.tokens = (len(text) + 3) // 4 + 4 * feats.messages
    feats.prompt = head = signals.windows(text)
    feats.code = any(marker in head for marker in CODE_MARKERS)
    feats.math = any(marker in head for marker in MATH_MARKERS) or (
        head.count("$") >= 2 and any(op in head for op in ("^", "=", "\\")))  # $x^2$, not "$5"
    feats.complexity, feats.tier_hint = complexity.assess(text, feats.messages)
    return feats


class FeatureCache:
    """Body-derived features of bodies already seen, keyed by (path, xxh3 of the
    body): retries and repeated prompts cost a hash and a lookup. Bounded LRU;
    large bodies are not kept (their parsed form would dominate memory)."""

    __slots__ = ("capacity", "max_body", "entries", "hits", "misses")

    def __init__(self, capacity: int = 4096, max_body: int = 32 * 1024):
        self.capacity = capacity
        self.max_body = max_body
        self.entries: OrderedDict = OrderedDict()
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

    def store(self, feats: Features, key, size: int) -> None:
        if size > self.max_body:
            return
        self.entries[key] = tuple(getattr(feats, name) for name in BODY_FEATURES)
        if len(self.entries) > self.capacity:
            self.entries.popitem(last=False)
