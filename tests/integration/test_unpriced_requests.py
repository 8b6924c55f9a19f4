"""Through nginx in both modes: a request asking a provider for what it bills beside
the tokens (a tool it runs itself: web search, code execution, file search, MCP; a
processing tier above the standard one: priority) gets 403 as JSON with the security
headers and reaches no endpoint, unless the policy or the client's tenant allows it;
tools the client runs and standard tiers always pass."""

from __future__ import annotations

import json

import pytest

from conftest import metric, watched_stack
from sidecar.access.clients import digest

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
    st = watched_stack(tmp_path_factory.mktemp(f"tools-{request.param}"), request.param, POLICY, 0)
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


def test_what_is_allowed_is_counted_by_name_and_what_is_refused_is_not(tools_stack):
    """Nothing prices an allowed tool call or premium tier, so operators see how many
    routed requests asked for each (router_unpriced_requests_total)."""
    def count(setting, name):
        return metric(tools_stack, "router_unpriced_requests_total", setting=setting, value=name)

    before = {key: count(*key) for key in (("provider_tools", "web_search"), ("provider_tools", "file_search"),
                                           ("service_tier", "priority"))}
    sent = [(CHAT, {"web_search_options": {}, "service_tier": "priority"}, SEARCHER, 200),
            (MESSAGES, {"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, SEARCHER, 200),
            (RESPONSES, {"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, None, 200),
            (RESPONSES, {"tools": [{"type": "web_search_preview"}]}, None, 403)]
    for path, extra, who, expected in sent:
        headers = {**(who or {}), **(MESSAGES_HEADERS if path == MESSAGES else {})}
        status, _, out = tools_stack.client.chat({**BODIES[path], **extra}, headers=headers, path=path)
        assert status == expected, out
    assert count("provider_tools", "web_search") - before[("provider_tools", "web_search")] == 2
    assert count("provider_tools", "file_search") - before[("provider_tools", "file_search")] == 1
    assert count("service_tier", "priority") - before[("service_tier", "priority")] == 1
