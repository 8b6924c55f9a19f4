"""Keys a provider could read as a field the router reads, without being it.

Field names are case-sensitive in every API the router serves, but not in every
decoder behind an endpoint. Go's encoding/json (Ollama, LocalAI and many gateways)
fills a field from any key that folds to its name and keeps the last one
(`{"dist":"ok","Dist":"KO"}` gives KO, golang/go#43664); its fold also takes 'ſ'
for 's' and the Kelvin sign for 'k'. .NET's and Jackson's case-insensitive modes
match on upper or lower case, and a protobuf JSON parser takes `maxTokens` for
`max_tokens` (proto3's JSON mapping accepts both). So `{"model":"nano",
"Model":"expert"}`, `MAX_TOKENS`, `maxTokens`, `Tools` or `ſtream` would be read
there and not by the router: a model the client picks, an answer past the tokens
reserved, a provider-run tool, a stream whose usage no one asked for. A key that
folds onto a name the router reads at that place, and is not that name, is refused
(400 `ambiguous_key`), as a duplicate key is.
"""

from __future__ import annotations

from sidecar.denials import Denied, client_text


def fold(name: str) -> str:
    # upper() first: 'ı' (dotless i) upper-cases to 'I', which .NET's ordinal
    # ignore-case compares equal to 'i'; casefold() then takes 'ſ', 'K' and 'ß';
    # without underscores, camelCase folds like snake_case.
    return name.upper().casefold().replace("_", "")


class FieldNames:
    """The names the router reads in one kind of object (a body's top level, a
    message, a content block, a tool), and what each folds to."""

    __slots__ = ("names", "folded")

    def __init__(self, names):
        self.names = frozenset(names)
        self.folded = {fold(name): name for name in self.names}

    def check(self, fields: dict, where: str = "") -> None:
        """Refuse a key of `fields` that folds onto one of the names without being it.
        No decoder above reads a key in lower-case ASCII as another name (Go folds case,
        protobuf reads camelCase), so the usual object costs one join and two C calls."""
        keys = "".join(fields)
        if keys.isascii() and keys.islower():
            return
        for key in fields:
            self.check_key(key, where)

    def check_key(self, key: str, where: str = "") -> None:
        if key in self.names or (key.isascii() and key.islower()):
            return
        name = self.folded.get(fold(key))
        if name is not None:
            raise Denied("ambiguous_key", f"'{where}{client_text(key)}' is too like '{where}{name}': a "
                         "provider whose JSON decoder ignores case or underscores would read it as "
                         f"that field, unseen by the router (names are case-sensitive; send '{name}')")
