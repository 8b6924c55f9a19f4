"""Three tiny labelled "sources" for training tests: chat (tier 1), code (3), math (5)."""


def synthetic_rows():
    rows = []
    for i in range(60):
        rows.append({"file": "chat", "id": i, "tier": 1, "prompt": f"hey what time is it in city {i}"})
        rows.append({"file": "code", "id": i, "tier": 3,
                     "prompt": f"Write a function f{i}(xs) that returns the sorted unique values.\n"
                               f"def f{i}(xs):\n    return sorted(set(xs))\n"})
        rows.append({"file": "math", "id": i, "tier": 5,
                     "prompt": f"Prove that for every integer $n > {i}$ the sum $\\sum_{{k=1}}^n k^3$ "
                               f"equals $(n(n+1)/2)^2$, then derive the closed form of "
                               f"$\\sum_{{k=1}}^n k^4$ step by step."})
    return rows
