"""The cached parts of the story page and the review queue (mesu_web.fragments): a second view is served
from the cache, and every change the services make shows at the very next view: a new chapter, an edited
title, a moved or deleted chapter, edited story details, a new request or a request's new status, a new
branch, and a review decision. Viewers who see a page differently never share its cached parts."""

from __future__ import annotations

from unittest import mock

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from brands import services as brand_services
from brands.models import Brand, BrandAsset
from tests.factories import story_with_chapters
from writer import bible, branches, services
from writer.models import Chapter, GenerationOption, GenerationRequest, ReviewStatus


def _page(client, url: str) -> str:  # noqa: ANN001
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


def _queries(client, url: str) -> int:  # noqa: ANN001
    with CaptureQueriesContext(connection) as ctx:
        _page(client, url)
    return len(ctx.captured_queries)


def _request(story, user, *, kind=GenerationRequest.Kind.AUTHOR, status=GenerationRequest.Status.SUCCEEDED):  # noqa: ANN001, ANN202
    return GenerationRequest.objects.create(
        story=story, requested_by=user, kind=kind, engine="local", max_new_tokens=24, next_number=4, status=status
    )


@pytest.fixture
def story(users):
    return story_with_chapters(owner=users["alice"], chapters=3, title="Salt Stall", slug="salt-stall")


@pytest.fixture
def url(story):  # noqa: ANN001
    return reverse("writer:story_detail", args=[story.slug])


# --- The story page ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_second_view_of_the_story_page_comes_from_the_cache(story, url, users, client_for):
    alice = client_for("alice")
    _request(story, users["alice"])  # the list of requests is cached too
    first, second = _queries(alice, url), _queries(alice, url)
    assert second == first - 1  # the page of chapters is not read again
    with mock.patch("mesu_web.fragments.render_to_string") as render:
        html = _page(alice, url)
    render.assert_not_called()  # the details, the chapters and the requests all came from the cache
    assert "Chapter 3" in html and "Requests for this story" in html


@pytest.mark.django_db
def test_chapter_changes_show_at_once(story, url, client_for):
    alice, rita = client_for("alice"), client_for("rita")
    for client in (alice, rita):
        assert "Chapter 3" in _page(client, url) and "A new dawn" not in _page(client, url)

    services.chapter_add(story=story, text="The ferry came early.", title="A new dawn")
    for client in (alice, rita):
        assert "A new dawn" in _page(client, url)

    chapter = Chapter.objects.get(story=story, number=2)
    services.chapter_update(chapter=chapter, text=chapter.text, title="Low tide")
    assert "Low tide" in _page(rita, url)

    services.chapter_move(chapter=Chapter.objects.get(story=story, number=4), direction="up")
    html = _page(alice, url)
    assert html.index("A new dawn") < html.index("Chapter 3")

    services.chapter_delete(chapter=Chapter.objects.get(story=story, number=1))
    html = _page(rita, url)
    assert "Chapter 1<" not in html and html.count('href="/s/salt-stall/chapters/') == 3
    # The numbers moved with the deletion: the links follow them.
    assert reverse("writer:chapter_detail", args=[story.slug, 4]) not in html


@pytest.mark.django_db
def test_a_chapter_edited_outside_the_services_shows_too(story, url, client_for):
    """The admin saves a chapter without touching its story: its own updated_at is in the key."""
    rita = client_for("rita")
    _page(rita, url)
    chapter = Chapter.objects.get(story=story, number=3)
    chapter.title = "Renamed in the admin"
    chapter.save()
    assert "Renamed in the admin" in _page(rita, url)


@pytest.mark.django_db
def test_story_details_show_at_once(story, url, client_for):
    alice, rita = client_for("alice"), client_for("rita")
    _page(alice, url), _page(rita, url)
    services.story_update(story=story, summary="A storm closes the harbour.", author_note="Keep it cosy.")
    html = _page(alice, url)
    assert "A storm closes the harbour." in html and "Keep it cosy." in html
    assert "Keep it cosy." not in _page(rita, url)  # only the author sees the note

    assert ">Unpublish</button>" in html
    services.story_set_published(story=story, published=False)
    html = _page(alice, url)
    assert ">Publish</button>" in html and 'name="publish" value="1"' in html


@pytest.mark.django_db
def test_the_authors_tools_and_forms_are_never_shared(story, url, client_for):
    """The author's view is cached first; a reader's view of the same page has none of the author's tools,
    and the author's forms still carry a CSRF token and post to the right place."""
    html = _page(client_for("alice"), url)
    assert 'form="chapter-tools"' in html and 'id="chapter-tools"' in html and "csrfmiddlewaretoken" in html
    reader = _page(client_for("rita"), url)
    assert 'form="chapter-tools"' not in reader and "Edit details" not in reader
    assert "Export your copy" in reader and "Export the story" not in reader
    assert "Your own next chapter" in reader


@pytest.mark.django_db
def test_the_chapter_tools_post_with_the_token(story, url, users):
    """The author's buttons post the page's one form (its CSRF token) to each chapter's own address."""
    from django.test import Client

    alice = Client(enforce_csrf_checks=True)
    alice.force_login(users["alice"])
    html = _page(alice, url)
    token = html.split('name="csrfmiddlewaretoken" value="', 1)[1].split('"', 1)[0]
    move = reverse("writer:chapter_move", args=[story.slug, 2])
    assert f'formaction="{move}" name="direction" value="up"' in html
    response = alice.post(move, {"direction": "up", "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert Chapter.objects.get(story=story, number=1).text.startswith("Chapter 2 begins.")


@pytest.mark.django_db
def test_requests_show_at_once(story, url, users, client_for):
    alice, rita, ross = client_for("alice"), client_for("rita"), client_for("ross")
    assert "Requests for this story" not in _page(alice, url)
    gen = _request(story, users["rita"], kind=GenerationRequest.Kind.READER, status=GenerationRequest.Status.QUEUED)
    html = _page(alice, url)
    assert "Requests for this story" in html and "Queued" in html and "· rita" in html
    assert "Your requests" in _page(rita, url)
    assert "Your requests" not in _page(ross, url)  # another reader's requests are not theirs

    GenerationRequest.objects.filter(pk=gen.pk).update(status=GenerationRequest.Status.RUNNING)  # as the task does
    assert "Running" in _page(alice, url) and "Running" in _page(rita, url)
    GenerationRequest.objects.filter(pk=gen.pk).update(status=GenerationRequest.Status.QUEUED)  # the sweep requeues
    assert "Queued" in _page(rita, url) and "Running" not in _page(rita, url)


@pytest.mark.django_db
def test_a_new_branch_shows_at_once(story, url, users, client_for):
    rita = client_for("rita")
    assert "Branches" not in _page(rita, url)
    branch = branches.story_branch(story=story, user=users["alice"], chapter_number=2)
    assert "Branches" not in _page(rita, url)  # a draft branch: only its author sees it
    assert branch.title in _page(client_for("alice"), url)
    services.story_set_published(story=branch, published=True)
    assert branch.title in _page(rita, url)


@pytest.mark.django_db
def test_a_new_bible_entry_shows_on_the_bible_page(story, url, client_for):
    """The story bible page is not cached; the story page's cached parts do not hide a new entry."""
    alice = client_for("alice")
    _page(alice, url)
    bible.entry_create(story=story, name="Juno Vale", description="The ferry's captain.")
    assert "Juno Vale" in _page(alice, reverse("writer:bible", args=[story.slug]))
    assert "Story bible" in _page(alice, url)


@pytest.mark.django_db
def test_the_page_is_served_when_the_cache_is_unreachable(story, url, client_for):
    with mock.patch.object(cache, "get_many", side_effect=ConnectionError("Redis is down")):
        html = _page(client_for("alice"), url)
    assert "Chapter 3" in html


# --- The review queue --------------------------------------------------------------------------------


@pytest.fixture
def queue(users, story):  # noqa: ANN001
    """Two requests of alice's story, each with a placement of mia's brand waiting for review."""
    brand = Brand.objects.create(
        name="Tidewave", slug="tidewave", description="Surfboards.", approval=Brand.Approval.APPROVED
    )
    brand.managers.set([users["mia"]])
    asset = BrandAsset.objects.create(brand=brand, kind="product", name="Tidewave board", terms=["Tidewave"])
    options = []
    for _ in range(2):
        gen = _request(story, users["alice"])
        options.append(
            GenerationOption.objects.create(
                request=gen, index=0, text="Tidewave at dawn.", format_ok=True, brand=brand, asset=asset,
                mentions=[[0, 8]], placement_found=True, review_status=ReviewStatus.PENDING,
            )
        )
    return brand, asset, options


@pytest.mark.django_db
def test_review_decisions_and_new_placements_show_at_once(queue, users, client_for):
    brand, asset, (first, second) = queue
    mia, url = client_for("mia"), reverse("brands:review_queue")
    detail = reverse("brands:review_detail", args=[first.pk])
    html = _page(mia, url)
    assert "2 waiting" in html and detail in html
    with mock.patch("mesu_web.fragments.render_to_string") as render:
        assert detail in _page(mia, url)
    render.assert_not_called()  # the second view's rows came from the cache

    brand_services.option_approve(option=first, reviewer=users["mia"])
    html = _page(mia, url)
    assert "1 waiting" in html and detail not in html

    gen = _request(first.request.story, users["alice"])
    third = GenerationOption.objects.create(
        request=gen, index=1, text="Tidewave again.", format_ok=True, brand=brand, asset=asset,
        mentions=[[0, 8]], placement_found=True, review_status=ReviewStatus.PENDING,
    )
    html = _page(mia, url)
    assert "2 waiting" in html and reverse("brands:review_detail", args=[third.pk]) in html
    assert "Option 2" in html

    Brand.objects.filter(pk=brand.pk).update(name="Tidewave Surf Co.")  # renamed in the admin
    assert "Tidewave Surf Co." in _page(mia, url)
    assert second.pk in [o.pk for _, rows in mia.get(url).context["groups"] for o in rows]
