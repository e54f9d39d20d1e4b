"""Disclosure (issue 17, part 4, DSA Art. 26): the label, who paid and "Why am I seeing this?" on every
sponsored chapter (the chapter page and a reader's own request page), the author's own commercial note,
and no placement for a reader under 18."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from brands.models import AgeBracket, ReaderSponsorshipPreference, StorySuitability
from brands.services import reader_sponsorship_set, story_brand_settings_update
from tests.brands.test_measurement import DRAFT, PLACED_SENTENCE, _redis_cache, sponsored_world  # noqa: F401
from writer.models import GenerationOption

LABEL = "Includes a paid placement by Tidewave"


@pytest.fixture
def world(users):
    return sponsored_world(users)


def panel(html: str) -> str:
    match = re.search(r'<details class="why-this".*?</details>', html, re.S)
    assert match, "no Why am I seeing this? panel"
    return match.group(0)


def test_the_chapter_page_shows_label_payer_and_panel_above_the_text(world, client_for):
    html = client_for("ross").get(world.chapter_url).content.decode()
    assert LABEL in html
    assert "Paid for by Tidewave, campaign “Summer swell”." in html
    assert "<summary>Why am I seeing this?</summary>" in html
    # Clear and conspicuous: before the chapter's title and text, not hidden behind the panel.
    assert html.index(LABEL) < html.index("<h1>") < html.index(PLACED_SENTENCE)
    assert html.index(LABEL) < html.index("<details")


def test_the_panel_lists_the_main_parameters(world, client_for):
    StorySuitability.objects.create(story=world.story, categories=["IAB2", "IAB20"], risk_tier="low")
    why = panel(client_for("ross").get(world.chapter_url).content.decode())
    assert "Story categories: Automotive (IAB2)" in why and "Travel (IAB20)" in why
    assert "risk tier: Low risk" in why
    assert "The author opted this story in to brand placements." in why
    assert "sponsored chapters are on" in why
    assert f'href="{reverse("brands:sponsorship")}"' in why
    assert "No sensitive data (health, political views or anything like them) was used" in why
    assert f'data-open-url="{reverse("brands:measure_disclosure", args=[world.author_option.pk])}"' in why


def test_the_panel_says_when_the_story_is_not_classified_and_the_reader_turned_off(world, client_for, users):
    reader_sponsorship_set(user=users["ross"], enabled=False)
    story_brand_settings_update(story=world.story, opt_in=False)
    why = panel(client_for("ross").get(world.chapter_url).content.decode())
    assert "not classified yet" in why
    assert "sponsored chapters are off" in why
    assert "new chapters carry none now" in why


def test_a_visitor_sees_the_disclosure_but_posts_nothing(world, client):
    html = client.get(world.chapter_url).content.decode()
    assert LABEL in html
    why = panel(html)
    assert "You are not signed in" in why
    assert "data-open-url" not in why and "data-impression-url" not in html


def test_the_author_sees_the_label_without_being_counted(world, client_for):
    html = client_for("alice").get(world.chapter_url).content.decode()
    assert LABEL in html and "data-impression-url" not in html


def test_the_readers_own_request_page_shows_the_disclosure(world, client_for):
    html = client_for("rita").get(reverse("writer:request_detail", args=[world.gen_rita.pk])).content.decode()
    assert LABEL in html and "Why am I seeing this?" in html
    assert f'data-impression-url="{reverse("brands:measure_impression", args=[world.rita_option.pk])}"' in html


def test_a_plain_chapter_has_no_disclosure(world, client_for):
    html = client_for("ross").get(reverse("writer:chapter_detail", args=[world.story.slug, 1])).content.decode()
    assert "paid placement" not in html and "Why am I seeing this?" not in html
    assert "impressions.js" not in html


def test_brand_and_campaign_names_are_escaped(world, client_for):
    world.brand.name = "<b>Tide</b>"
    world.brand.save(update_fields=["name"])
    world.campaign.name = '<script>alert("x")</script>'
    world.campaign.save(update_fields=["name"])
    html = client_for("ross").get(world.chapter_url).content.decode()
    assert "<b>Tide</b>" not in html and "&lt;b&gt;Tide&lt;/b&gt;" in html
    assert '<script>alert("x")</script>' not in html


# --- Readers under 18 ------------------------------------------------------------------------------


def test_a_reader_under_18_reads_the_chapter_as_written_without_the_brand(world, client_for, users):
    ReaderSponsorshipPreference.objects.create(user=users["ross"], age_bracket=AgeBracket.UNDER_18)
    html = client_for("ross").get(world.chapter_url).content.decode()
    assert "Tidewave" not in html and "paid placement" not in html
    assert "The tide came in slowly." in html and "Lou waxed her old board" in html
    assert "impressions.js" not in html
    # And may not post an impression of it.
    assert client_for("ross").post(reverse("brands:measure_impression", args=[world.author_option.pk])).status_code == 404


def test_without_a_draft_the_chapter_is_held_back_for_a_reader_under_18(world, client_for, users):
    GenerationOption.objects.filter(pk=world.author_option.pk).update(draft="")
    ReaderSponsorshipPreference.objects.create(user=users["ross"], age_bracket=AgeBracket.UNDER_18)
    html = client_for("ross").get(world.chapter_url).content.decode()
    assert "Tidewave" not in html and "The tide came in slowly." not in html
    assert "never show to readers under 18" in html


def test_an_adult_reader_still_sees_the_placement(world, client_for, users):
    ReaderSponsorshipPreference.objects.create(user=users["ross"], age_bracket=AgeBracket.ADULT)
    html = client_for("ross").get(world.chapter_url).content.decode()
    assert LABEL in html and PLACED_SENTENCE in html
    assert DRAFT != PLACED_SENTENCE


# --- The author's own commercial content -------------------------------------------------------------


def test_the_author_declares_commercial_content_on_the_chapter_form(world, client_for):
    alice = client_for("alice")
    edit = reverse("writer:chapter_edit", args=[world.story.slug, 1])
    assert "Commercial content you declare" in alice.get(edit).content.decode()
    response = alice.post(
        edit, {"title": "One", "text": "Chapter 1 text.", "commercial_note": 'Gifted by <em>Acme</em> "Tea"'}
    )
    assert response.status_code == 302
    html = client_for("ross").get(reverse("writer:chapter_detail", args=[world.story.slug, 1])).content.decode()
    assert "The author declares: Gifted by &lt;em&gt;Acme&lt;/em&gt; &quot;Tea&quot;" in html
    assert html.index("The author declares") < html.index("<h1>")
    # An empty note takes the declaration away; a new chapter takes one too.
    alice.post(edit, {"title": "One", "text": "Chapter 1 text.", "commercial_note": ""})
    html = client_for("ross").get(reverse("writer:chapter_detail", args=[world.story.slug, 1])).content.decode()
    assert "The author declares" not in html
    alice.post(
        reverse("writer:chapter_add", args=[world.story.slug]),
        {"title": "Five", "text": "A new one.", "commercial_note": "Paid by Acme"},
    )
    assert world.story.chapters.get(number=5).commercial_note == "Paid by Acme"


def test_a_too_long_commercial_note_is_refused_and_the_text_kept(world, client_for):
    alice = client_for("alice")
    edit = reverse("writer:chapter_edit", args=[world.story.slug, 1])
    response = alice.post(edit, {"title": "One", "text": "My edited text.", "commercial_note": "x" * 201})
    assert response.status_code == 200
    html = response.content.decode()
    assert "My edited text." in html and "at most 200 characters" in html
    assert world.story.chapters.get(number=1).commercial_note == ""
