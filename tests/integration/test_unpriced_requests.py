"""Through nginx in both modes: a request asking a provider for what it bills beside
the tokens (a tool it runs itself: web search, code execution, file search, MCP; a
processing tier above the standard one: priority) gets 403 as JSON with the security
headers and reaches no endpoint, unless the policy or the client's tenant allows it;
tools the client runs and standard tiers always pass."""

from __future__ import annotations

import json

import pytest

from conftest import Client, Mocks, free_port, shifted_policy
from sidecar.access.clients import digest
from sidecar.tools.stack import Stack

POLICY = f"""
clients:
  tenants:
    searcher: {{keys: ["{digest('searcher-key')}"], provider_tools: [web_search], service_tier: [priority]}}
provider_tools: {{allow: [file_search]}}
"""
SEARCHER = {"Authorization": "Bearer searcher-key"}
CHAT, RESPONSES, MESSAGES = "/v1/chat/completions", "/v1/responses", "/v1/messages"
TURN = [{"role": "user", "content": "what happened in the news today?"}]
BODIES = {CHAT: {"model": "auto", "messages": TURN}, RESPONSES: {"model": "auto", "input": TURN},
          MESSAGES: {"model": "auto", "max_tokens": 32, "messages": TURN}}
MESSAGES_HEADERS = {"anthropic-version": "2023-06-01"}

# (API, what the body adds, who asks, routed?)
CASES = [
    (CHAT, {"service_tier": "priority"}, None, False),
    (CHAT, {"service_tier": "priority"}, SEARCHER, True),
    (CHAT, {"service_tier": "flex"}, None, True),
    (RESPONSES, {"service_tier": "ultrafast"}, SEARCHER, False),
    (MESSAGES, {"speed": "fast"}, None, False),
    (MESSAGES, {"service_tier": "standard_only"}, None, True),
    (CHAT, {"web_search_options": {}}, None, False),
    (CHAT, {"web_search_options": {}}, SEARCHER, True),
    (CHAT, {"plugins": [{"id": "web"}]}, None, False),
    (CHAT, {"tools": [{"google_search": {}}]}, None, False),
    (CHAT, {"tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]}, None, True),
    (RESPONSES, {"tools": [{"type": "web_search_preview_2025_03_11"}]}, None, False),
    (RESPONSES, {"tools": [{"type": "web_search"}]}, SEARCHER, True),
    (RESPONSES, {"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, None, True),
    (RESPONSES, {"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, SEARCHER, False),
    (RESPONSES, {"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}, SEARCHER, False),
    (RESPONSES, {"tools": [{"type": "mcp", "server_label": "x", "server_url": "https://mcp.example.com"}]},
     None, False),
    (RESPONSES, {"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "image_generation"}},
     None, False),
    (MESSAGES, {"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]}, None, False),
    (MESSAGES, {"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, SEARCHER, True),
    (MESSAGES, {"tools": [{"type": "code_execution_20250825", "name": "code_execution"}]}, SEARCHER, False),
    (MESSAGES, {"mcp_servers": [{"type": "url", "url": "https://mcp.example.com/sse", "name": "x"}]},
     None, False),
    (MESSAGES, {"tools": [{"type": "bash_20250124", "name": "bash"},
                          {"name": "lookup", "input_schema": {"type": "object"}}]}, None, True),
]


@pytest.fixture(scope="module", params=["lua", "stock"])
def tools_stack(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"tools-{request.param}")
    policy, ports = shifted_policy(tmp, extra=POLICY)
    port = free_port()
    st = Stack(policy, tmp / "run", mode=request.param, listen=f"127.0.0.1:{port}", latency_scale=0)
    st.start()
    st.client, st.mocks = Client(port), Mocks(ports)
    yield st
    st.stop()


@pytest.mark.parametrize("path,extra,who,routed", CASES,
                         ids=[f"{p[4:]}-{next(iter(e))}-{'searcher' if w else 'anyone'}-{r}"
                              for p, e, w, r in CASES])
def test_a_provider_run_tool_reaches_an_endpoint_only_where_allowed(tools_stack, path, extra, who, routed):
    before = tools_stack.mocks.total_received()
    headers = {**(who or {}), **(MESSAGES_HEADERS if path == MESSAGES else {})}
    status, answer_headers, out = tools_stack.client.chat({**BODIES[path], **extra}, headers=headers,
                                                          path=path)
    if routed:
        assert status == 200, out
        assert tools_stack.mocks.total_received() == before + 1
        return
    error = json.loads(out)["error"]
    code = "tool_not_allowed" if "tools" in extra or "service_tier" not in extra and "speed" not in extra \
        else "service_tier_not_allowed"
    assert (status, error["code"], error["type"]) == (403, code, "permission_error"), out
    assert answer_headers["Content-Type"].startswith("application/json")
    assert "X-Content-Type-Options" in answer_headers and "X-Constitutional-Hash" in answer_headers
    assert tools_stack.mocks.total_received() == before
