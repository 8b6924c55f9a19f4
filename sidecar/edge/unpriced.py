"""What a provider bills beside the tokens, which the router can neither count nor
price: its usage, cost, budgets and token limits see only tokens. Two kinds:

- *Tools the provider runs itself*: web search, web fetch, file search, code
  execution, image generation, remote MCP servers. Each call is billed on the
  operator's account (web search ~$10-25 per thousand, a code container per
  session). Tools the client runs (functions, custom tools, Anthropic's bash,
  text editor, computer and memory tools, OpenAI's computer use, local shell and
  apply_patch) cost only tokens and always pass. Any other type counts as
  provider-run, so a type a provider adds later is refused until the policy
  names it, not forwarded unpriced. A type is read as its family
  (sidecar.policy.apis.tool_family).
- *Processing tiers above the standard one*: OpenAI's `service_tier: priority`
  (~2x the tokens' price) and any other tier not known to be standard or cheaper,
  Anthropic's `speed: fast`.

Either is refused (403) unless the policy allows it (`provider_tools.allow`,
`service_tier.allow`), or the client's tenant's own list does.
"""

from __future__ import annotations

from sidecar.denials import Denied, client_text
from sidecar.edge import bodies
from sidecar.edge.spellings import FieldNames
from sidecar.policy.apis import CLIENT_RUN_TOOLS, STANDARD_SERVICE_TIERS, ALLOWED_NAME, tool_family

# tool_choice values that pick no tool of their own.
CHOICE_MODES = frozenset({"auto", "none", "required", "any", "tool", "allowed_tools"})
# Body fields that turn on a provider-run tool without a `tools` entry: OpenAI's
# and OpenRouter's web search options, xAI's live search, Anthropic's MCP
# connector, OpenRouter's plugins, Azure OpenAI's "on your data" sources.
TOOL_FIELDS = frozenset({"web_search_options", "search_parameters", "mcp_servers", "plugins",
                         "data_sources"})
READ = TOOL_FIELDS | {"tools", "tool_choice", "service_tier", "speed"}
# What the router reads in a tool, a tool_choice object, xAI's search parameters,
# an OpenRouter plugin and an Azure data source (sidecar.edge.spellings).
TOOL_NAMES = FieldNames(("type", "name", "container"))
TYPE_NAMES = FieldNames(("type",))
FIELD_NAMES = {"search_parameters": FieldNames(("mode",)), "plugins": FieldNames(("id",)),
               "data_sources": TYPE_NAMES}
# An OpenRouter plugin id → the family it runs.
PLUGIN_FAMILIES = {"web": "web_search"}
TOOLS, SERVICE_TIER = "provider_tools", "service_tier"   # the policy's settings
REFUSALS = {TOOLS: ("tool_not_allowed", "to run {name} itself, which it bills beside the tokens"),
            SERVICE_TIER: ("service_tier_not_allowed",
                           "for the {name} processing tier, priced above the standard one")}


def requested(body: dict) -> tuple[tuple[str, str, str], ...]:
    """What a body asks a provider for beyond tokens, as (the policy setting that
    allows it, its name, where the body asks), in order; () when nothing (the usual
    case: one C call)."""
    if READ.isdisjoint(body):
        return ()
    found: dict[tuple[str, str], str] = {}
    tools = body.get("tools")
    if isinstance(tools, list):     # any other type is refused by the API's reader
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict):
                raise bodies.bad(f"'tools[{i}]' must be an object, got {bodies.json_type(tool)}")
            TOOL_NAMES.check(tool, f"tools[{i}].")
            kind = tool.get("type")
            if kind is None:
                if isinstance(tool.get("name"), str) or not tool:   # Anthropic's client tools:
                    continue                                        # a name and a schema
                # Gemini's own spelling ({"google_search": {}}, {"code_execution": {}}):
                # the tool is the key.
                kind = next(iter(tool))
            if not isinstance(kind, str):
                raise bodies.bad(f"'tools[{i}].type' must be a string, got {bodies.json_type(kind)}")
            _add_tool(found, tool_family(kind), f"tools[{i}]")
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        TYPE_NAMES.check(choice, "tool_choice.")
        if isinstance(choice.get("type"), str) and choice["type"] not in CHOICE_MODES:
            _add_tool(found, tool_family(choice["type"]), "tool_choice")
    for field in TOOL_FIELDS.intersection(body):
        for name in _field_tools(field, body[field]):
            _add_tool(found, name, field)
    tier = bodies.optional(body, "service_tier", str, "a string")
    if tier is not None and tier not in STANDARD_SERVICE_TIERS:
        found[(SERVICE_TIER, tier)] = "service_tier"
    speed = bodies.optional(body, "speed", str, "a string")
    if speed is not None and speed != "standard":   # Anthropic: `fast` is a premium mode
        found[(SERVICE_TIER, speed)] = "speed"
    return tuple((setting, name, where) for (setting, name), where in found.items())


def _add_tool(found: dict, name: str, where: str) -> None:
    if name not in CLIENT_RUN_TOOLS:
        found.setdefault((TOOLS, name), where)


def _field_tools(field: str, value) -> tuple[str, ...]:
    """What a tool-enabling field turns on; the field itself when its value cannot be read
    (it is not forwarded unread)."""
    if value is None or value == []:   # `web_search_options: {}` searches, with defaults
        return ()
    names = FIELD_NAMES.get(field)
    if names is not None and isinstance(value, dict):
        names.check(value, f"{field}.")
    elif names is not None and isinstance(value, list):
        for i, entry in enumerate(value):
            if isinstance(entry, dict):
                names.check(entry, f"{field}[{i}].")
    if field == "web_search_options":
        return ("web_search",)
    if field == "search_parameters":   # xAI: mode "off" searches nothing
        return () if isinstance(value, dict) and value.get("mode") == "off" else ("web_search",)
    if field == "mcp_servers":
        return ("mcp",)
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        key = "id" if field == "plugins" else "type"
        names = [v.get(key) for v in value]
        if all(isinstance(n, str) and n for n in names):
            return tuple(PLUGIN_FAMILIES.get(n, n) if field == "plugins" else n for n in names)
    return (field,)


def check(asked: tuple[tuple[str, str, str], ...], policy, tenant) -> None:
    """Refuse the first thing asked for that neither the tenant's own list for its
    setting (when it has one) nor the policy's allows."""
    for setting, name, where in asked:
        own = getattr(tenant, setting, None)
        if name in (own if own is not None else getattr(policy, setting)):
            continue
        reason, what = REFUSALS[setting]
        who = f"tenant '{tenant.name}'" if own is not None else "this router's policy"
        raise Denied(reason, f"'{where}' asks the provider {what.format(name=_shown(name))}; {who} "
                     f"does not allow it ({setting})")


def _shown(name: str) -> str:
    if ALLOWED_NAME.match(name):
        return repr(name)
    return repr(client_text(name))
