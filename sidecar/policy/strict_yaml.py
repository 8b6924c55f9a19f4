"""Strict YAML reading for the policy: errors that name the file and the path
inside it and say what was expected, and no silently merged duplicate keys.

    demo.yaml: rules[3].when.tokens: expected a range like "100..4000", got "lots"
"""

from __future__ import annotations

import yaml


class PolicyError(ValueError):
    pass


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of keeping the last."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class Ctx:
    def __init__(self, file: str, env):
        self.file = file
        self.env = env
        self.missing_env: list[str] = []

    def error(self, path: str, message: str) -> PolicyError:
        return PolicyError(f"{self.file}: {path}: {message}" if path else f"{self.file}: {message}")


def show(value) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def mapping(ctx, value, path, required=(), optional=()):
    if not isinstance(value, dict):
        raise ctx.error(path, f"expected a mapping, got {show(value)}")
    allowed = set(required) | set(optional)
    for key in value:
        if key not in allowed:
            raise ctx.error(path, f"unknown key '{key}'; expected one of: {', '.join(sorted(allowed))}")
    for key in required:
        if key not in value:
            raise ctx.error(path, f"missing required key '{key}'")
    return value


def typed(ctx, value, kind, what, path):
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise ctx.error(path, f"expected {what}, got {show(value)}")
    return value


def join(path, key):
    return f"{path}.{key}" if path else str(key)
