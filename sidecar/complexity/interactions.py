"""The interaction part of the complexity model: boosted regression trees over
the clamped signals and the additive score, added to that score.

The additive model cannot say "short *and* plainly worded is easy, short *and*
full of domain words is not"; a few hundred small trees can, and they are what
let one model fit the reference set and the gathered kinds at once (see
docs/operations.md, "The complexity model").

Serving cost is the reason for the shape of this module: interpreting 120
depth-4 trees node by node costs ~35 µs a prompt in CPython, so the trees are
compiled once, at load, into one Python function of nested `if`s that first
unpacks its inputs into locals (a local load is cheaper than a subscript):
~9 µs for 160 depth-5 trees.
Only validated numbers reach the generated source: every feature index is an
int in range and every threshold and leaf a finite float, written with repr,
so the source holds nothing but comparisons and additions of literals.
"""

from __future__ import annotations

import math

# A tree is a leaf (a number added to the score) or [feature, threshold, left,
# right]: x[feature] <= threshold goes left. Features are the signals in
# sidecar.complexity.signals.NAMES order, clamped, then the additive score.
MAX_DEPTH = 12


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _emit(node, width: int, lines: list[str], indent: int, depth: int, where: str) -> None:
    pad = " " * indent
    if not isinstance(node, list):
        lines.append(f"{pad}s += {_number(node, where)!r}")
        return
    if len(node) != 4 or depth >= MAX_DEPTH:
        raise ValueError(f"{where}: a node is [feature, threshold, left, right], at most "
                         f"{MAX_DEPTH} deep")
    feature, threshold = node[0], _number(node[1], where)
    if isinstance(feature, bool) or not isinstance(feature, int) or not 0 <= feature < width:
        raise ValueError(f"{where}: feature index {feature!r} is not in 0..{width - 1}")
    lines.append(f"{pad}if x{feature} <= {threshold!r}:")
    _emit(node[2], width, lines, indent + 4, depth + 1, where)
    lines.append(f"{pad}else:")
    _emit(node[3], width, lines, indent + 4, depth + 1, where)


def compile_trees(trees: list, width: int):
    """The trees as one function x → Σ leaf values; x has `width` features."""
    if not isinstance(trees, list):
        raise ValueError("trees: expected a list")
    names = "".join(f"x{i}, " for i in range(width))
    lines = ["def interactions(x):", f"    {names}= x", "    s = 0.0"]
    for i, tree in enumerate(trees):
        _emit(tree, width, lines, 4, 0, f"trees[{i}]")
    lines.append("    return s")
    namespace: dict = {}
    exec(compile("\n".join(lines), "<complexity trees>", "exec"), {"__builtins__": {}}, namespace)
    return namespace["interactions"]


def flatten(trees: list) -> tuple[list[int], list[float], list[int], list[int], list[int]]:
    """The trees as flat node arrays for the compiled scorer (_scoring.c):
    (feature + 1, or 0 for a leaf; threshold or leaf value; left child; right
    child; root of each tree). Nodes are laid out parent first, so every child
    index is greater than its parent's. Call after compile_trees validated them."""
    feature, value, left, right, roots = [], [], [], [], []

    def add(node) -> int:
        at = len(value)
        feature.append(0)
        value.append(0.0)
        left.append(0)
        right.append(0)
        if not isinstance(node, list):
            value[at] = float(node)
            return at
        feature[at], value[at] = node[0] + 1, float(node[1])
        left[at] = add(node[2])
        right[at] = add(node[3])
        return at

    for tree in trees:
        roots.append(add(tree))
    return feature, value, left, right, roots


def leaf(tree, x) -> float:
    """The leaf of one tree that x reaches, node by node."""
    while isinstance(tree, list):
        tree = tree[2] if x[tree[0]] <= tree[1] else tree[3]
    return tree


def evaluate(trees: list, x) -> float:
    """The reference reading of the trees (training, tests and explain); the
    same additions in the same order as the compiled function."""
    total = 0.0
    for tree in trees:
        total += leaf(tree, x)
    return total
