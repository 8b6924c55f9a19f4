"""What each API's request body says, read strictly: the text a prompt carries,
how many messages, whether there is a system prompt, stream, max tokens, tools.

One reader per API (sidecar.policy.apis); a body that is not what such an
endpoint expects is refused here (400), never forwarded.
"""

from __future__ import annotations

from typing import NamedTuple

import orjson

from sidecar.denials import Denied
from sidecar.edge.spellings import FieldNames

MAX_MESSAGES = 2048
OPENAI_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
ANTHROPIC_ROLES = frozenset({"user", "assistant"})
# Turns whose content may be null or left out: an assistant turn that only calls
# tools, a legacy function result. Every other turn without content is refused,
# as the providers refuse it.
OPENAI_CONTENTLESS = frozenset({"assistant", "function"})


class Read(NamedTuple):
    text: str
    messages: int
    system_prompt: bool
    stream: bool
    max_tokens: int
    tools: bool
    # How many completions the provider generates (chat `n`, completions
    # `best_of`): each may run to max_tokens, so reservations multiply by it.
    choices: int
    # Bytes (UTF-8) a provider also reads as input besides `text` (tool definitions,
    # schemas, the calls a model made): counted toward tokens, so a prompt hidden
    # there cannot slip under a token limit or a long-prompt rule.
    beyond_text: int = 0


# Where that other input lives in the body: named, each counted as its JSON (a
# string as itself). A reusable prompt's `variables` fill a stored prompt.
BODY_INPUT = ("tools", "functions", "response_format")
RESPONSES_INPUT = ("tools", "text", "prompt")
COMPLETIONS_INPUT = ("suffix",)
# In a message, an input item or a content block, every field is input except
# the ones read as text and the payloads of images, audio and files (their
# bytes are no token count; a provider prices them by other rules). Providers
# keep adding item and block types (tool calls, tool outputs, reasoning
# summaries, search results...): whatever a new one carries still counts.
MEDIA = frozenset(("image_url", "input_audio", "file", "file_data", "data", "image", "source",
                   "encrypted_content"))
TURN_READ = frozenset(("role", "content", "output")) | MEDIA
BLOCK_READ = frozenset(("type", "text", "content", "refusal")) | MEDIA
# The top-level fields these readers read (sidecar.edge.features adds the others'),
# and the names read inside a turn, a content block and the stream options: a key
# that folds onto one of them without being it is refused (sidecar.edge.spellings).
READ = frozenset(("messages", "prompt", "input", "system", "instructions", "stream",
                  "stream_options", "max_tokens", "max_completion_tokens", "max_output_tokens",
                  "n", "best_of", "previous_response_id", "conversation", "container")
                 + BODY_INPUT + RESPONSES_INPUT + COMPLETIONS_INPUT)
TURN_NAMES = FieldNames(TURN_READ | {"type", "id"})   # an input item's type, a reference's id
BLOCK_NAMES = FieldNames(BLOCK_READ)
STREAM_OPTION_NAMES = FieldNames(("include_usage",))
SOURCE_NAMES = FieldNames(("type", "data", "content"))   # an Anthropic document's source
ID_NAMES = FieldNames(("id",))


def utf8_length(text: str) -> int:
    """Bytes of `text` as UTF-8, what token estimates divide by 4. Characters undercount
    every script but English's (measured with cl100k, tokens per 4 characters: Chinese
    4.3, Cyrillic 2.2-2.4, Latin-script European languages 1.2-1.8, emoji 8.5; per 4
    bytes: 1.8, 1.2-1.4, 1.1-1.7, 2.6; English 1.1 either way). isascii() is O(1): the
    usual prompt costs nothing more."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def beyond_text(fields: dict, names: tuple[str, ...]) -> int:
    total = 0
    for name in names:
        value = fields.get(name)
        if isinstance(value, str):
            total += utf8_length(value)
        elif value is not None:
            total += len(orjson.dumps(value))
    return total


def other_input(fields: dict, read: frozenset, names: FieldNames, where: str, at: int) -> int:
    """UTF-8 bytes of every field not in `read`, each counted as its JSON (orjson writes
    UTF-8 unescaped, so a JSON value's bytes are its text's). A field that is a
    respelling of one of `names` is refused (`where[at]` says where)."""
    total = 0
    for name, value in fields.items():
        if name not in read:
            if not (name.isascii() and name.islower()):   # the path is built only then
                names.check_key(name, f"{where}[{at}].")
            if value is not None:
                total += utf8_length(value) if isinstance(value, str) else len(orjson.dumps(value))
    return total


def bad(message: str) -> Denied:
    return Denied("invalid_request", message)


def json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def optional(body: dict, field: str, kind, label: str):
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) and kind is not bool:
        raise bad(f"'{field}' must be {label}, got boolean")
    if not isinstance(value, kind):
        raise bad(f"'{field}' must be {label}, got {json_type(value)}")
    return value


def _max_tokens(body: dict, *fields: str) -> int:
    """The largest of the answer-size `fields` present, 0 when none is. Chat has two
    (max_tokens and max_completion_tokens, which replaced it); when both are sent,
    OpenAI-compatible servers (vLLM, SGLang) honour max_completion_tokens, so
    reading the first alone let a client reserve 5 tokens and be answered 500,000."""
    most = 0
    for field in fields:
        value = optional(body, field, int, "an integer")
        if value is not None:
            if value < 1:
                raise bad(f"'{field}' must be at least 1")
            most = max(most, value)
    return most


def _choices(body: dict, *fields: str) -> int:
    """The largest of `fields` (n, best_of), at least 1."""
    most = 1
    for field in fields:
        value = optional(body, field, int, "an integer")
        if value is not None:
            if value < 1:
                raise bad(f"'{field}' must be at least 1")
            most = max(most, value)
    return most


def _tools(body: dict) -> bool:
    return bool(optional(body, "tools", list, "an array")) or bool(
        optional(body, "functions", list, "an array"))


def _stream(body: dict) -> bool:
    # The router reads stream_options (a stream's usage is asked for in lua mode).
    options = optional(body, "stream_options", dict, "an object")
    if options:
        STREAM_OPTION_NAMES.check(options, "stream_options.")
    usage = (options or {}).get("include_usage")
    if usage is not None and not isinstance(usage, bool):
        raise bad(f"'stream_options.include_usage' must be a boolean, got {json_type(usage)}")
    return bool(optional(body, "stream", bool, "a boolean"))


def _required_list(body: dict, field: str) -> list:
    if field not in body:
        raise bad(f"'{field}' is required")
    value = body[field]
    if not isinstance(value, list):
        raise bad(f"'{field}' must be an array, got {json_type(value)}")
    if not value:
        raise bad(f"'{field}' must be a non-empty array")
    if len(value) > MAX_MESSAGES:
        raise bad(f"'{field}' has {len(value)} entries; at most {MAX_MESSAGES} are allowed")
    return value


def _parts_text(content, where: str, parts: list) -> int:
    """Text of a content value: a string, or an array of typed parts whose `text`
    (and, for tool results, nested `content`; for Anthropic's plain-text
    documents, their `source`) is kept. Returns the characters of the other
    input in its parts (a tool call's `input`, a document's title and context)."""
    beyond = 0
    if isinstance(content, str):
        parts.append(content)
    elif isinstance(content, list):
        for j, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise bad(f"'{where}[{j}]' must be an object with a 'type'")
            text = part.get("text")
            if text is not None:
                if not isinstance(text, str):
                    raise bad(f"'{where}[{j}].text' must be a string, got {json_type(text)}")
                parts.append(text)
            if len(part) > 2 or text is None:  # more than a type and its text
                beyond += other_input(part, BLOCK_READ, BLOCK_NAMES, where, j)
            nested = part.get("content")
            if isinstance(nested, (str, list)):
                beyond += _parts_text(nested, f"{where}[{j}].content", parts)
            elif nested is not None:           # e.g. a tool's error object
                beyond += beyond_text(part, ("content",))
            if part["type"] == "document":
                _document_text(part, f"{where}[{j}]", parts)
            elif isinstance(part.get("refusal"), str):  # an earlier assistant turn's refusal
                parts.append(part["refusal"])
    elif content is not None:
        raise bad(f"'{where}' must be a string, an array or null, got {json_type(content)}")
    return beyond


def _document_text(block: dict, where: str, parts: list) -> None:
    """An Anthropic document block: a plain-text source (`data`) or one made of
    content blocks is prompt text like any other (a long document pasted this
    way must weigh as much as one pasted inline); PDFs, images and files by id
    carry no text the router can read. (Its title and context are other input,
    counted with the block's other fields.)"""
    source = block.get("source")
    if isinstance(source, dict):
        SOURCE_NAMES.check(source, f"{where}.source.")
        if source.get("type") == "text" and isinstance(source.get("data"), str):
            parts.append(source["data"])
        elif source.get("type") == "content" and isinstance(source.get("content"), (str, list)):
            _parts_text(source["content"], f"{where}.source.content", parts)


def _messages(messages: list, roles: frozenset, contentless: frozenset = frozenset(),
              where: str = "messages") -> tuple[str, bool, int]:
    parts, system, beyond = [], False, 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise bad(f"'{where}[{i}]' must be an object, got {json_type(message)}")
        role = message.get("role")
        if not isinstance(role, str) or role not in roles:
            raise bad(f"'{where}[{i}].role' must be one of {', '.join(sorted(roles))}")
        if role in ("system", "developer"):
            system = True
        if message.get("content") is None and role not in contentless:
            raise bad(f"'{where}[{i}].content' is required for a {role} turn")
        beyond += _parts_text(message.get("content"), f"{where}[{i}].content", parts)
        if len(message) > 2 or "content" not in message:  # more than a role and its content
            beyond += other_input(message, TURN_READ, TURN_NAMES, where, i)
    return "\n".join(parts), system, beyond


def chat(body: dict) -> Read:
    messages = _required_list(body, "messages")
    text, system, beyond = _messages(messages, OPENAI_ROLES, OPENAI_CONTENTLESS)
    return Read(text, len(messages), system, _stream(body),
                _max_tokens(body, "max_tokens", "max_completion_tokens"), _tools(body),
                _choices(body, "n"), beyond + beyond_text(body, BODY_INPUT))


def completions(body: dict) -> Read:
    """`prompt`: one prompt or a batch, as text or token ids. Each prompt of a
    batch gets its own `n` (or `best_of`) answers, so reservations multiply by
    the batch's size too."""
    if "prompt" not in body:
        raise bad("'prompt' is required")
    text, batch, token_ids = _texts_or_token_ids(body["prompt"], "prompt")
    return Read(text, 1, False, _stream(body), _max_tokens(body, "max_tokens"), False,
                _choices(body, "n", "best_of") * batch,
                4 * token_ids + beyond_text(body, COMPLETIONS_INPUT))


def embeddings(body: dict) -> Read:
    if "input" not in body:
        raise bad("'input' is required")
    text, batch, token_ids = _texts_or_token_ids(body["input"], "input")
    return Read(text, batch, False, False, 0, False, 1, 4 * token_ids)


def _is_token_ids(value) -> bool:
    # Ids index a vocabulary: a negative one is no token (OpenAI refuses it; a
    # server that does not may read it from the end of its table).
    return isinstance(value, list) and bool(value) and all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)


def _texts_or_token_ids(value, field: str) -> tuple[str, int, int]:
    """A string, an array of strings, an array of token ids or an array of such
    arrays (OpenAI's completions and embeddings): (text, how many entries, how
    many token ids). A token id counts as one token, 4 characters' worth."""
    if isinstance(value, str):
        return value, 1, 0
    if not isinstance(value, list) or not value:
        raise bad(f"'{field}' must be a string or a non-empty array")
    if _is_token_ids(value):   # one prompt: its length is bounded by the body's size only
        return "", 1, len(value)
    if len(value) > MAX_MESSAGES:
        raise bad(f"'{field}' has {len(value)} entries; at most {MAX_MESSAGES} are allowed")
    if all(isinstance(v, str) for v in value):
        return "\n".join(value), len(value), 0
    if all(map(_is_token_ids, value)):
        return "", len(value), sum(map(len, value))
    raise bad(f"'{field}' must be a string, an array of strings, an array of token ids, or an array "
              "of arrays of token ids (a token id is an integer, 0 or more)")


def conversation_id(body: dict) -> str | None:
    """The id of the provider-held conversation a Responses request reads and extends
    (`conversation`: an id, or an object with one), or None."""
    value = body.get("conversation")
    if value is None:
        return None
    if isinstance(value, dict):
        ID_NAMES.check(value, "conversation.")
        value = value.get("id")
    if not isinstance(value, str) or not value:
        raise bad("'conversation' must be a conversation id or an object with an 'id' string")
    return value


def item_reference(body: dict) -> str | None:
    """The id of the first stored item a Responses input names (`item_reference`: the
    provider reads the item, made for whoever asked it, from its store), or None."""
    items = body.get("input")
    if not isinstance(items, list):
        return None
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("type") == "item_reference":
            value = item.get("id")
            if not isinstance(value, str) or not value:
                raise bad(f"'input[{i}].id' must be the id of a stored item")
            return value
    return None


def container_id(body: dict) -> str | None:
    """The id of a provider-held code container a request reuses, or None: Anthropic's
    `container` (an id, or an object with one), a Responses tool's `container` id (a
    code interpreter's; `{"type": "auto"}` makes a new one)."""
    value = body.get("container")
    if isinstance(value, dict):
        ID_NAMES.check(value, "container.")
        value = value.get("id")
    if isinstance(value, str) and value:
        return value
    tools = body.get("tools")
    if isinstance(tools, list):
        for tool in tools:
            held = tool.get("container") if isinstance(tool, dict) else None
            if isinstance(held, str) and held:
                return held
    return None


def responses(body: dict) -> Read:
    """OpenAI Responses: `input` is a string or an array of items (messages with a
    role and content parts, tool outputs, ...); `instructions` is the system prompt."""
    if "input" not in body:
        raise bad("'input' is required")
    optional(body, "previous_response_id", str, "a string")   # routed on: sidecar.edge.conversations
    conversation_id(body)
    value = body["input"]
    instructions = optional(body, "instructions", str, "a string")
    parts = [instructions] if instructions else []
    count, beyond = 1, beyond_text(body, RESPONSES_INPUT)
    if isinstance(value, str):
        parts.append(value)
    elif isinstance(value, list) and value:
        if len(value) > MAX_MESSAGES:
            raise bad(f"'input' has {len(value)} entries; at most {MAX_MESSAGES} are allowed")
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise bad(f"'input[{i}]' must be an object, got {json_type(item)}")
            role = item.get("role")
            if role is not None and (not isinstance(role, str) or role not in OPENAI_ROLES):
                raise bad(f"'input[{i}].role' must be one of {', '.join(sorted(OPENAI_ROLES))}")
            if role in ("system", "developer"):
                instructions = instructions or "system"
            if role is not None and item.get("content") is None:   # a message says something
                raise bad(f"'input[{i}].content' is required for a {role} message")
            beyond += _parts_text(item.get("content"), f"input[{i}].content", parts)
            if len(item) > 2 or "content" not in item:
                beyond += other_input(item, TURN_READ, TURN_NAMES, "input", i)
            # A tool's output: a string, or content parts (text, images, files).
            output = item.get("output")
            if isinstance(output, (str, list)):
                beyond += _parts_text(output, f"input[{i}].output", parts)
        count = len(value)
    else:
        raise bad("'input' must be a string or a non-empty array of items")
    return Read("\n".join(parts), count, bool(instructions), _stream(body),
                _max_tokens(body, "max_output_tokens"), _tools(body), 1, beyond)


def messages(body: dict) -> Read:
    """Anthropic Messages: user/assistant turns with string or block content, a
    top-level `system` (string or text blocks), and a required `max_tokens`."""
    if "max_tokens" not in body:
        raise bad("'max_tokens' is required")
    return messages_counted(body)


def messages_counted(body: dict) -> Read:
    """What Anthropic's count_tokens reads: a Messages body, `max_tokens` optional."""
    turns = _required_list(body, "messages")
    text, _, beyond = _messages(turns, ANTHROPIC_ROLES)
    system = body.get("system")
    parts = []
    beyond += _parts_text(system, "system", parts) + beyond_text(body, ("tools",))
    max_tokens = _max_tokens(body, "max_tokens")
    if parts:
        text = "\n".join(parts) + "\n" + text
    return Read(text, len(turns), bool(parts), _stream(body), max_tokens, _tools(body), 1, beyond)


READERS = {"chat": chat, "completions": completions, "embeddings": embeddings,
           "responses": responses, "messages": messages,
           # Token counting (sidecar.edge.token_counts): each API's body, read for routing.
           "messages_counted": messages_counted, "responses_counted": responses}
