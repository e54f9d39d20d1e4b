"""Placement integrity (issue 14, part 6): every name of every brand makes an option a placement, the brief
never reaches a reader, and an approval binds to the text it approved."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from django.urls import reverse

from brands import matching
from brands import selectors as brand_selectors
from brands import services as brand_services
from brands.matching import OptionPlan, brand_catalogue, option_placement, placement_passage
from brands.models import PlacementDecision, text_hash
from brands.placements import Name, NameCatalogue, common_words, find_mentions, quoted_runs
from mesu_web.errors import ApplicationError
from mesu_web.notifications.models import Notification
from tests.factories import story_with_chapters
from writer import services
from writer.models import Chapter, GenerationOption, GenerationRequest, ReviewStatus

SAMPLES = Path(__file__).resolve().parents[2] / "samples"

# ---------------------------------------------------------------------------------------------
# The catalogue scan, pure text

TIDEWAVE, NORTHSTAR, BOBA = 1, 2, 3
NAMES = [
    Name(TIDEWAVE, None, "Tidewave Surf Co."),
    Name(TIDEWAVE, 10, "Tidewave Glide"),
    Name(TIDEWAVE, 10, "Glide board"),
    Name(TIDEWAVE, 10, "Glide"),
    Name(TIDEWAVE, 11, "Otis the Otter"),
    Name(NORTHSTAR, None, "Northstar Bank"),
    Name(NORTHSTAR, 21, "Follow your north star"),
    Name(BOBA, None, "Bobalicious"),
    Name(BOBA, 30, "Brown sugar milk tea"),
]


@pytest.fixture(scope="module")
def catalogue() -> NameCatalogue:
    return NameCatalogue(NAMES)


def named(catalogue: NameCatalogue, text: str) -> list[tuple[str, int]]:
    [hits] = catalogue.scan(text)
    assert all(text[h.start : h.end] == h.matched for h in hits)
    return [(h.matched, h.name.owner) for h in hits]


@pytest.mark.parametrize(
    "text, matched",
    [
        ("She bought a board from Tidewave Surf Co. at dawn.", "Tidewave Surf Co."),
        ("a TIDEWAVE sticker", "TIDEWAVE"),  # the coined first word of the brand's name, any case
        ("two tidewaves on the rack", "tidewaves"),
        ("Tidewave's van", "Tidewave's"),
        ("a tidewave glide under her arm", "tidewave glide"),  # another asset's name
        ("Otis the Otter waved", "Otis the Otter"),
        ("ＴＩＤＥＷＡＶＥ", "ＴＩＤＥＷＡＶＥ"),  # fullwidth letters
        ("\u0422idew\u0430ve", "\u0422idew\u0430ve"),  # Cyrillic Т and а
        ("Tide\u0301wave", "Tide\u0301wave"),  # a combining accent
        ("Tidéwave", "Tidéwave"),
    ],
)
def test_every_name_of_a_brand_counts(catalogue, text, matched):
    assert named(catalogue, text) == [(matched, TIDEWAVE)]


@pytest.mark.parametrize("hidden", ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u200b\u200d"])
def test_an_invisible_character_never_splits_a_name(catalogue, hidden):
    text = f"Rode a Tide{hidden}wave board and banked with North{hidden}star Bank."
    assert [owner for _, owner in named(catalogue, text)] == [TIDEWAVE, NORTHSTAR]
    # find_mentions (the reward, the highlight) agrees, with the raw text's offsets.
    [mention] = find_mentions(text, ["Tidewave"])
    assert mention.matched == f"Tide{hidden}wave" and text[mention.start : mention.end] == mention.matched


def test_glide_the_word_is_prose_and_glide_the_board_is_a_name(catalogue):
    assert "glide" in common_words() and "tidewave" not in common_words()
    # Ordinary prose: lowercase, or the first word of a sentence or a line.
    for prose in (
        "The boat's glide was smooth.",
        "Glide was the only word for it.",
        '"Glide," she said, "like a gull."',
        "The wind dropped.\nGlide, then stop.",
        "She ordered a brown sugar milk tea and followed your north star.",
    ):
        assert named(catalogue, prose) == [], prose
    # A name: capitalised mid-sentence, or in capitals.
    assert named(catalogue, "She waxed her Glide and paddled out.") == [("Glide", TIDEWAVE)]
    assert named(catalogue, "She waxed her GLIDE BOARD.") == [("GLIDE BOARD", TIDEWAVE)]
    # Brand context: once the brand is named, its ordinary-word names count in any case and place.
    assert named(catalogue, "Glide boards are easy. Her glide board came from Tidewave.") == [
        ("Glide boards", TIDEWAVE),
        ("glide board", TIDEWAVE),
        ("Tidewave", TIDEWAVE),
    ]
    # ... across the chapter and its reasoning, which are scanned together.
    text_hits, reasoning_hits = catalogue.scan("the glide board was new", "Place Tidewave here.")
    assert [h.matched for h in text_hits] == ["glide board"] and [h.matched for h in reasoning_hits] == ["Tidewave"]


def test_a_word_inside_a_longer_word_is_not_a_name(catalogue):
    assert named(catalogue, "Tidewavers and Bobaliciousness") == []


def test_plan_terms_spare_the_ordinary_word_too():
    plan = OptionPlan(brand_id=1, asset_id=10, terms=("Glide",))
    assert plan.mentions_in("The boat's glide was smooth.") == []
    assert plan.mentions_in("She waxed her Glide.") == [[14, 19]]
    assert plan.mentions_in("Her Glidde was new.") == [[4, 10]]  # a typo of the planned term


def test_quoted_runs_find_the_brief_word_for_word():
    sources = [
        "Teens and young adults who love the beach, the waves and the outdoors.",
        "Calm, clear and reassuring.",
        "Warm.",
    ]
    text = "They wrote for teens and young adults who love the beach. Her voice: calm, clear and reassuring! Warm."
    assert [text[s:e] for s, e in quoted_runs(text, sources)] == [
        "teens and young adults who love the beach",
        "calm, clear and reassuring",
    ]
    assert quoted_runs("A walk on the beach at dawn, calm and clear.", sources) == []


def test_a_whole_catalogue_scan_is_cheap():
    rng = random.Random(14)
    vocab = sorted(common_words())
    names = []
    for b in range(1000):  # 1,000 brands of 5 assets, 3 names each: 16,000 names
        names.append(Name(b, None, f"Brand{b}wave Surf Co."))
        for a in range(5):
            asset = b * 10 + a
            names += [
                Name(b, asset, f"{rng.choice(vocab).title()} {rng.choice(vocab)}"),
                Name(b, asset, f"Prod{b}x{a}"),
                Name(b, asset, rng.choice(vocab).title()),
            ]
    common_words()  # loaded once per process, not part of a build
    started = time.perf_counter()
    big = NameCatalogue(names)
    assert time.perf_counter() - started < 10.0  # measured ~0.15 s on a quiet core: once per catalogue
    prose = (SAMPLES / "neon_rain.txt").read_text().split()
    option = " ".join(rng.choice(prose) for _ in range(800)) + " Brand7wave and Prod3x2."
    big.scan(option)
    started = time.perf_counter()
    for _ in range(20):
        text_hits, _ = big.scan(option, option[:3000])
    per_option = (time.perf_counter() - started) / 20
    assert {h.matched for h in text_hits} >= {"Brand7wave", "Prod3x2"}
    # Measured ~2 ms on a quiet core (800 words and a reasoning); generous for a busy shared machine.
    assert per_option < 0.25, f"{per_option * 1000:.1f} ms per option"


# ---------------------------------------------------------------------------------------------
# Options: what the writer stores (brands.matching.option_placement, called by writer._option_row)


@pytest.fixture
def surf_story(users, brands):
    story = story_with_chapters(
        owner=users["alice"], chapters=1, title="Salt Summer", summary="A summer at a surf camp.",
        tags=["surfing"], is_published=True,
    )
    brand_services.story_brand_settings_update(story=story, opt_in=True)
    return story


def _request(story, user, *, use_brands=True, kind=GenerationRequest.Kind.AUTHOR) -> GenerationRequest:
    return GenerationRequest.objects.create(
        story=story, requested_by=user, kind=kind, n=2, engine="local", max_new_tokens=24,
        next_number=story.chapters.count() + 1, status=GenerationRequest.Status.SUCCEEDED, use_brands=use_brands,
    )


def _plan(brand) -> OptionPlan:
    asset = brand.assets.order_by("pk").first()
    return OptionPlan(brand_id=brand.pk, asset_id=asset.pk, hint="in passing", terms=tuple(asset.terms))


def _option(request, placement, text, reasoning="", index=0) -> GenerationOption:
    return GenerationOption.objects.create(
        request=request, index=index, text=text, reasoning=reasoning, format_ok=True,
        brand_id=placement.brand_id, asset_id=placement.asset_id, mentions=placement.mentions,
        reasoning_mentions=placement.reasoning_mentions, placement_found=placement.placement_found,
        placement_note=placement.note, review_status=placement.review_status,
    )


def test_a_plain_option_naming_a_brand_waits_for_that_brands_review(users, surf_story, brands):
    tidewave = brands["Tidewave Surf Co."]
    request = _request(surf_story, users["alice"])
    text = "Mina grabbed her board from Tidewave Surf Co. and ran."
    placement = option_placement(request=request, plan=OptionPlan(), text=text, reasoning="")
    assert (placement.brand_id, placement.review_status) == (tidewave.pk, ReviewStatus.PENDING)
    assert [text[s:e] for s, e in placement.mentions] == ["Tidewave Surf Co."]
    assert "not asked to place" in placement.note
    option = _option(request, placement, text)
    assert not option.visible_to_requester and not option.shows_reasoning
    assert list(brand_selectors.review_queue_for_manager(user=users["mia"])) == [option]


def test_the_brand_itself_another_asset_or_a_split_term_is_a_placement_of_the_planned_brand(users, surf_story, brands):
    tidewave = brands["Tidewave Surf Co."]
    request = _request(surf_story, users["alice"])
    plan = _plan(tidewave)  # asked for the Tidewave Glide
    for text in (
        "A Tidewave Surf Co. van rolled by.",
        "Otis the Otter grinned from her wetsuit.",
        "She rode her Tide\u200bwave Gli\u00adde.",
        "her ｔｉｄｅｗａｖｅ towel",
    ):
        placement = option_placement(request=request, plan=plan, text=text, reasoning="")
        assert (placement.brand_id, placement.review_status, placement.placement_found) == (
            tidewave.pk, ReviewStatus.PENDING, True,
        ), text
    # Named nowhere: not sent for review, and shown.
    placement = option_placement(request=request, plan=plan, text="The boat's glide was smooth.", reasoning="")
    assert placement.review_status == ReviewStatus.NOT_SENT and placement.mentions == []


def test_a_name_in_the_reasoning_only_is_a_placement_too(users, surf_story, brands):
    request = _request(surf_story, users["alice"])
    reasoning = "I will slip Bobalicious into the scene."
    placement = option_placement(request=request, plan=OptionPlan(), text="They drank tea.", reasoning=reasoning)
    assert placement.review_status == ReviewStatus.PENDING and placement.brand_id == brands["Bobalicious"].pk
    assert [reasoning[s:e] for s, e in placement.reasoning_mentions] == ["Bobalicious"]


def test_a_chapter_that_tells_the_writer_to_name_another_brand_is_still_caught(users, surf_story, brands):
    tidewave, boba = brands["Tidewave Surf Co."], brands["Bobalicious"]
    request = _request(surf_story, users["alice"])
    text = "Forget the surf. Bobalicious! Bobalicious brown sugar milk tea for everyone."
    placement = option_placement(request=request, plan=_plan(tidewave), text=text, reasoning="")
    assert (placement.brand_id, placement.review_status) == (boba.pk, ReviewStatus.PENDING)
    assert "asked to place Tidewave Surf Co." in placement.note
    # Excluded by the author: held back, and the excluded brand never sees the story.
    brand_services.story_brand_settings_update(story=surf_story, opt_in=True, excluded_brand_ids=[boba.pk])
    placement = option_placement(request=request, plan=_plan(tidewave), text=text, reasoning="")
    assert (placement.brand_id, placement.review_status) == (tidewave.pk, ReviewStatus.HELD)
    assert "excluded by the author" in placement.note
    option = _option(request, placement, text)
    assert not option.visible_to_requester
    assert list(brand_selectors.review_queue_for_manager(user=users["mia"])) == []


def test_no_opt_in_several_brands_or_an_inactive_brand_hold_the_option_back(users, surf_story, brands):
    tidewave = brands["Tidewave Surf Co."]
    plain = _request(surf_story, users["alice"], use_brands=False)
    placement = option_placement(request=plain, plan=OptionPlan(), text="A Tidewave board.", reasoning="")
    assert (placement.brand_id, placement.review_status) == (None, ReviewStatus.HELD)
    request = _request(surf_story, users["alice"])
    placement = option_placement(
        request=request, plan=_plan(tidewave), text="Tidewave boards and a Northstar Bank card.", reasoning=""
    )
    assert placement.review_status == ReviewStatus.HELD and "several brands" in placement.note
    brand_services.brand_update(brand=brands["Northstar Bank"], is_active=False)
    placement = option_placement(request=request, plan=OptionPlan(), text="Her Northstar app pinged.", reasoning="")
    assert placement.review_status == ReviewStatus.HELD and "not active" in placement.note


def test_an_option_repeating_its_brief_goes_to_review_and_readers_never_see_a_branded_reasoning(
    users, surf_story, brands, client_for
):
    tidewave = brands["Tidewave Surf Co."]
    request = _request(surf_story, users["rita"], kind=GenerationRequest.Kind.READER)
    brief_text = "It was a story for teens and young adults who love the beach, the waves and the outdoors."
    placement = option_placement(request=request, plan=_plan(tidewave), text=brief_text, reasoning="")
    assert placement.review_status == ReviewStatus.PENDING and "brief word for word" in placement.note
    # Not named, brief quoted in the reasoning only: shown (not sent), its reasoning never.
    reasoning = "Tone: sunny, easy-going, a little cheeky; never preachy. Audience: teens and young adults."
    placement = option_placement(request=request, plan=_plan(tidewave), text="Waves all day.", reasoning=reasoning)
    assert placement.review_status == ReviewStatus.NOT_SENT
    _option(request, placement, "Waves all day.", reasoning=reasoning)
    plain = option_placement(request=request, plan=OptionPlan(), text="Rain.", reasoning="I think about rain.")
    _option(request, plain, "Rain all day.", reasoning="I think about rain.", index=1)
    for who in ("rita", "alice"):
        html = client_for(who).get(reverse("writer:request_detail", args=[request.pk])).content.decode()
        assert "Waves all day." in html and "never preachy" not in html and "a little cheeky" not in html
        assert "I think about rain." in html  # a plain option's reasoning is shown


# ---------------------------------------------------------------------------------------------
# The catalogue follows the brands


def test_the_catalogue_is_cached_and_rebuilt_when_a_brand_changes(users, brands, django_assert_num_queries):
    first = brand_catalogue()
    with django_assert_num_queries(2):  # the version check only
        assert brand_catalogue() is first
    asset = brands["Tidewave Surf Co."].assets.order_by("pk").first()
    brand_services.asset_update(asset=asset, terms=[*asset.terms, "Kelpie"])
    rebuilt = brand_catalogue()
    assert rebuilt is not first
    assert [h.matched for h in rebuilt.names.scan("a Kelpie board")[0]] == ["Kelpie"]
    brands["Bobalicious"].delete()
    assert brand_catalogue().names.scan("Bobalicious")[0] == []


# ---------------------------------------------------------------------------------------------
# Approval binds to the approved text


BODY = (
    "Kai paddled out at dawn. The swell was clean. "
    "Mina waxed her Tidewave Glide on the sand and laughed. "
    "The gulls wheeled over the reef."
)


def _approved(users, story, brands, text=BODY) -> GenerationOption:
    tidewave = brands["Tidewave Surf Co."]
    request = _request(story, users["alice"])
    placement = option_placement(request=request, plan=_plan(tidewave), text=text, reasoning="")
    option = _option(request, placement, text)
    brand_services.option_approve(option=option, reviewer=users["mia"])
    option.refresh_from_db()
    return option


def test_an_approval_records_the_hash_of_the_text_it_approved(users, surf_story, brands):
    option = _approved(users, surf_story, brands)
    decision = PlacementDecision.objects.get(option=option)
    assert option.approved_text_hash == decision.text_hash == text_hash(BODY)


def test_accepting_the_approved_text_or_an_edit_outside_its_passage_keeps_the_label(users, surf_story, brands, client_for):
    option = _approved(users, surf_story, brands)
    edited = BODY.replace("The swell was clean.", "The swell was glassy and cold.").replace("gulls", "terns")
    chapter = services.option_accept(option=option, user=users["alice"], text=edited)
    html = client_for("rita").get(chapter.get_absolute_url()).content.decode()
    assert "Includes a paid placement by Tidewave Surf Co." in html and "glassy and cold" in html


def test_accepting_an_edit_of_the_approved_passage_sends_it_back_to_review(users, surf_story, brands):
    option = _approved(users, surf_story, brands)
    edited = BODY.replace("on the sand and laughed", "and said every surfer needs one")
    chapters_before = Chapter.objects.count()
    with pytest.raises(ApplicationError, match="went back to Tidewave Surf Co. for review"):
        services.option_accept(option=option, user=users["alice"], text=edited)
    option.refresh_from_db()
    assert Chapter.objects.count() == chapters_before  # no chapter from unapproved text
    assert option.review_status == ReviewStatus.PENDING and option.text == edited and not option.approved_text_hash
    assert [option.text[s:e] for s, e in option.mentions] == ["Tidewave Glide"]
    assert list(brand_selectors.review_queue_for_manager(user=users["mia"])) == [option]
    assert Notification.objects.filter(user=users["mia"], message__contains="changed after review").exists()
    # Approved again, the edited text is accepted with its label.
    brand_services.option_approve(option=option, reviewer=users["mia"])
    option.refresh_from_db()
    chapter = services.option_accept(option=option, user=users["alice"])
    assert chapter.text == edited
    assert list(PlacementDecision.objects.filter(option=option).values_list("text_hash", flat=True)) == [
        text_hash(edited), text_hash(BODY),  # newest first
    ]


def test_an_accepted_text_naming_another_brand_is_refused(users, surf_story, brands):
    option = _approved(users, surf_story, brands)
    with pytest.raises(ApplicationError, match="names Northstar Bank"):
        services.option_accept(option=option, user=users["alice"], text=BODY + " She paid with her Northstar Bank card.")
    plain = GenerationOption.objects.create(
        request=_request(surf_story, users["alice"]), index=0, text="Rain all day.", format_ok=True
    )
    with pytest.raises(ApplicationError, match="names Bobalicious"):
        services.option_accept(option=plain, user=users["alice"], text="Rain all day. Bobalicious for all!")
    assert not Chapter.objects.filter(text__contains="Bobalicious").exists()


def test_taking_the_brand_out_before_accepting_gives_a_plain_chapter(users, surf_story, brands, client_for):
    option = _approved(users, surf_story, brands)
    edited = BODY.replace("her Tidewave Glide", "her old board")
    chapter = services.option_accept(option=option, user=users["alice"], text=edited)
    option.refresh_from_db()
    assert option.review_status == ReviewStatus.NOT_SENT and "took the brand out" in option.placement_note
    html = client_for("rita").get(chapter.get_absolute_url()).content.decode()
    assert "paid placement" not in html and "her old board" in html


def test_an_unnamed_option_edited_to_name_its_brand_goes_to_review(users, surf_story, brands):
    tidewave = brands["Tidewave Surf Co."]
    request = _request(surf_story, users["alice"])
    text = "Kai paddled out at dawn."
    option = _option(request, option_placement(request=request, plan=_plan(tidewave), text=text, reasoning=""), text)
    assert option.review_status == ReviewStatus.NOT_SENT
    with pytest.raises(ApplicationError, match="went to Tidewave Surf Co. for review"):
        services.option_accept(option=option, user=users["alice"], text=text + " On a Glide board.")
    option.refresh_from_db()
    assert option.review_status == ReviewStatus.PENDING and option.text.endswith("On a Glide board.")


# ---------------------------------------------------------------------------------------------
# A chapter edited after acceptance


def _sponsored_chapter(users, story, brands) -> tuple[GenerationOption, Chapter]:
    option = _approved(users, story, brands)
    chapter = services.option_accept(option=option, user=users["alice"])
    option.refresh_from_db()
    return option, chapter


def test_editing_outside_the_passage_keeps_the_label(users, surf_story, brands, client_for):
    option, chapter = _sponsored_chapter(users, surf_story, brands)
    services.chapter_update(chapter=chapter, text=BODY.replace("gulls", "terns"), title="Dawn")
    html = client_for("rita").get(chapter.get_absolute_url()).content.decode()
    assert "Includes a paid placement by Tidewave Surf Co." in html and "terns" in html
    option.refresh_from_db()
    assert option.review_status == ReviewStatus.APPROVED


def test_editing_the_passage_withholds_the_chapter_until_the_brand_approves_it(users, surf_story, brands, client_for):
    option, chapter = _sponsored_chapter(users, surf_story, brands)
    changed = BODY.replace("on the sand and laughed", "because it is the best board money can buy")
    services.chapter_update(chapter=chapter, text=changed)
    rita, alice = client_for("rita"), client_for("alice")
    html = rita.get(chapter.get_absolute_url()).content.decode()
    assert "paid placement" not in html and "best board money can buy" not in html
    assert "waiting for a brand's review" in html
    option.refresh_from_db()
    assert option.review_status == ReviewStatus.PENDING and option.text == changed
    assert list(brand_selectors.review_queue_for_manager(user=users["mia"])) == [option]
    # The author sees the text and why readers don't.
    html = alice.get(chapter.get_absolute_url()).content.decode()
    assert "best board money can buy" in html and "has not approved" in html
    # Read again: still withheld, nothing changes twice.
    assert "best board money can buy" not in rita.get(chapter.get_absolute_url()).content.decode()
    assert Notification.objects.filter(user=users["mia"], message__contains="changed after review").count() == 1

    brand_services.option_approve(option=option, reviewer=users["mia"])
    html = rita.get(chapter.get_absolute_url()).content.decode()
    assert "Includes a paid placement by Tidewave Surf Co." in html and "best board money can buy" in html


def test_a_rejected_edit_stays_withheld_until_the_author_takes_the_brand_out(users, surf_story, brands, client_for):
    option, chapter = _sponsored_chapter(users, surf_story, brands)
    services.chapter_update(chapter=chapter, text=BODY.replace("and laughed", "and shouted BUY ONE NOW"))
    rita = client_for("rita")
    rita.get(chapter.get_absolute_url())
    option.refresh_from_db()
    brand_services.option_reject(option=option, reviewer=users["mia"], reason="Reads like an advert")
    assert "BUY ONE NOW" not in rita.get(chapter.get_absolute_url()).content.decode()
    services.chapter_update(chapter=chapter, text=BODY.replace("her Tidewave Glide", "her board"))
    html = rita.get(chapter.get_absolute_url()).content.decode()
    assert "waxed her board" in html and "paid placement" not in html


def test_an_unedited_sponsored_chapter_is_read_without_reading_its_option(users, surf_story, brands, client_for, monkeypatch):
    _, chapter = _sponsored_chapter(users, surf_story, brands)
    chapter.refresh_from_db()
    assert chapter.updated_at == chapter.created_at

    def no_scan(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("an unedited chapter needs no check")

    monkeypatch.setattr(matching, "brand_catalogue", no_scan)
    html = client_for("rita").get(chapter.get_absolute_url()).content.decode()
    assert "Includes a paid placement by Tidewave Surf Co." in html


def test_the_passage_is_the_sentences_that_name_the_brand():
    text = "One. Two has Tidewave in it! Three.\nFour with Tidewave Surf Co. here. Five."
    spans = [[m.start, m.end] for m in find_mentions(text, ["Tidewave", "Tidewave Surf Co."])]
    assert placement_passage(text, spans) == "Two has Tidewave in it!\nFour with Tidewave Surf Co."


def test_a_chapter_edited_to_name_another_brand_is_held_until_that_name_goes(users, surf_story, brands, client_for):
    option, chapter = _sponsored_chapter(users, surf_story, brands)
    rita = client_for("rita")
    services.chapter_update(chapter=chapter, text=BODY + " She paid with her Northstar app.")
    html = rita.get(chapter.get_absolute_url()).content.decode()
    assert "Northstar" not in html and "paid placement" not in html
    option.refresh_from_db()
    assert option.review_status == ReviewStatus.HELD and "Northstar Bank" in option.placement_note
    assert list(brand_selectors.review_queue_for_manager(user=users["mia"])) == []
    # The other brand taken out (the placement's passage as approved): back to the brand, then labelled.
    services.chapter_update(chapter=chapter, text=BODY)
    assert "waiting for a brand's review" in rita.get(chapter.get_absolute_url()).content.decode()
    option.refresh_from_db()
    assert option.review_status == ReviewStatus.PENDING
    brand_services.option_approve(option=option, reviewer=users["mia"])
    assert "Includes a paid placement by Tidewave Surf Co." in rita.get(chapter.get_absolute_url()).content.decode()


def test_the_edit_not_the_page_view_sends_the_chapter_back_to_review(users, surf_story, brands, client_for):
    option, chapter = _sponsored_chapter(users, surf_story, brands)
    changed = BODY.replace("on the sand and laughed", "because it is the best board money can buy")
    services.chapter_update(chapter=chapter, text=changed)
    option.refresh_from_db()
    assert option.review_status == ReviewStatus.PENDING and option.text == changed  # before anyone reads it
    before = GenerationOption.objects.filter(pk=option.pk).values().get()
    client_for("rita").get(chapter.get_absolute_url())
    client_for("alice").get(chapter.get_absolute_url())
    assert GenerationOption.objects.filter(pk=option.pk).values().get() == before  # a GET writes nothing
