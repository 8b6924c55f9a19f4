"""How decoders behind an endpoint read a JSON key, modelled apart from the router's
code (sidecar.edge.spellings): Go's encoding/json (case folded with Unicode's simple
folding, golang/go#43664), proto3 JSON (camelCase as well as the field's own name),
.NET's ordinal ignore-case (upper case). And spellings of a name they read as it."""

from __future__ import annotations

import random

# Unicode's simple case folding orbits that hold an ASCII letter and a non-ASCII one.
GO_ORBITS = {"k": "kK\u212a", "s": "sS\u017f"}


def go_reads_as(key: str, name: str) -> bool:
    """bytes.EqualFold, the match encoding/json falls back to."""
    if len(key) != len(name):
        return False
    return all(a == b or a in GO_ORBITS.get(b.lower(), b + b.upper()) for a, b in zip(key, name))


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def dotnet_reads_as(key: str, name: str) -> bool:
    return len(key) == len(name) and all(a.upper() == b.upper() for a, b in zip(key, name))


def respelled(rng: random.Random, name: str) -> str:
    """A spelling of `name` one of the decoders reads as it, other than `name`."""
    while True:
        style = rng.choice(["case", "go_fold", "camel", "dotless_i"])
        if style == "camel":
            key = camel(name)
        elif style == "dotless_i" and "i" in name:
            key = name.replace("i", "\u0131", 1)
        else:
            chars = []
            for c in name:
                pool = GO_ORBITS.get(c, c + c.upper()) if style == "go_fold" else c + c.upper()
                chars.append(rng.choice(pool))
            key = "".join(chars)
        if key != name:
            assert go_reads_as(key, name) or key == camel(name) or dotnet_reads_as(key, name)
            return key
