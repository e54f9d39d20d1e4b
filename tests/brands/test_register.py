"""The public placement register (issue 17, part 4): approved placements of published stories only,
newest first, paginated, with first and last impression dates; open to anyone, a read that writes nothing."""

from __future__ import annotations

from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from brands import measurement
from brands.models import PlacementView
from tests.brands.test_measurement import _redis_cache, approved_option, sponsored_world  # noqa: F401
from tests.factories import story_with_chapters
from writer.models import GenerationOption, GenerationRequest, ReviewStatus

URL = reverse("brands:placement_register")


def test_the_register_lists_only_approved_placements_of_published_stories(users, client):
    world = sponsored_world(users)
    draft_story = story_with_chapters(owner=users["alice"], chapters=1, slug="secret-draft", is_published=False,
                                      title="Secret Draft")
    gen = GenerationRequest.objects.create(
        story=draft_story, requested_by=users["alice"], kind=GenerationRequest.Kind.AUTHOR, engine="vllm",
        max_new_tokens=24, next_number=2, n=2, status=GenerationRequest.Status.SUCCEEDED,
    )
    approved_option(gen, index=0, asset=world.asset, campaign=world.campaign)  # approved, but a draft story
    gen_ross = GenerationRequest.objects.create(
        story=world.story, requested_by=users["ross"], kind=GenerationRequest.Kind.READER, engine="vllm",
        max_new_tokens=24, next_number=4, n=1, status=GenerationRequest.Status.SUCCEEDED,
    )
    pending = approved_option(gen_ross, index=0, asset=world.asset, campaign=world.campaign)
    GenerationOption.objects.filter(pk=pending.pk).update(review_status=ReviewStatus.PENDING)

    response = client.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Secret Draft" not in html
    assert html.count("<td>Tidewave</td>") == 2  # the chapter and rita's own chapter, not the pending one
    assert f'href="{world.chapter_url}">Chapter 4</a>' in html
    assert "A reader's own chapter" in html
    assert "rita" not in html  # no reader is named
    page = measurement.placement_register_page(number=1)
    assert {row.story_title for row in page.object_list} == {"Tide Stories"}


def test_first_and_last_impressions_and_newest_first(users):
    world = sponsored_world(users)
    now = timezone.now()
    GenerationOption.objects.filter(pk=world.author_option.pk).update(reviewed_at=now - timedelta(days=3))
    GenerationOption.objects.filter(pk=world.rita_option.pk).update(reviewed_at=now - timedelta(days=1))
    for user, days in ((users["ross"], 2), (users["rita"], 1), (users["bob"], 0)):
        view = PlacementView.objects.create(option=world.author_option, brand=world.brand, user=user)
        PlacementView.objects.filter(pk=view.pk).update(created_at=now - timedelta(days=days))
    rows = measurement.placement_register_page(number=1).object_list
    assert [r.chapter_number for r in rows] == [None, 4]  # rita's request approved later: first
    assert rows[1].first_impression.date() == (now - timedelta(days=2)).date()
    assert rows[1].last_impression.date() == now.date()
    assert rows[0].first_impression is None


def test_the_register_is_paginated_and_survives_bad_page_numbers(users, client):
    world = sponsored_world(users)
    for _ in range(3):
        gen = GenerationRequest.objects.create(
            story=world.story, requested_by=users["ross"], kind=GenerationRequest.Kind.READER, engine="vllm",
            max_new_tokens=24, next_number=4, n=1, status=GenerationRequest.Status.SUCCEEDED,
        )
        approved_option(gen, index=0, asset=world.asset, campaign=world.campaign)
    page = measurement.placement_register_page(number=2, per_page=2)
    assert page.number == 2 and len(page.object_list) == 2 and page.paginator.num_pages == 3
    for bad in ("x", "-1", "99999", "1;DROP"):
        assert client.get(URL, {"page": bad}).status_code == 200


def test_reading_the_register_writes_nothing(users, client):
    sponsored_world(users)
    views = PlacementView.objects.count()
    client.get(URL)
    assert PlacementView.objects.count() == views
