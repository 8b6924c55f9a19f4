"""The client-facing APIs the router serves, by the name a policy uses for them.

An endpoint says which of these it serves (`serves:`); a request is only sent to
an endpoint that serves its API. The router forwards each as is (no translation
between protocols): an Anthropic Messages request goes to an endpoint that
speaks Anthropic Messages, or is refused.
"""

from __future__ import annotations

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
