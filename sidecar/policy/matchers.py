"""Compiled rule conditions.

Each matcher answers `matches(features)` and `explain(features)` (for the
`explain` command), and renders itself as a Python expression with `expr()`.
`compile_rules()` joins those expressions into one generated function, so
checking 200 rules costs a few attribute loads and comparisons per rule rather
than 200 method calls. Policy values never enter the generated source: they are
passed in a constants tuple and referenced by index.
"""

from __future__ import annotations

import re


def _const(consts: list, value) -> str:
    consts.append(value)
    return f"C[{len(consts) - 1}]"


class FieldRange:
    """lo <= features.<attr> <= hi (either bound may be None); `strict_*` for < / >."""

    __slots__ = ("attr", "lo", "hi", "lo_strict", "hi_strict", "text")

    def __init__(self, attr, lo, hi, lo_strict=False, hi_strict=False, text=""):
        self.attr, self.lo, self.hi = attr, lo, hi
        self.lo_strict, self.hi_strict, self.text = lo_strict, hi_strict, text

    def matches(self, f) -> bool:
        value = getattr(f, self.attr)
        lo, hi = self.lo, self.hi
        if lo is not None and (value <= lo if self.lo_strict else value < lo):
            return False
        if hi is not None and (value >= hi if self.hi_strict else value > hi):
            return False
        return True

    def explain(self, f):
        return [(f"{self.attr} {self.text} (is {getattr(f, self.attr)!r})", self.matches(f))]

    def expr(self, consts: list) -> str:
        parts = []
        if self.lo is not None:
            parts.append(f"f.{self.attr} {'>' if self.lo_strict else '>='} {_const(consts, self.lo)}")
        if self.hi is not None:
            parts.append(f"f.{self.attr} {'<' if self.hi_strict else '<='} {_const(consts, self.hi)}")
        return "(" + " and ".join(parts or ["True"]) + ")"


class FieldIs:
    __slots__ = ("attr", "value")

    def __init__(self, attr, value):
        self.attr, self.value = attr, value

    def matches(self, f) -> bool:
        return getattr(f, self.attr) == self.value

    def explain(self, f):
        return [(f"{self.attr} is {self.value!r} (is {getattr(f, self.attr)!r})", self.matches(f))]

    def expr(self, consts: list) -> str:
        return f"(f.{self.attr} == {_const(consts, self.value)})"


class Text:
    """A string test: exact (any of a set), prefix, or regex (search)."""

    __slots__ = ("exact", "prefixes", "regex", "text")

    def __init__(self, exact=None, prefixes=None, regex=None, text=""):
        self.exact = frozenset(exact) if exact is not None else None
        self.prefixes = tuple(prefixes) if prefixes is not None else None
        self.regex = re.compile(regex) if regex is not None else None
        self.text = text

    def test(self, value: str) -> bool:
        if self.exact is not None:
            return value in self.exact
        if self.prefixes is not None:
            return value.startswith(self.prefixes)
        return self.regex.search(value) is not None

    def expr(self, consts: list, subject: str) -> str:
        if self.exact is not None:
            return f"({subject} in {_const(consts, self.exact)})"
        if self.prefixes is not None:
            return f"{subject}.startswith({_const(consts, self.prefixes)})"
        return f"({_const(consts, self.regex.search)}({subject}) is not None)"


class FieldText:
    __slots__ = ("attr", "text")

    def __init__(self, attr, text: Text):
        self.attr, self.text = attr, text

    def matches(self, f) -> bool:
        return self.text.test(getattr(f, self.attr))

    def explain(self, f):
        return [(f"{self.attr} {self.text.text} (is {getattr(f, self.attr)!r})", self.matches(f))]

    def expr(self, consts: list) -> str:
        return self.text.expr(consts, f"f.{self.attr}")


class Header:
    __slots__ = ("name", "text")

    def __init__(self, name: str, text: Text | None):
        self.name, self.text = name, text  # text None: header present

    def matches(self, f) -> bool:
        value = f.headers.get(self.name)
        if value is None:
            return False
        return self.text is None or self.text.test(value)

    def explain(self, f):
        shown = self.text.text if self.text is not None else "present"
        return [(f"header {self.name} {shown} (is {f.headers.get(self.name)!r})", self.matches(f))]

    def expr(self, consts: list) -> str:
        return f"{_const(consts, self.matches)}(f)"


class All:
    __slots__ = ("items",)

    def __init__(self, items):
        self.items = tuple(items)

    def matches(self, f) -> bool:
        for item in self.items:
            if not item.matches(f):
                return False
        return True

    def explain(self, f):
        lines = []
        for item in self.items:
            lines.extend(item.explain(f))
        return lines

    def expr(self, consts: list) -> str:
        return "(" + " and ".join(item.expr(consts) for item in self.items) + ")"


class Any:
    __slots__ = ("items",)

    def __init__(self, items):
        self.items = tuple(items)

    def matches(self, f) -> bool:
        for item in self.items:
            if item.matches(f):
                return True
        return False

    def explain(self, f):
        inner = [f"{text} [{'yes' if ok else 'no'}]" for item in self.items
                 for text, ok in item.explain(f)]
        return [("any of: " + "; ".join(inner), self.matches(f))]

    def expr(self, consts: list) -> str:
        return "(" + " or ".join(item.expr(consts) for item in self.items) + ")"


class Not:
    __slots__ = ("item",)

    def __init__(self, item):
        self.item = item

    def matches(self, f) -> bool:
        return not self.item.matches(f)

    def explain(self, f):
        inner = "; ".join(text for text, _ in self.item.explain(f))
        return [(f"not ({inner})", self.matches(f))]

    def expr(self, consts: list) -> str:
        return f"(not {self.item.expr(consts)})"


class Always:
    __slots__ = ()

    def matches(self, f) -> bool:
        return True

    def explain(self, f):
        return [("always", True)]

    def expr(self, consts: list) -> str:
        return "True"


def compile_rules(conditions) -> "callable":
    """One function `first_match(features) -> index of the first matching
    condition, or -1`, generated from the matchers' expressions."""
    consts: list = []
    lines = ["def first_match(f):"]
    for i, condition in enumerate(conditions):
        lines.append(f"    if {condition.expr(consts)}: return {i}")
    lines.append("    return -1")
    namespace = {"C": tuple(consts)}
    exec(compile("\n".join(lines), "<policy rules>", "exec"), namespace)
    return namespace["first_match"]
