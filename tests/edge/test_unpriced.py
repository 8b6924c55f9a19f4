"""What a provider bills beside the tokens passes only where the policy allows it:
tools it runs itself (web search, code execution, file search, MCP, image
generation), and processing tiers above the standard one (priority). Tools the
client runs, and standard or cheaper tiers, always pass. Generated over every API,
both modes, every way of asking (a `tools` entry in any provider's versioned
spelling, `tool_choice`, the fields that turn a tool on, `service_tier`, `speed`)
and four kinds of client."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from sidecar.access.clients import digest
from sidecar.denials import Denied
from sidecar.edge.app import Runtime, decide
from sidecar.policy.apis import CLIENT_RUN_TOOLS, STANDARD_SERVICE_TIERS, tool_family
from sidecar.policy.spec import PolicyError, compile_policy
from conftest import DEMO, HASH

BASE = DEMO.read_text().split("\n# Who may call")[0]
EXTRA = f"""
clients:
  tenants:
    searcher: {{keys: ["{digest('searcher')}"], provider_tools: [web_search, code_execution_20250522],
                service_tier: [priority, fast]}}
    plain:    {{keys: ["{digest('plain')}"], provider_tools: [], service_tier: []}}
    usual:    {{keys: ["{digest('usual')}"]}}
provider_tools: {{allow: [file_search]}}
service_tier: {{allow: [ultrafast]}}
"""
POLICY = compile_policy((BASE + EXTRA).encode(), "t.yaml", {})
# Who asks → the families they may have the provider run.
ALLOWED = {"searcher": {"web_search", "code_execution"}, "plain": set(),
           "usual": {"file_search"}, None: {"file_search"}}
TIERS_ALLOWED = {"searcher": {"priority", "fast"}, "plain": set(), "usual": {"ultrafast"},
                 None: {"ultrafast"}}
GENERATING = {"/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}]},
              "/v1/completions": {"prompt": "hi"},
              "/v1/responses": {"input": "hi"},
              "/v1/messages": {"max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}}

CLIENT_RUN = ["function", "custom", "computer_use_preview", "computer_20250124", "bash_20250124",
              "text_editor_20250728", "memory_20250818", "local_shell", "apply_patch"]
PROVIDER_RUN = ["web_search", "web_search_preview", "file_search", "code_interpreter", "image_generation",
                "mcp", "web_fetch", "code_execution", "tool_search_tool_regex", "shell", "x_search"]
VERSIONS = st.sampled_from(["", "_preview", "_20250305", "_2025_03_11", "_preview_2025_03_11"])


@st.composite
def tool_entries(draw):
    """(entry, its family if the provider runs it else None)."""
    if draw(st.booleans()):
        if draw(st.booleans()):   # Anthropic's client tool: a name and a schema, no type
            return {"name": "lookup", "input_schema": {"type": "object"}}, None
        return {"type": draw(st.sampled_from(CLIENT_RUN)), "name": "t"}, None
    base = draw(st.sampled_from(PROVIDER_RUN) | st.from_regex(r"[a-z][a-z_]{2,12}", fullmatch=True))
    kind = base + draw(VERSIONS)
    family = tool_family(kind)
    return {"type": kind}, (None if family in CLIENT_RUN_TOOLS else family)


# Fields that turn a provider-run tool on, with the family each asks for (None: nothing).
FIELD_CASES = [
    ({"web_search_options": {}}, "web_search"),
    ({"web_search_options": {"search_context_size": "high"}}, "web_search"),
    ({"web_search_options": None}, None),
    ({"search_parameters": {"mode": "auto"}}, "web_search"),
    ({"search_parameters": {}}, "web_search"),
    ({"search_parameters": {"mode": "off"}}, None),
    ({"plugins": [{"id": "web", "max_results": 3}]}, "web_search"),
    ({"plugins": [{"id": "file-parser"}]}, "file-parser"),
    ({"plugins": "web"}, "plugins"),
    ({"plugins": []}, None),
    ({"mcp_servers": [{"type": "url", "url": "https://mcp.example.com/sse", "name": "x"}]}, "mcp"),
    ({"data_sources": [{"type": "azure_search", "parameters": {}}]}, "azure_search"),
    ({"data_sources": [{"parameters": {}}]}, "data_sources"),
    ({"tools": [{"google_search": {}}]}, "google_search"),
    ({"tools": [{"code_execution": {}}]}, "code_execution"),
    ({"tools": [{"url_context": {}}, {"function": {"name": "f"}}]}, "url_context"),
    ({"tools": [{"function": {"name": "f"}}, {}]}, None),
    ({"tool_choice": {"type": "file_search"}}, "file_search"),
    ({"tool_choice": {"type": "web_search_preview"}}, "web_search"),
    ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, None),
    ({"tool_choice": {"type": "any"}}, None),
    ({"tool_choice": "required"}, None),
]


def ask(path: str, body: dict, who: str | None, lua_mode: bool, policy=POLICY, runtime=None):
    headers = CIMultiDict({"Content-Type": "application/json", "X-Constitutional-Hash": HASH})
    if who:
        headers["Authorization"] = f"Bearer {who}"
    return decide(policy, "POST", path, headers, orjson.dumps({"model": "auto", **body}),
                  peer="192.0.2.7", lua_mode=lua_mode, runtime=runtime or Runtime())


def verdict(path, body, who, lua_mode) -> str | None:
    """None if routed, else the refusal's reason (tool_not_allowed with its 403 checked)."""
    try:
        ask(path, body, who, lua_mode)
    except Denied as denied:
        if denied.reason == "tool_not_allowed":
            assert denied.status == 403 and "(provider_tools)" in denied.message
        if denied.reason == "service_tier_not_allowed":
            assert denied.status == 403 and "(service_tier)" in denied.message
        return denied.reason
    return None


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(GENERATING)), st.lists(tool_entries(), min_size=1, max_size=4),
       st.sampled_from(sorted(ALLOWED, key=str)), st.booleans())
def test_a_provider_run_tool_passes_only_where_the_policy_allows_it(path, entries, who, lua_mode):
    tools = [entry for entry, _ in entries]
    wanted = {family for _, family in entries if family is not None}
    got = verdict(path, {**GENERATING[path], "tools": tools}, who, lua_mode)
    refused = wanted - ALLOWED[who]
    assert (got == "tool_not_allowed") == bool(refused), (tools, who, got)
    if not refused:
        assert got is None


@pytest.mark.parametrize("fields,family", FIELD_CASES, ids=[str(c[0])[:48] for c in FIELD_CASES])
@pytest.mark.parametrize("who", ["plain", "searcher", "usual"])
@pytest.mark.parametrize("lua_mode", [True, False], ids=["lua", "stock"])
def test_fields_that_turn_a_provider_run_tool_on_are_read_on_every_generating_api(fields, family, who,
                                                                                    lua_mode):
    for path, body in GENERATING.items():
        got = verdict(path, {**body, **fields}, who, lua_mode)
        refused = family is not None and family not in ALLOWED[who]
        assert (got == "tool_not_allowed") == refused, (path, fields, who, got)


@pytest.mark.parametrize("path", ["/v1/messages/count_tokens", "/v1/responses/input_tokens",
                                  "/v1/embeddings"])
def test_counting_tokens_or_embedding_runs_no_tool_and_is_never_refused_for_one(path):
    body = {"messages": [{"role": "user", "content": "hi"}], "input": "hi",
            "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            "mcp_servers": [{"type": "url", "url": "https://x.example"}]}
    if path == "/v1/embeddings":
        body = {"input": "hi", "web_search_options": {}}
    elif path.startswith("/v1/responses"):
        body.pop("messages")
    else:
        body.pop("input")
    ask(path, body, "plain", lua_mode=True)


@pytest.mark.parametrize("tools,message", [
    (["web_search"], "'tools[0]' must be an object"),
    ([{"type": "function", "function": {"name": "f"}}, 7], "'tools[1]' must be an object"),
    ([{"type": ["web_search"]}], "'tools[0].type' must be a string"),
    ([{"type": None, "name": "x"}], None),   # null is absent: a client tool
])
def test_a_tool_entry_that_cannot_be_read_is_refused_not_forwarded(tools, message):
    for path in ("/v1/chat/completions", "/v1/responses", "/v1/messages"):
        if message is None:
            ask(path, {**GENERATING[path], "tools": tools}, "plain", lua_mode=False)
            continue
        with pytest.raises(Denied) as info:
            ask(path, {**GENERATING[path], "tools": tools}, "plain", lua_mode=False)
        assert info.value.status == 400 and message in info.value.message


def test_the_refusal_names_the_tool_where_it_was_asked_and_who_decides():
    with pytest.raises(Denied) as info:
        ask("/v1/responses", {"input": "hi", "tools": [{"type": "function", "name": "f"},
                                                        {"type": "image_generation"}]}, None, True)
    assert "'tools[1]'" in info.value.message and "'image_generation'" in info.value.message
    assert "this router's policy" in info.value.message
    with pytest.raises(Denied) as info:
        ask("/v1/chat/completions", {**GENERATING["/v1/chat/completions"], "web_search_options": {}},
            "plain", False)
    assert "'web_search_options'" in info.value.message and "tenant 'plain'" in info.value.message


def test_without_provider_tools_in_the_policy_none_is_allowed():
    demo = compile_policy(BASE.encode(), "d.yaml", {})
    assert demo.provider_tools == frozenset()
    with pytest.raises(Denied) as info:
        ask("/v1/messages", {**GENERATING["/v1/messages"],
                             "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
            None, True, policy=demo)
    assert info.value.reason == "tool_not_allowed"
    ask("/v1/messages", {**GENERATING["/v1/messages"], "tools": [
        {"name": "lookup", "input_schema": {"type": "object"}}]}, None, True, policy=demo)


def test_a_request_whose_tools_the_provider_runs_is_never_mirrored_to_the_shadow():
    """The shadow endpoint would run (and bill) the search or the code again."""
    shadowed = compile_policy((BASE + EXTRA + "shadow: {endpoint: premium-deepseek-v3, share: 1.0}\n").encode(),
                              "s.yaml", {})
    body = {"input": "hi", "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}
    _, headers, _ = ask("/v1/responses", body, None, True, policy=shadowed)
    assert "X-Route-Shadow" not in headers
    _, headers, _ = ask("/v1/responses", {"input": "hi", "tools": [{"type": "function", "name": "f"}]},
                        None, True, policy=shadowed)
    assert "X-Route-Shadow" in headers


@pytest.mark.parametrize("extra,message", [
    ("provider_tools: {allow: web_search}\n", "provider_tools.allow: expected a list of tool types"),
    ("provider_tools: {allow: [function]}\n", "is a tool the client runs"),
    ("provider_tools: {allow: [\"web search\"]}\n", "expected a list of tool types"),
    ("provider_tools: {deny: [web_search]}\n", "deny"),
    (f"clients:\n  tenants:\n    a: {{keys: [\"{digest('a')}\"], provider_tools: [bash_20250124]}}\n",
     "clients.tenants.a.provider_tools"),
    ("service_tier: {allow: priority}\n", "service_tier.allow: expected a list of processing tiers"),
    ("service_tier: {allow: [flex]}\n", "is billed at the standard price or below"),
    (f"clients:\n  tenants:\n    a: {{keys: [\"{digest('a')}\"], service_tier: [default]}}\n",
     "clients.tenants.a.service_tier"),
])
def test_a_policy_that_names_provider_tools_or_tiers_wrongly_is_refused(extra, message):
    with pytest.raises(PolicyError) as info:
        compile_policy((BASE + extra).encode(), "bad.yaml", {})
    assert message in str(info.value)


def test_a_versioned_name_in_the_policy_allows_its_whole_family():
    policy = compile_policy((BASE + "provider_tools: {allow: [web_search_preview_2025_03_11]}\n").encode(),
                            "v.yaml", {})
    assert policy.provider_tools == frozenset({"web_search"})
    ask("/v1/messages", {**GENERATING["/v1/messages"],
                         "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
        None, True, policy=policy)


SERVICE_TIERS = st.one_of(st.sampled_from(sorted(STANDARD_SERVICE_TIERS)),
                          st.sampled_from(["priority", "ultrafast", "performance", "Priority", "fast",
                                           "default ", ""]),
                          st.text(max_size=12))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(GENERATING)), SERVICE_TIERS, st.sampled_from(sorted(ALLOWED, key=str)),
       st.booleans(), st.sampled_from(["service_tier", "speed"]))
def test_a_processing_tier_above_the_standard_one_passes_only_where_allowed(path, tier, who, lua_mode,
                                                                           field):
    """OpenAI's priority costs ~2x the endpoint's price, Anthropic's fast mode more: the
    router would count them at the standard price. Standard and cheaper tiers (flex)
    always pass; any other name only where the policy or the tenant allows it."""
    got = verdict(path, {**GENERATING[path], field: tier}, who, lua_mode)
    standard = tier in STANDARD_SERVICE_TIERS if field == "service_tier" else tier == "standard"
    refused = not standard and tier not in TIERS_ALLOWED[who]
    assert (got == "service_tier_not_allowed") == refused, (path, field, tier, who, got)
    if not refused:
        assert got is None


@pytest.mark.parametrize("value", [1, True, ["priority"], {"tier": "priority"}])
@pytest.mark.parametrize("field", ["service_tier", "speed"])
def test_a_processing_tier_that_is_not_a_string_is_refused(field, value):
    with pytest.raises(Denied) as info:
        ask("/v1/chat/completions", {**GENERATING["/v1/chat/completions"], field: value}, None, True)
    assert info.value.status == 400 and f"'{field}' must be a string" in info.value.message
