"""The constitutional hash every request must carry (header X-Constitutional-Hash)."""

from __future__ import annotations

import hmac
import re

from sidecar.denials import Denied

HEADER = "X-Constitutional-Hash"
WELL_FORMED = re.compile(r"[0-9a-f]{16}")


def check(values: list[str], active: str, previous=(), now: float = 0.0) -> None:
    """Raise Denied unless exactly one well-formed header was sent that equals
    `active`, or one of `previous` ((hash, accepted-until epoch seconds)) still
    within its grace period at `now` (a rotation does not break clients mid-flight)."""
    if not values:
        raise Denied("hash_required", f"the {HEADER} header is required",
                     headers=((HEADER, active),))
    if len(values) > 1:
        raise Denied("invalid_hash", f"the {HEADER} header was sent {len(values)} times; send it once")
    # Only RFC 9110 optional whitespace (SP, HTAB) may surround the value: str.strip()
    # would also take NBSP, NEL and the C0 separators and accept "hash\xa0".
    value = values[0].strip(" \t")
    if WELL_FORMED.fullmatch(value) is None:
        raise Denied("invalid_hash", f"the {HEADER} header must be 16 lowercase hex digits")
    # Constant time: the hash gates access, so do not leak how much of it matched.
    # Every candidate is compared, so timing does not say which one matched.
    sent = value.encode()
    ok = hmac.compare_digest(sent, active.encode())
    for old, until in previous:
        ok |= hmac.compare_digest(sent, old.encode()) and now < until
    if not ok:
        raise Denied("hash_mismatch", f"the {HEADER} header does not match the active hash",
                     headers=((HEADER, active),))
