"""The constitutional hash check, including a rotation with an injected clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.edge.constitution import check
from sidecar.denials import Denied

ACTIVE = "cdd01ef066bc6cf2"
OLD = "0123456789abcdef"
PREVIOUS = ((OLD, 1000.0),)


@pytest.mark.parametrize("values,status,reason", [
    ([], 428, "hash_required"),
    ([ACTIVE, ACTIVE], 400, "invalid_hash"),
    (["CDD01EF066BC6CF2"], 400, "invalid_hash"),
    ([ACTIVE[:-1]], 400, "invalid_hash"),
    ([ACTIVE + "0"], 400, "invalid_hash"),
    ([" \x00" + ACTIVE], 400, "invalid_hash"),
    (["cdd01ef066bc6cf\u00e9"], 400, "invalid_hash"),
    (["ffffffffffffffff"], 412, "hash_mismatch"),
])
def test_refusals(values, status, reason):
    with pytest.raises(Denied) as info:
        check(values, ACTIVE, PREVIOUS, now=0.0)
    assert (info.value.status, info.value.reason) == (status, reason)


def test_a_mismatch_answer_carries_the_active_hash():
    with pytest.raises(Denied) as info:
        check(["ffffffffffffffff"], ACTIVE)
    assert ("X-Constitutional-Hash", ACTIVE) in info.value.headers


def test_the_active_hash_passes():
    check([ACTIVE], ACTIVE, PREVIOUS, now=5000.0)


def test_a_previous_hash_passes_until_its_deadline_then_not():
    check([OLD], ACTIVE, PREVIOUS, now=999.9)
    with pytest.raises(Denied) as info:
        check([OLD], ACTIVE, PREVIOUS, now=1000.0)
    assert info.value.reason == "hash_mismatch"


# Every character Python (or a lenient parser) might call whitespace, except the
# two RFC 9110 allows around a field value.
NOT_OWS = [c for c in map(chr, range(0x110000)) if c.isspace() or ord(c) < 0x20 or ord(c) == 0x7f]
NOT_OWS = [c for c in NOT_OWS if c not in " \t"]
OWS = st.text(alphabet=" \t", max_size=3)


@given(OWS, OWS)
def test_optional_whitespace_around_the_hash_is_accepted(before, after):
    check([before + ACTIVE + after], ACTIVE)


@given(OWS, st.sampled_from(NOT_OWS), st.booleans(), OWS)
def test_any_other_space_or_control_character_around_the_hash_is_refused(ows, odd, leading, ows2):
    value = (ows + odd + ACTIVE + ows2) if leading else (ows + ACTIVE + odd + ows2)
    with pytest.raises(Denied) as info:
        check([value], ACTIVE)
    assert info.value.reason == "invalid_hash"
