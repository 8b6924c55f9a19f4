"""Pasted-document copies: graded by what reading the document needs, never
below the question's own tier, in a file of their own."""

from __future__ import annotations

import pytest

from sidecar.complexity import augmentation
from synthetic_prompts import synthetic_rows


@pytest.mark.parametrize("chars,floor", [(2_500, 2), (7_999, 2), (8_000, 3), (23_999, 3),
                                         (24_000, 4), (400_000, 4)])
def test_reading_floors_rise_with_the_document(chars, floor):
    assert augmentation.reading_floor(chars) == floor


def test_pasted_document_copies_keep_their_question_and_never_lose_tier():
    rows = synthetic_rows()
    out = augmentation.with_pasted_documents(rows, share=0.5, layouts=3)
    assert out[:len(rows)] == rows  # the originals, untouched
    copies = out[len(rows):]
    assert len(copies) > 40
    for copy in copies:
        original = next(r for r in rows if r["file"] == copy["copied_from"] and r["id"] == copy["id"])
        assert original["prompt"] in copy["prompt"] and len(copy["prompt"]) > 2_500
        document = len(copy["prompt"]) - len(original["prompt"])
        assert copy["tier"] == max(original["tier"], augmentation.reading_floor(document - 2)) or \
            copy["tier"] == max(original["tier"], augmentation.reading_floor(document - 1))
        assert copy["file"] == augmentation.PASTED
