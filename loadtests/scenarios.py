"""The traffic mix a load test sends: kinds of requests drawn from real prompts
(../shared/data/routing/train.jsonl when it is there, a small built-in set
otherwise) plus kinds that set shape rather than text: long documents, tool
calls, pinned tiers; each sent as one of the APIs the router serves (OpenAI
Chat Completions, OpenAI Responses, Anthropic Messages; loadtests/apis.py).
Weights come from a YAML profile (loadtests/profiles/*.yaml), or
`--kit-mix chat=5,code=2` and `--kit-apis chat=7,responses=2,messages=1`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

import apis

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing" / "train.jsonl"
# Which labelled files stand for which kind of traffic.
FILE_KINDS = {
    "clinc150": "chat", "natural_questions_mini": "chat", "truthfulqa": "chat",
    "mbpp_sanitized": "code", "humaneval": "code",
    "math_hendrycks_test": "math", "routellm_gsm8k": "math",
    "ai2_arc_test": "exam", "ifeval": "instructions",
}
BUILT_IN = {
    "chat": ["hi", "what's the weather like on mars", "how do i say thank you in japanese",
             "who wrote pride and prejudice"],
    "code": ["Write a Python function that returns the n-th Fibonacci number iteratively.",
             "def is_palindrome(s: str) -> bool:\n    \"\"\"Return True if s reads the same both ways.\"\"\""],
    "math": ["Let $f(x)=x^3-3x+1$. Find all real $x$ with $f(f(x))=0$.",
             "A train travels 120 km in 1.5 hours. What is its average speed in m/s?"],
    "exam": ["Which gas do plants absorb during photosynthesis? (A) oxygen (B) carbon dioxide "
             "(C) nitrogen (D) hydrogen"],
    "instructions": ["Write a haiku about autumn. Do not use the letter e. End with a question."],
}
DEFAULT_MIX = {"chat": 40, "code": 15, "math": 10, "exam": 8, "instructions": 7,
               "long_document": 8, "tool_call": 7, "pinned": 5}
DEFAULT_APIS = {"chat": 70, "responses": 20, "messages": 10}
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
PINNED = ("nano", "fast", "balanced", "premium", "expert")
DOC_SIZES_KB = (2, 8, 32)


def load_prompts(path: Path = SHARED, per_kind: int = 400, seed: int = 1) -> dict[str, list[str]]:
    prompts: dict[str, list[str]] = {k: list(v) for k, v in BUILT_IN.items()}
    if path.exists():
        by_kind: dict[str, list[str]] = {}
        with path.open() as f:
            for line in f:
                row = json.loads(line)
                kind = FILE_KINDS.get(row["file"])
                if kind:
                    by_kind.setdefault(kind, []).append(row["prompt"])
        rng = random.Random(seed)
        for kind, rows in by_kind.items():
            rng.shuffle(rows)
            prompts[kind] = rows[:per_kind]
    return prompts


def _weights(text: str, profile: str, key: str, default: dict, names) -> dict[str, float]:
    """Weights from the profile's `key` (else `default`), then `name=weight,...` over them."""
    weights = dict(default)
    if profile:
        spec = yaml.safe_load(Path(profile).read_text()) or {}
        weights = {k: float(v) for k, v in (spec.get(key) or weights).items()}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        weights[name] = float(weight)
    unknown = set(weights) - set(names)
    if unknown:
        raise ValueError(f"unknown names in the {key}: {', '.join(sorted(unknown))}; "
                         f"expected {', '.join(names)}")
    return {k: w for k, w in weights.items() if w > 0}


def parse_mix(text: str, profile: str = "") -> dict[str, float]:
    return _weights(text, profile, "mix", DEFAULT_MIX, DEFAULT_MIX)


def parse_apis(text: str, profile: str = "") -> dict[str, float]:
    return _weights(text, profile, "apis", DEFAULT_APIS, apis.PATHS)


class Scenarios:
    """Draws (kind, api, body, follow-up): the mix's kinds and the APIs at their
    weights. The body is chat-shaped; apis.shape spells it for its API. A
    Responses request is a follow-up (it continues the sender's last answer)
    with probability `followup_share`."""

    def __init__(self, mix: dict[str, float], prompts: dict[str, list[str]], stream_share: float,
                 rng: random.Random, api_mix: dict[str, float] | None = None, followup_share: float = 0.0):
        self.kinds, self.weights = list(mix), list(mix.values())
        api_mix = api_mix or DEFAULT_APIS
        self.apis, self.api_weights = list(api_mix), list(api_mix.values())
        self.prompts, self.stream_share, self.rng = prompts, stream_share, rng
        self.followup_share = followup_share

    def draw(self) -> tuple[str, str, dict, bool]:
        kind = self.rng.choices(self.kinds, self.weights)[0]
        api = self.rng.choices(self.apis, self.api_weights)[0]
        body = getattr(self, f"_{kind}", self._text)(kind)
        if self.rng.random() < self.stream_share:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}  # chat's usage for the cost report
        followup = api == "responses" and self.rng.random() < self.followup_share
        return kind, api, body, followup

    def _text(self, kind: str) -> dict:
        return {"model": "auto", "messages": [{"role": "user", "content": self.rng.choice(self.prompts[kind])}]}

    def _long_document(self, kind: str) -> dict:
        size = self.rng.choice(DOC_SIZES_KB) * 1024
        source = " ".join(self.rng.choice(self.prompts["chat"] + self.prompts["exam"]) for _ in range(400))
        doc = (source * (size // max(1, len(source)) + 1))[:size]
        ask = self.rng.choice(["Summarise the document above in five bullet points.",
                               "List every question asked in the document and answer each one."])
        return {"model": "auto", "messages": [{"role": "system", "content": "You analyse documents."},
                                              {"role": "user", "content": doc + "\n\n" + ask}]}

    def _tool_call(self, kind: str) -> dict:
        city = self.rng.choice(["Paris", "Lagos", "Lima", "Osaka"])
        return {"model": "auto", "tools": TOOLS,
                "messages": [{"role": "user", "content": f"Should I take an umbrella in {city} today?"}]}

    def _pinned(self, kind: str) -> dict:
        return {"model": self.rng.choice(PINNED),
                "messages": [{"role": "user", "content": self.rng.choice(self.prompts["chat"])}]}
