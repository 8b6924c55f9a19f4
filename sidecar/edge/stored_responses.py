"""Operations on a Responses answer a provider stored: retrieve it
(GET /v1/responses/{id}, which is also how a client polls a `background` response),
delete it (DELETE), cancel a background one (POST .../cancel), list its input
items (GET .../input_items). Only the endpoint that produced the answer has it, so
each goes where sidecar.edge.conversations says, with no fallbacks; an id the
router never saw is refused with 404, never guessed at.

They generate nothing: no tokens are reserved or counted (their API is `stored`;
the usage a retrieved answer repeats is only ever a background request's, counted
once: sidecar.edge.conversations); request limits apply."""

from __future__ import annotations

import re
from typing import NamedTuple

from sidecar.denials import Denied
from sidecar.edge.conversations import Foreign
from sidecar.policy.compiled import Route

API = "stored"
RULE = "stored_response"
_OPERATION = re.compile(r"/v1/responses/([A-Za-z0-9][A-Za-z0-9_.:-]{0,127})(/cancel|/input_items)?")
_METHODS = {"": ("GET", "DELETE"), "/cancel": ("POST",), "/input_items": ("GET",)}
# What a query may hold (include[]=..., limit, after, order, stream, starting_after):
# it is passed to the endpoint, so nothing that could reshape the upstream URL.
_QUERY = re.compile(r"[A-Za-z0-9_.~%&=\[\]+,-]{0,512}")


class Operation(NamedTuple):
    response_id: str
    methods: tuple[str, ...]


def operation(path: str) -> Operation | None:
    """The stored-response operation `path` names, or None if it names none."""
    found = _OPERATION.fullmatch(path)
    return Operation(found[1], _METHODS[found[2] or ""]) if found else None


def upstream_path(uri: str) -> str:
    """The endpoint's path after its /v1, with the client's query (checked)."""
    path, _, query = uri.partition("?")
    if not _QUERY.fullmatch(query):
        raise Denied("invalid_request", "the query string has characters a stored-response "
                     "request does not use")
    return path[3:] + (f"?{query}" if query else "")


def streamed(uri: str) -> bool:
    """A retrieve with stream=true replays a background response's events."""
    return "stream=true" in uri.partition("?")[2].split("&")


def route(policy, conversations, response_id: str, tenant: str) -> Route:
    """Where an operation on `response_id` goes: the endpoint that made it, if it was
    made for `tenant`. Another tenant's answer gets the same 404 as an unknown one,
    so an id tells nobody else that it exists."""
    try:
        name = conversations.endpoint_for(response_id, tenant) if conversations is not None else None
    except Foreign:
        name = None
    endpoint = policy.endpoint_by_name.get(name or "")
    if endpoint is None or "responses" not in endpoint.serves:
        raise Denied("response_not_found", f"this router has not served a response with id "
                     f"'{response_id}'; it sends a stored response's operations to the endpoint that "
                     "produced it, which it learns from the answer (lua mode)")
    return Route(RULE, endpoint, ())
