"""mesu_web/slugs.py: the one slug helper behind story and brand addresses, adapter names and book files."""

from __future__ import annotations

import pytest

from mesu_web.slugs import slug_of, unique_slug


@pytest.mark.parametrize(
    ("text", "slug"),
    [
        ("The Lighthouse Keeper's Daughter", "the-lighthouse-keepers-daughter"),
        ("Café Lumière — Part 2", "cafe-lumiere-part-2"),
        ("  --Neon   Rain__ ", "neon-rain"),
        ("<script>alert(1)</script>", "script-alert-1-script"),
        ("雨の街", ""),
        ("", ""),
    ],
)
def test_slug_of(text, slug):
    assert slug_of(text) == slug


def test_slug_of_keeps_its_own_letters_only_when_asked_and_never_ends_in_a_dash():
    assert slug_of("雨の街", keep_letters=True) == "雨の街"
    assert slug_of("Moby Dick", keep_letters=True) == "moby-dick"
    assert slug_of("a" * 10 + " " + "b" * 10, max_length=11) == "a" * 10  # cut after the dash: dropped


def test_unique_slug_counts_up_past_taken_and_reserved_slugs():
    taken = {"new-2", "tidewave", "tidewave-2"}
    assert unique_slug("Tidewave", taken=taken.__contains__, fallback="brand") == "tidewave-3"
    assert unique_slug("New", taken=taken.__contains__, fallback="brand", reserved={"new"}) == "new-3"
    assert unique_slug("!!!", taken=taken.__contains__, fallback="story") == "story"
