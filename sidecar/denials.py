"""Typed denials and the one table that maps them to what a client sees.

Every refusal in the sidecar is a `Denied(reason, message)`. The handler has a
single `except Denied`; the status, OpenAI error type and metric label all come
from `DENIALS`, so a new refusal is one row here, not a new branch elsewhere.
"""

from __future__ import annotations

from typing import NamedTuple


class Denial(NamedTuple):
    status: int
    type: str  # OpenAI error "type"


DENIALS: dict[str, Denial] = {
    "invalid_json": Denial(400, "invalid_request_error"),
    "duplicate_key": Denial(400, "invalid_request_error"),
    "ambiguous_key": Denial(400, "invalid_request_error"),
    "nesting_too_deep": Denial(400, "invalid_request_error"),
    "integer_out_of_range": Denial(400, "invalid_request_error"),
    "too_many_keys": Denial(400, "invalid_request_error"),
    "too_many_containers": Denial(400, "invalid_request_error"),
    "invalid_request": Denial(400, "invalid_request_error"),
    "invalid_hash": Denial(400, "invalid_request_error"),
    "unknown_url": Denial(404, "invalid_request_error"),
    "method_not_allowed": Denial(405, "invalid_request_error"),
    "request_timeout": Denial(408, "invalid_request_error"),
    "hash_mismatch": Denial(412, "invalid_request_error"),
    "unsupported_media_type": Denial(415, "invalid_request_error"),
    "unsupported_content_encoding": Denial(415, "invalid_request_error"),
    "hash_required": Denial(428, "invalid_request_error"),
    "missing_api_key": Denial(401, "authentication_error"),
    "invalid_api_key": Denial(401, "authentication_error"),
    "tier_not_allowed": Denial(403, "permission_error"),
    "tool_not_allowed": Denial(403, "permission_error"),
    "service_tier_not_allowed": Denial(403, "permission_error"),
    "rate_limit_exceeded": Denial(429, "rate_limit_error"),
    "budget_exceeded": Denial(429, "rate_limit_error"),
    "model_not_found": Denial(404, "invalid_request_error"),
    "api_not_served": Denial(404, "invalid_request_error"),
    "response_not_found": Denial(404, "invalid_request_error"),
    "previous_response_not_found": Denial(404, "invalid_request_error"),
    "conversation_not_found": Denial(404, "invalid_request_error"),
    "item_not_found": Denial(404, "invalid_request_error"),
    "container_not_found": Denial(404, "invalid_request_error"),
    "context_length_exceeded": Denial(400, "invalid_request_error"),
}


class Denied(Exception):
    """A request the router refuses. `reason` is a key of DENIALS (or a policy
    rule's own code, with its own status)."""

    __slots__ = ("reason", "message", "status", "headers", "limit")

    def __init__(self, reason: str, message: str, *, status: int | None = None,
                 headers: tuple[tuple[str, str], ...] = (), limit: str = ""):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status if status is not None else DENIALS[reason].status
        self.headers = headers
        self.limit = limit  # the limit (policy name) or "budget" that refused, for metrics

    @property
    def error_type(self) -> str:
        row = DENIALS.get(self.reason)
        if row is not None:
            return row.type
        return "permission_error" if self.status == 403 else "invalid_request_error"


def client_text(text: str) -> str:
    """A client's text for an error message: its first 64 characters, in ASCII."""
    return text[:64].encode("ascii", "backslashreplace").decode()
