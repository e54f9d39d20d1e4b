"""Each page's query count is constant in the data size (issue 6, load).

Every page is built at a small size and at a 10x larger one, and must run the same number of queries
at both, and no more than an explicit bound. The pages: the story page (as its author and as a
reader), the reader's pages (their personalised request, a sponsored chapter with the disclosure
label), the author's request page with an accepted option, and a manager's review queue.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from brands.models import Brand, BrandAsset
from brands.selectors import review_queue_for_manager
from mesu_web.notifications.models import Notification
from tests.factories import CHAPTER_TEXT, StoryFactory
from writer.models import Chapter, GenerationOption, GenerationRequest, ReviewStatus, Story

SMALL = 30  # chapters, requests and pending placements of the small world
LARGE = 10 * SMALL  # ... and of the large one: beyond every page size, so pagination must cut it

# Queries per page, at most. Every logged-in page: the session, the user, their roles (groups) and the
# header's unread count = 4 (a brand manager's header also counts their review queue); then the page's own.
MAX_STORY_PAGE = 4 + 3  # the story with its chapters' count; a page of its requests with theirs; a page of its
# chapters (on a cache miss only: mesu_web.fragments); its branches would add 1 (2 for a branch): none here
MAX_REQUEST_PAGE = 4 + 3  # the request, its options, the reader's view of the sponsored one (once seen)
# the story; the chapter with its last chapter's number and its sponsor; the disclosure's option and the
# reader's age (issue 17: the "Why am I seeing this?" panel and the under-18 rule)
MAX_CHAPTER_PAGE = 4 + 4
# the page's ids with the queue's length (also the header's badge), then its rows, and the count of placements
# waiting past their brand's SLA (issue 17)
MAX_REVIEW_QUEUE = 4 + 3


def _count(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return len(ctx.captured_queries)


def _requests(story: Story, user, count: int, kind: str, first_number: int) -> list[GenerationRequest]:  # noqa: ANN001
    return GenerationRequest.objects.bulk_create(
        GenerationRequest(
            story=story,
            requested_by=user,
            kind=kind,
            preference="a bit sad, not a tragedy" if kind == GenerationRequest.Kind.READER else "",
            engine="local",
            max_new_tokens=24,
            next_number=first_number,
            status=GenerationRequest.Status.SUCCEEDED,
            model_name="smollm2",
            prompt_tokens=100,
        )
        for _ in range(count)
    )


def _options(requests: list[GenerationRequest], per_request: int, **fields) -> list[GenerationOption]:  # noqa: ANN003
    return GenerationOption.objects.bulk_create(
        GenerationOption(request=r, index=i, text=f"Option {i}. {CHAPTER_TEXT}", format_ok=True, tokens=24, **fields)
        for r in requests
        for i in range(per_request)
    )


def _brands(managers: list, count: int) -> list[tuple[Brand, BrandAsset]]:
    out = []
    for i in range(count):
        brand = Brand.objects.create(
            name=f"Brand {i}", slug=f"brand-{i}", description="Surf gear.", approval=Brand.Approval.APPROVED
        )
        brand.managers.set(managers)
        asset = BrandAsset.objects.create(brand=brand, kind="product", name=f"Board {i}", terms=[f"Board {i}"])
        out.append((brand, asset))
    return out


def build_world(users, size: int) -> SimpleNamespace:  # noqa: ANN001
    """alice's published story with `size` chapters and `size` requests of each kind (3 options each),
    rita's reader request with 4 options (one sponsored), a sponsored chapter, and `size` placements
    pending review for mia across three brands; plus `size` other stories to dilute every table."""
    alice, rita, ross, mia = users["alice"], users["rita"], users["ross"], users["mia"]
    story = StoryFactory(owner=alice, title="Salt Stall", slug="salt-stall")
    Chapter.objects.bulk_create(
        Chapter(story=story, number=n, title=f"Chapter {n}", text=f"Chapter {n}. {CHAPTER_TEXT}")
        for n in range(1, size + 1)
    )
    for i in range(size):
        StoryFactory(owner=users["bob"], title=f"Other {i}", slug=f"other-{i}")
    # Unread notifications: the header shows their count.
    Notification.objects.bulk_create(
        Notification(user=user, message=f"Notice {i}") for user in (alice, rita, mia) for i in range(size)
    )
    brands = _brands([mia], 3)
    (brand, asset) = brands[0]

    # The author's requests, one of them with an accepted option; readers' requests (rita's and ross's).
    author_requests = _requests(story, alice, size, GenerationRequest.Kind.AUTHOR, size + 1)
    _options(author_requests, 3)
    accepted = GenerationOption.objects.filter(request=author_requests[0], index=0).get()
    accepted.accepted_chapter = Chapter.objects.get(story=story, number=size)
    accepted.save(update_fields=["accepted_chapter"])
    for reader in (rita, ross):
        _options(_requests(story, reader, size, GenerationRequest.Kind.READER, size + 1), 3)

    # rita's personalised chapter: 4 options, one approved (sponsored), one pending (hidden from her).
    reader_request = _requests(story, rita, 1, GenerationRequest.Kind.READER, size + 1)[0]
    GenerationOption.objects.bulk_create(
        [
            GenerationOption(request=reader_request, index=0, text=CHAPTER_TEXT, format_ok=True),
            GenerationOption(
                request=reader_request,
                index=1,
                text=f"Board 0. {CHAPTER_TEXT}",
                format_ok=True,
                brand=brand,
                asset=asset,
                placement_found=True,
                mentions=[[0, 7]],
                review_status=ReviewStatus.APPROVED,
            ),
            GenerationOption(
                request=reader_request,
                index=2,
                text=f"Board 0 again. {CHAPTER_TEXT}",
                format_ok=True,
                brand=brand,
                asset=asset,
                placement_found=True,
                mentions=[[0, 7]],
                review_status=ReviewStatus.PENDING,
            ),
            GenerationOption(request=reader_request, index=3, text="", format_ok=False, warning="No answer tags."),
        ]
    )

    # A sponsored chapter: an approved placement accepted as chapter 1.
    sponsored = GenerationOption.objects.filter(request=author_requests[1], index=0).get()
    sponsored.brand, sponsored.asset = brand, asset
    sponsored.review_status = ReviewStatus.APPROVED
    sponsored.accepted_chapter = Chapter.objects.get(story=story, number=1)
    sponsored.save()

    # Placements pending review: `size` requests of 2 options each, across mia's three brands.
    pending_requests = _requests(story, alice, size, GenerationRequest.Kind.AUTHOR, size + 1)
    for k, (b, a) in enumerate(brands):
        _options(
            pending_requests[k::3],
            2,
            brand=b,
            asset=a,
            placement_found=True,
            mentions=[[0, 7]],
            review_status=ReviewStatus.PENDING,
        )
    return SimpleNamespace(story=story, reader_request=reader_request, author_request=author_requests[0])


def _pages(world: SimpleNamespace) -> list[tuple[str, str, str, int]]:
    """(page, who, url, max queries) of each page."""
    story = world.story
    return [
        ("story page, author", "alice", reverse("writer:story_detail", args=[story.slug]), MAX_STORY_PAGE),
        ("story page, reader", "rita", reverse("writer:story_detail", args=[story.slug]), MAX_STORY_PAGE),
        ("story page, brand manager", "mia", reverse("writer:story_detail", args=[story.slug]), MAX_STORY_PAGE + 1),
        (
            "story page, author, older requests and later chapters",
            "alice",
            reverse("writer:story_detail", args=[story.slug]) + "?requests=2&chapters=2",
            MAX_STORY_PAGE,
        ),
        (
            "reader's request",
            "rita",
            reverse("writer:request_detail", args=[world.reader_request.pk]),
            MAX_REQUEST_PAGE,
        ),
        (
            "author's request",
            "alice",
            reverse("writer:request_detail", args=[world.author_request.pk]),
            MAX_REQUEST_PAGE,
        ),
        ("sponsored chapter", "rita", reverse("writer:chapter_detail", args=[story.slug, 1]), MAX_CHAPTER_PAGE),
        ("review queue", "mia", reverse("brands:review_queue"), MAX_REVIEW_QUEUE),
        ("review queue page 2", "mia", reverse("brands:review_queue") + "?page=2", MAX_REVIEW_QUEUE),
    ]


def _counts(world: SimpleNamespace, client_for) -> dict[str, int]:  # noqa: ANN001
    counts = {}
    for page, who, url, _ in _pages(world):
        client = client_for(who)
        client.get(url)  # a first view may write once (a reader's view of a sponsored chapter)
        counts[page] = _count(client, url)
    return counts


@pytest.mark.django_db
def test_query_counts_do_not_grow_with_the_data(users, client_for, django_assert_max_num_queries):
    small = _counts(build_world(users, SMALL), client_for)
    GenerationOption.objects.all().delete()
    GenerationRequest.objects.all().delete()
    Story.objects.all().delete()
    Brand.objects.all().delete()
    Notification.objects.all().delete()
    world = build_world(users, LARGE)
    large = _counts(world, client_for)
    assert large == small, {key: (small[key], large[key]) for key in small if small[key] != large[key]}

    for _, who, url, bound in _pages(world):
        client = client_for(who)
        with django_assert_max_num_queries(bound):
            assert client.get(url).status_code == 200


@pytest.mark.django_db
def test_long_lists_are_paginated(users, client_for):
    world = build_world(users, LARGE)
    url = reverse("writer:story_detail", args=[world.story.slug])
    page = client_for("alice").get(url)
    requests, chapters = page.context["requests"], page.context["chapters"]
    assert 0 < len(requests) < LARGE and requests.paginator.count == 4 * LARGE + 1
    assert 0 < len(chapters) < LARGE and chapters.paginator.count == LARGE
    html = page.content.decode()
    assert "?requests=2" in html and "?chapters=2" in html
    # The last page of chapters ends with the last chapter, whose "move down" is off; the first page's
    # first "move up" too, and no other.
    last = client_for("alice").get(f"{url}?chapters={chapters.paginator.num_pages}")
    assert [c.number for c in last.context["chapters"]][-1] == LARGE
    assert html.count('value="up" disabled') == 1 and 'value="down" disabled' not in html
    assert last.content.decode().count('value="down" disabled') == 1

    queue = client_for("mia").get(reverse("brands:review_queue"))
    shown = [o.pk for _, options in queue.context["groups"] for o in options]
    assert 0 < len(shown) < 2 * LARGE
    # rita's pending option is not counted: its request already has an approved one.
    assert f"{2 * LARGE} waiting" in queue.content.decode()
    last = queue.context["page_obj"].paginator.num_pages
    rest = client_for("mia").get(reverse("brands:review_queue") + f"?page={last}")
    assert rest.status_code == 200 and rest.context["groups"]
    # Past the end: the last page, not an error.
    beyond = client_for("mia").get(reverse("brands:review_queue") + f"?page={last + 5}")
    assert beyond.status_code == 200 and beyond.context["page_obj"].number == last
    # The pages, one after another, are the whole queue in its order.
    paged = []
    for number in range(1, last + 1):
        response = client_for("mia").get(reverse("brands:review_queue") + f"?page={number}")
        paged += [o.pk for _, options in response.context["groups"] for o in options]
    assert paged == [o.pk for o in review_queue_for_manager(user=users["mia"])]


@pytest.mark.django_db
def test_the_chapter_page_reads_its_sponsor_and_neighbours_in_one_query(users, client_for):
    world = build_world(users, SMALL)
    url = reverse("writer:chapter_detail", args=[world.story.slug, 1])
    html = client_for("rita").get(url).content.decode()
    assert "Includes a paid placement by Brand 0" in html
    assert reverse("writer:chapter_detail", args=[world.story.slug, 2]) in html  # "next"
    last = client_for("rita").get(reverse("writer:chapter_detail", args=[world.story.slug, SMALL])).content.decode()
    assert "paid placement" not in last
    assert reverse("writer:chapter_detail", args=[world.story.slug, SMALL + 1]) not in last
    assert reverse("writer:chapter_detail", args=[world.story.slug, SMALL - 1]) in last  # "previous"
