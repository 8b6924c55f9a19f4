"""Request bodies that never repeat, for benchmarks where every prompt is new.

Real traffic rarely sends the same body twice, so a benchmark that repeats one
body measures the feature cache, not the decision. `short_bodies(n)` makes n
distinct short chat requests (40–300 bytes of prompt, the bulk of chat traffic);
`mixed_bodies(n)` a realistic size mix: mostly short chat,
then ~1 KB and ~8 KB prompts, and a few ~100 KB documents with a question after
them. Deterministic for a seed, so runs compare like with like.
"""

from __future__ import annotations

import random

import orjson

SUBJECTS = ("photosynthesis", "the French revolution", "TCP congestion control", "compound interest",
            "black holes", "the Krebs cycle", "supply and demand", "recursion", "plate tectonics",
            "the immune system", "hash tables", "the Roman empire", "quantum entanglement",
            "inflation", "neural networks", "the water cycle", "public key cryptography",
            "the Renaissance", "vaccines", "garbage collection", "monetary policy", "DNA replication")
ASKS = ("Explain {s} in {n} sentences.", "What is {s}? Keep it under {n} words.",
        "Give me {n} facts about {s}.", "Summarise {s} for a {n}-year-old.",
        "Write a haiku about {s} (number {n}).", "Why does {s} matter? Answer in {n} bullet points.",
        "Compare {s} and {t} in {n} lines.", "Write a Python function that sorts {n} {s} records.",
        "What is {a} times {b}?", "Translate 'I have {n} questions about {s}' into German.",
        "Draft a polite email asking about {s}, reference #{a}.",
        "Solve for x: {a}x + {b} = {n}. Show your steps.")
SYSTEMS = ("You are terse.", "You are a helpful assistant.", "Answer as a patient teacher.", None)
WORDS = ("the", "system", "report", "data", "analysis", "customer", "quarter", "revenue", "model",
         "results", "policy", "section", "table", "figure", "growth", "risk", "market", "team",
         "process", "review", "change", "cost", "value", "plan", "project", "service", "user")
# (share of requests, prompt bytes) — short chat dominates real traffic.
MIX = ((0.70, 0), (0.20, 1024), (0.08, 8 * 1024), (0.02, 100 * 1024))


def _short_prompt(rng: random.Random, i: int) -> str:
    s, t = rng.sample(SUBJECTS, 2)
    ask = rng.choice(ASKS).format(s=s, t=t, n=rng.randint(2, 12), a=rng.randint(2, 9999),
                                  b=rng.randint(2, 9999))
    return f"{ask} (request {i})"  # the counter alone guarantees no two bodies match


def _document(rng: random.Random, size: int) -> str:
    words, total = [], 0
    while total < size:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18))).capitalize() + ". "
        words.append(sentence)
        total += len(sentence)
    return "".join(words)[:size]


def _body(rng: random.Random, prompt: str) -> bytes:
    messages = []
    system = rng.choice(SYSTEMS)
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": prompt})
    body = {"model": "auto", "messages": messages}
    if rng.random() < 0.3:
        body["max_tokens"] = rng.choice((64, 256, 1024))
    return orjson.dumps(body)


def short_bodies(n: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    return [_body(rng, _short_prompt(rng, i)) for i in range(n)]


def mixed_bodies(n: int, seed: int = 7) -> list[bytes]:
    """n distinct bodies in MIX's proportions. Long documents are shared between
    requests but each gets its own question, so no two bodies are the same."""
    rng = random.Random(seed)
    documents = {size: [_document(rng, size) for _ in range(8)] for _, size in MIX if size}
    out = []
    for i in range(n):
        pick, size = rng.random(), 0
        for share, size in MIX:
            if pick < share:
                break
            pick -= share
        question = _short_prompt(rng, i)
        prompt = question if not size else f"{rng.choice(documents[size])}\n\n{question}"
        out.append(_body(rng, prompt))
    rng.shuffle(out)
    return out
