"""Versions of options and chapters (writer.versions): every text kept with who, when and from which
request; two versions side by side; an earlier one restored; the ugly cases refused with a clear
message and nothing changed. The writer's own swipes, on the real model, are in test_swipes.py."""

from __future__ import annotations

import pytest
from django.urls import reverse

from brands import services as brand_services
from brands.models import text_hash
from brands.placements import find_mentions, mention_spans
from mesu_web.errors import ApplicationError
from tests.factories import approved_brand, story_with_chapters
from writer import services, versions
from writer.models import (
    Chapter,
    ChapterVersion,
    GenerationOption,
    GenerationRequest,
    OptionPreference,
    OptionRating,
    OptionVersion,
    ReviewStatus,
    VersionCause,
)

pytestmark = pytest.mark.django_db


def _request(story, user, kind=GenerationRequest.Kind.AUTHOR, *, texts=("One.", "Two.", "Three."), use_brands=False):  # noqa: ANN001, ANN202
    """A finished request stored as the run stores it, but from before versions were kept (no rows)."""
    gen = GenerationRequest.objects.create(
        story=story, requested_by=user, kind=kind, n=len(texts), engine="local", max_new_tokens=24,
        next_number=story.chapters.count() + 1, status=GenerationRequest.Status.SUCCEEDED, model_name="smollm2",
        use_brands=use_brands,
    )
    for index, text in enumerate(texts):
        GenerationOption.objects.create(request=gen, index=index, raw_output=text, text=text, format_ok=True, tokens=9)
    return gen


def _add_version(option: GenerationOption, text: str, user) -> OptionVersion:  # noqa: ANN001
    """A new text for `option` as a swipe stores one (the writer's part is in test_swipes.py)."""
    versions.option_versions_ensure(option=option)
    GenerationOption.objects.filter(pk=option.pk).update(text=text, raw_output=text)
    option.refresh_from_db()
    return versions.option_version_add(option=option, cause=VersionCause.SWIPE, created_by=user, request=option.request)


# --- Chapters ----------------------------------------------------------------------------------------


def test_a_chapter_keeps_every_text_and_restoring_one_makes_a_new_version(users, client_for):
    alice = users["alice"]
    story = story_with_chapters(owner=alice, chapters=0)
    chapter = services.chapter_add(story=story, text="The first text.", title="One")
    [v1] = ChapterVersion.objects.filter(chapter=chapter)
    assert (v1.number, v1.cause, v1.text, v1.title, v1.created_by) == (1, "edited", "The first text.", "One", alice)
    services.chapter_update(chapter=chapter, text="The second text.", title="One")
    services.chapter_update(chapter=chapter, text="The second text.", title="One")  # saved unchanged: no version
    assert list(ChapterVersion.objects.filter(chapter=chapter).values_list("number", "text")) == [
        (1, "The first text."), (2, "The second text.")
    ]
    c = client_for("alice")
    page = c.get(reverse("writer:chapter_versions", args=[story.slug, 1])).content.decode()
    assert "Version 1" in page and "Version 2" in page and "current" in page and "Restore version 1" in page
    compare = c.get(reverse("writer:chapter_version_compare", args=[story.slug, 1]), {"a": 1, "b": 2})
    html = compare.content.decode()
    assert "<del>first</del>" in html and "<ins>second</ins>" in html

    response = c.post(reverse("writer:chapter_version_restore", args=[story.slug, 1, 1]))
    assert response.status_code == 302 and response["Location"] == chapter.get_absolute_url()
    chapter.refresh_from_db()
    assert chapter.text == "The first text."
    v3 = ChapterVersion.objects.get(chapter=chapter, number=3)
    assert (v3.cause, v3.restored_from, v3.text, v3.created_by) == ("restored", 1, "The first text.", alice)
    # Restoring the current text again is refused with the reason, and adds nothing.
    response = c.post(reverse("writer:chapter_version_restore", args=[story.slug, 1, 3]), follow=True)
    assert "current text already" in response.content.decode()
    assert ChapterVersion.objects.filter(chapter=chapter).count() == 3


def test_a_chapter_from_before_versions_reads_as_version_1_and_keeps_it_when_edited(users, client_for):
    story = story_with_chapters(owner=users["alice"], chapters=2)  # rows made directly: no versions
    chapter = story.chapters.get(number=1)
    before = chapter.text
    assert not ChapterVersion.objects.exists()
    page = client_for("alice").get(reverse("writer:chapter_versions", args=[story.slug, 1]))
    assert page.status_code == 200 and "Version 1" in page.content.decode()
    assert not ChapterVersion.objects.exists()  # a page read writes nothing
    services.chapter_update(chapter=chapter, text="Rewritten by hand.", title=chapter.title)
    v1, v2 = ChapterVersion.objects.filter(chapter=chapter).order_by("number")
    assert (v1.text, v1.created_at) == (before, chapter.created_at)  # dated when the chapter was added
    assert (v2.text, v2.cause) == ("Rewritten by hand.", "edited")


def test_comparing_a_version_with_itself_or_one_that_is_not_there_says_so(users, client_for):
    story = story_with_chapters(owner=users["alice"], chapters=0)
    chapter = services.chapter_add(story=story, text="Only one text.")
    c = client_for("alice")
    url = reverse("writer:chapter_version_compare", args=[story.slug, chapter.number])
    versions_url = reverse("writer:chapter_versions", args=[story.slug, chapter.number])
    response = c.get(url, follow=True)
    assert response.redirect_chain[-1][0] == versions_url
    assert "only one version so far" in response.content.decode()
    services.chapter_update(chapter=chapter, text="Another text.")
    for params, message in (
        ({"a": 2, "b": 2}, "version 2 is the same as itself"),
        ({"a": 1, "b": 7}, "There is no version 7"),
        ({"a": "one", "b": "2"}, "Choose two versions to compare"),
    ):
        response = c.get(url, params, follow=True)
        assert message in response.content.decode(), params
    assert c.get(url).status_code == 200  # no choice: the previous version and the current one


def test_the_comparison_escapes_everything_and_marks_changed_words():
    old = 'Lou said <script>alert("x")</script> & left.\nThe rain fell.\nA line that goes.'
    new = 'Lou said <b>hello</b> & left.\nThe rain fell.\nA new line.'
    result = versions.compare_texts(old, new)
    kinds = [row.kind for row in result.rows]
    assert kinds == ["changed", "same", "changed"]
    left = "".join(s.text for s in result.rows[0].left)
    assert left == 'Lou said <script>alert("x")</script> & left.'  # plain text: the page escapes it
    assert any(s.changed and "script" in s.text for s in result.rows[0].left)
    assert not any(s.changed and s.text.strip() == "Lou said" for s in result.rows[0].left)
    assert result.words_added and result.words_removed and 0 < result.similarity < 1
    assert versions.compare_texts("Same.", "Same.").identical


def test_the_compare_page_shows_markup_as_text(users, client_for):
    story = story_with_chapters(owner=users["alice"], chapters=0)
    chapter = services.chapter_add(story=story, text="Plain start.")
    services.chapter_update(chapter=chapter, text='Plain start. <img src=x onerror="alert(1)">')
    html = client_for("alice").get(reverse("writer:chapter_version_compare", args=[story.slug, 1])).content.decode()
    assert "<img src=x" not in html and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html


def test_an_accepted_option_s_chapter_starts_with_a_version_naming_it(users):
    alice = users["alice"]
    story = story_with_chapters(owner=alice, chapters=1)
    gen = _request(story, alice)
    option = gen.options.get(index=1)
    chapter = services.option_accept(option=option, user=alice, text="Two, edited.")
    [v1] = ChapterVersion.objects.filter(chapter=chapter)
    assert (v1.cause, v1.option_id, v1.request_id, v1.created_by, v1.text) == (
        "accepted", option.pk, gen.pk, alice, "Two, edited."
    )


# --- Options -----------------------------------------------------------------------------------------


def test_an_option_s_versions_restore_and_the_ugly_cases(users, client_for):
    alice, bob = users["alice"], users["bob"]
    story = story_with_chapters(owner=alice, chapters=1)
    gen = _request(story, alice)
    first, second = gen.options.get(index=0), gen.options.get(index=1)
    _add_version(first, "One, written again.", alice)
    v1, v2 = OptionVersion.objects.filter(option=first).order_by("number")
    assert (v1.text, v1.cause, v1.request_id, v1.created_by, v1.created_at) == (
        "One.", "written", gen.pk, alice, first.created_at
    )
    assert (v2.text, v2.cause) == ("One, written again.", "swipe")
    c = client_for("alice")
    page = c.get(reverse("writer:option_versions", args=[first.pk])).content.decode()
    assert "2 versions" not in page and "Version 2" in page and "Restore version 1" in page
    request_page = c.get(gen.get_absolute_url()).content.decode()
    assert "2 versions" in request_page and "1 version<" in request_page

    # A version of another option, restored through this one's address: not found, nothing changed.
    assert c.post(reverse("writer:option_version_restore", args=[second.pk, 2])).status_code == 404
    assert not OptionVersion.objects.filter(option=second).exists()
    # Someone else's option: another author is not told it exists; a reader neither.
    assert client_for("bob").post(reverse("writer:option_version_restore", args=[first.pk, 1])).status_code == 404
    assert client_for("bob").get(reverse("writer:option_versions", args=[first.pk])).status_code == 404
    with pytest.raises(ApplicationError, match="Only who asked for this chapter"):
        versions.option_version_restore(option=first, version=v1, user=bob)
    # A version of another option passed to the service: refused.
    _add_version(second, "Two, written again.", alice)
    with pytest.raises(ApplicationError, match="another option"):
        versions.option_version_restore(option=first, version=OptionVersion.objects.get(option=second, number=1), user=alice)

    response = c.post(reverse("writer:option_version_restore", args=[first.pk, 1]))
    assert response.status_code == 302 and response["Location"].endswith("#option-0")
    first.refresh_from_db()
    assert first.text == "One." and first.raw_output == "One."
    v3 = OptionVersion.objects.get(option=first, number=3)
    assert (v3.cause, v3.restored_from, v3.created_by, v3.request_id) == ("restored", 1, alice, gen.pk)
    # The other options are untouched by all of it.
    third = gen.options.get(index=2)
    assert third.text == "Three." and not OptionVersion.objects.filter(option=third).exists()

    # An accepted option stays as it was accepted: no restore, the message says why.
    services.option_accept(option=first, user=alice)
    response = c.post(reverse("writer:option_version_restore", args=[first.pk, 2]), follow=True)
    assert "stays as it was accepted" in response.content.decode()
    assert OptionVersion.objects.filter(option=first).count() == 3


def test_restoring_a_reader_s_option_clears_ratings_of_the_text_before(users, client_for):
    alice, rita = users["alice"], users["rita"]
    story = story_with_chapters(owner=alice, chapters=1)
    gen = _request(story, rita, GenerationRequest.Kind.READER)
    first, second = gen.options.get(index=0), gen.options.get(index=1)
    _add_version(first, "One, written again for rita.", rita)
    OptionRating.objects.create(option=first, reader=rita, stars=2, writer="smollm2")
    OptionRating.objects.create(option=second, reader=rita, stars=5, writer="smollm2")
    OptionPreference.objects.create(
        request=gen, user=rita, source="reader", chosen=second, rejected=first, chosen_writer="s", rejected_writer="s"
    )
    # The story's author sees the request but does not restore a reader's option: 403.
    assert client_for("alice").post(reverse("writer:option_version_restore", args=[first.pk, 1])).status_code == 403
    response = client_for("rita").post(reverse("writer:option_version_restore", args=[first.pk, 1]), follow=True)
    assert "were cleared" in response.content.decode()
    assert list(OptionRating.objects.values_list("option_id", "stars")) == [(second.pk, 5)]
    assert not OptionPreference.objects.exists()


def test_restoring_a_branded_option_sends_it_back_to_review_and_hides_it_from_the_reader(users, client_for, settings):
    alice, rita, mia = users["alice"], users["rita"], users["mia"]
    story = story_with_chapters(owner=alice, chapters=1, is_published=True)
    brand_services.story_brand_settings_update(story=story, opt_in=True)
    brand = approved_brand(name="Tidewave", managers=[mia], description="Surfboards.")
    asset = brand_services.asset_create(brand=brand, kind="product", name="Board", terms="Tidewave")
    gen = _request(story, rita, GenerationRequest.Kind.READER, texts=("Plain one.",), use_brands=True)
    option = gen.options.get()
    # Version 1 named the brand and was never approved; version 2 (the current text) is approved.
    branded = "Rita waxed her Tidewave board at dawn."
    GenerationOption.objects.filter(pk=option.pk).update(
        text=branded, raw_output=branded, brand=brand, asset=asset, placement_found=True,
        mentions=mention_spans(find_mentions(branded, asset.terms)), review_status=ReviewStatus.PENDING,
    )
    option.refresh_from_db()
    _add_version(option, "Rita waxed her Tidewave board at noon.", rita)
    option.refresh_from_db()
    brand_services.option_approve(option=option, reviewer=mia)
    option.refresh_from_db()
    assert option.review_status == ReviewStatus.APPROVED and option.approved_text_hash == text_hash(option.text)
    # The reader sees the approved current text, but not version 1, which its brand never approved.
    r = client_for("rita")
    page = r.get(reverse("writer:option_versions", args=[option.pk])).content.decode()
    assert "at noon" in page and "at dawn" not in page and "has not approved it" in page
    compare = r.get(reverse("writer:option_version_compare", args=[option.pk]), {"a": 1, "b": 2}, follow=True)
    assert "at dawn" not in compare.content.decode() and "waiting for a brand" in compare.content.decode()
    # Restoring version 1: a new text, so the approval no longer holds; it waits for the brand again.
    versions.option_version_restore(option=option, version=OptionVersion.objects.get(option=option, number=1), user=rita)
    option.refresh_from_db()
    assert option.text == branded and option.review_status == ReviewStatus.PENDING
    assert (option.approved_text_hash, option.reviewed_by, option.review_reason) == ("", None, "")
    assert not option.visible_to_requester
    assert r.get(reverse("writer:option_versions", args=[option.pk])).status_code == 404
    assert "at dawn" not in r.get(gen.get_absolute_url()).content.decode()
    # The story's author and the brand's review still see it.
    assert "at dawn" in client_for("alice").get(reverse("writer:option_versions", args=[option.pk])).content.decode()


def test_an_option_from_before_versions_reads_as_version_1_without_a_write(users, client_for):
    story = story_with_chapters(owner=users["alice"], chapters=1)
    gen = _request(story, users["alice"])
    option = gen.options.get(index=0)
    page = client_for("alice").get(reverse("writer:option_versions", args=[option.pk])).content.decode()
    assert "Version 1" in page and "Written by the writer" in page and "alice" in page
    assert not OptionVersion.objects.exists()
    response = client_for("alice").post(reverse("writer:option_version_restore", args=[option.pk, 1]), follow=True)
    assert "current text already" in response.content.decode()
    assert not OptionVersion.objects.exists() or OptionVersion.objects.filter(option=option).count() == 1


def test_chapter_versions_are_the_author_s_only(users, client_for):
    story = story_with_chapters(owner=users["alice"], chapters=1, is_published=True)
    url = reverse("writer:chapter_versions", args=[story.slug, 1])
    assert client_for("bob").get(url).status_code == 403
    assert client_for("rita").get(url).status_code == 403
    assert client_for("alice").get(reverse("writer:chapter_versions", args=[story.slug, 9])).status_code == 404
    assert Chapter.objects.filter(story=story).count() == 1
