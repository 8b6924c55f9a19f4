"""The client-facing APIs the router serves, by the name a policy uses for them.

An endpoint says which of these it serves (`serves:`); a request is only sent to
an endpoint that serves its API. The router forwards each as is (no translation
between protocols): an Anthropic Messages request goes to an endpoint that
speaks Anthropic Messages, or is refused.
"""

from __future__ import annotations

import re

# name -> path (under the endpoint's base URL the path after /v1 is appended)
APIS = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
    "responses": "/v1/responses",
    "messages": "/v1/messages",      # Anthropic Messages
}
API_BY_PATH = {path: name for name, path in APIS.items()}
# What an endpoint serves when the policy does not say: the OpenAI-compatible pair
# every provider in the seed's tiers offers.
DEFAULT_SERVES = ("chat", "completions")
# APIs whose streams carry OpenAI chunks (stream_options.include_usage applies).
OPENAI_STREAMS = frozenset({"chat", "completions"})
# How an endpoint takes its credential: OpenAI-style `Authorization: Bearer`, or
# Anthropic's `x-api-key`.
AUTH_STYLES = ("bearer", "x-api-key")

# Tools: a type the client runs (the model only asks for a call) costs tokens; any
# other is run and billed by the provider (sidecar.edge.unpriced). By family:
# a type without its version and preview suffix (`web_search_20250305`,
# `web_search_preview_2025_03_11` → web_search), so one name covers every spelling.
CLIENT_RUN_TOOLS = frozenset({"function", "custom", "computer", "computer_use", "local_shell",
                              "apply_patch", "bash", "text_editor", "memory"})
# Processing tiers billed at the standard price or below (flex: ~half); any other
# (priority, ...) costs more than the endpoint's price says (sidecar.edge.unpriced).
# OpenAI's scale tier draws on units bought ahead, not on the token price.
STANDARD_SERVICE_TIERS = frozenset({"auto", "default", "standard", "standard_only", "flex", "scale",
                                    "on_demand"})
# What a policy may list in an allow list of tools or tiers (and a refusal quotes as is).
ALLOWED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_TOOL_VERSION = re.compile(r"(?:_preview)?(?:_\d{8}|_\d{4}_\d{2}_\d{2})?$")


def tool_family(tool_type: str) -> str:
    return _TOOL_VERSION.sub("", tool_type, count=1) or tool_type
