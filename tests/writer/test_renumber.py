"""Renumbering chapters (issue 18, item 5): deleting, moving or reordering a chapter updates the other chapters'
numbers with one UPDATE of constant size, never a statement (or a CASE branch) per chapter and never a read
of every chapter's text; the numbers stay 1..N with no gap, and the deferred unique (story, number) holds."""

from __future__ import annotations

import pytest
from django.db import connection
from django.urls import reverse

from mesu_web.errors import ApplicationError
from tests.factories import StoryFactory
from writer import services
from writer.models import Chapter

# Statements per operation, whatever the story's length: the story's lock, the chapter's number (or the
# story's ids for a reorder), the delete and its cascades, one UPDATE of the numbers, the story's updated_at,
# and the savepoints of the atomic blocks.
MAX_STATEMENTS = 12
# Bytes of SQL a delete or a move sends, whatever the story's length: before, the renumbering was one
# CASE branch per chapter (~40 bytes each: 80 KB at 2,000 chapters).
MAX_SQL_BYTES = 4_000


def _story(owner, chapters: int):  # noqa: ANN001, ANN202
    story = StoryFactory(owner=owner)
    Chapter.objects.bulk_create(
        Chapter(story=story, number=i, title=f"Mile {i}", text=f"Mile {i}.") for i in range(1, chapters + 1)
    )
    return story


def _titles(story) -> list[str]:  # noqa: ANN001
    return list(Chapter.objects.filter(story=story).order_by("number").values_list("title", flat=True))


def _assert_one_to_n(story, count: int) -> None:  # noqa: ANN001
    numbers = list(Chapter.objects.filter(story=story).order_by("number").values_list("number", flat=True))
    assert numbers == list(range(1, count + 1))
    with connection.cursor() as cursor:  # the deferred unique constraint, checked now rather than at commit
        cursor.execute("SET CONSTRAINTS chapter_unique_number IMMEDIATE")
        cursor.execute("SET CONSTRAINTS chapter_unique_number DEFERRED")


def _chapter_writes(queries: list[dict]) -> list[str]:
    return [q["sql"] for q in queries if q["sql"].startswith('UPDATE "writer_chapter"')]


def _reads_text(queries: list[dict]) -> bool:
    return any(q["sql"].startswith("SELECT") and '"writer_chapter"."text"' in q["sql"] for q in queries)


@pytest.mark.parametrize("count", [50, 2000])
def test_delete_renumbers_in_one_small_statement(users, django_assert_max_num_queries, count):
    story = _story(users["alice"], count)
    victim = Chapter.objects.get(story=story, number=3)
    with django_assert_max_num_queries(MAX_STATEMENTS) as captured:
        services.chapter_delete(chapter=victim)
    queries = captured.captured_queries
    assert len(_chapter_writes(queries)) == 1 and not _reads_text(queries)
    assert sum(len(q["sql"]) for q in queries) < MAX_SQL_BYTES
    _assert_one_to_n(story, count - 1)
    titles = _titles(story)
    assert titles[:3] == ["Mile 1", "Mile 2", "Mile 4"] and titles[-1] == f"Mile {count}"


@pytest.mark.parametrize("count", [50, 2000])
@pytest.mark.parametrize(("number", "direction", "swapped"), [(2, "up", 1), (2, "down", 3)])
def test_move_swaps_two_rows_in_one_statement(
    users, django_assert_max_num_queries, count, number, direction, swapped
):
    story = _story(users["alice"], count)
    chapter = Chapter.objects.get(story=story, number=number)
    with django_assert_max_num_queries(MAX_STATEMENTS) as captured:
        services.chapter_move(chapter=chapter, direction=direction)
    queries = captured.captured_queries
    assert len(_chapter_writes(queries)) == 1 and not _reads_text(queries)
    assert sum(len(q["sql"]) for q in queries) < MAX_SQL_BYTES
    _assert_one_to_n(story, count)
    expected = [f"Mile {i}" for i in range(1, count + 1)]
    expected[number - 1], expected[swapped - 1] = expected[swapped - 1], expected[number - 1]
    assert _titles(story) == expected


@pytest.mark.parametrize("count", [50, 2000])
def test_reorder_is_one_update_without_reading_the_chapters(users, django_assert_max_num_queries, count):
    story = _story(users["alice"], count)
    ids = list(Chapter.objects.filter(story=story).order_by("number").values_list("pk", flat=True))
    new_order = ids[::-1]
    with django_assert_max_num_queries(MAX_STATEMENTS) as captured:
        services.chapters_reorder(story=story, chapter_ids=new_order)
    queries = captured.captured_queries
    assert len(_chapter_writes(queries)) == 1 and not _reads_text(queries)
    _assert_one_to_n(story, count)
    assert (
        list(Chapter.objects.filter(story=story).order_by("number").values_list("pk", flat=True)) == new_order
    )


def test_the_ends_cannot_move_past_themselves_and_nothing_changes(users):
    story = _story(users["alice"], 3)
    first, last = Chapter.objects.get(story=story, number=1), Chapter.objects.get(story=story, number=3)
    with pytest.raises(ApplicationError, match="Chapter 1 cannot move up"):
        services.chapter_move(chapter=first, direction="up")
    with pytest.raises(ApplicationError, match="Chapter 3 cannot move down"):
        services.chapter_move(chapter=last, direction="down")
    with pytest.raises(ApplicationError, match="up or down"):
        services.chapter_move(chapter=last, direction="sideways")
    _assert_one_to_n(story, 3)
    assert _titles(story) == ["Mile 1", "Mile 2", "Mile 3"]


def test_a_run_of_deletes_and_moves_keeps_one_to_n(users):
    story = _story(users["alice"], 12)
    services.chapter_delete(chapter=Chapter.objects.get(story=story, number=12))  # the last
    services.chapter_delete(chapter=Chapter.objects.get(story=story, number=1))  # the first
    services.chapter_move(chapter=Chapter.objects.get(story=story, number=10), direction="up")
    services.chapter_move(chapter=Chapter.objects.get(story=story, number=1), direction="down")
    services.chapter_delete(chapter=Chapter.objects.get(story=story, number=5))
    _assert_one_to_n(story, 9)
    assert _titles(story) == [f"Mile {i}" for i in (3, 2, 4, 5, 7, 8, 9, 11, 10)]


def test_a_stale_chapter_moves_from_where_it_is_now(users):
    """The page's chapter object may be older than the row: the move and the delete read its number again."""
    story = _story(users["alice"], 4)
    stale = Chapter.objects.get(story=story, number=4)
    services.chapter_delete(chapter=Chapter.objects.get(story=story, number=1))  # "Mile 4" is now chapter 3
    services.chapter_move(chapter=stale, direction="up")
    assert _titles(story) == ["Mile 2", "Mile 4", "Mile 3"]
    services.chapter_delete(chapter=stale)
    services.chapter_delete(chapter=stale)  # a second click: nothing more happens
    _assert_one_to_n(story, 2)
    assert _titles(story) == ["Mile 2", "Mile 3"]


@pytest.mark.parametrize("action", ["chapter_move", "chapter_delete"])
@pytest.mark.parametrize("number", [0, 4, 99999999999999999999])
def test_the_pages_404_on_a_chapter_that_is_not_there(client_for, users, action, number):
    story = _story(users["alice"], 3)
    url = reverse(f"writer:{action}", args=[story.slug, 1]).replace("/1/", f"/{number}/")
    assert client_for("alice").post(url, {"direction": "up"}).status_code == 404
    _assert_one_to_n(story, 3)


def test_the_pages_move_and_delete_through_the_services(client_for, users):
    story = _story(users["alice"], 3)
    c = client_for("alice")
    assert (
        c.post(reverse("writer:chapter_move", args=[story.slug, 3]), {"direction": "up"}).status_code == 302
    )
    response = c.post(
        reverse("writer:chapter_move", args=[story.slug, 3]), {"direction": "down"}, follow=True
    )
    assert "Chapter 3 cannot move down." in response.content.decode()
    assert c.post(reverse("writer:chapter_delete", args=[story.slug, 1])).status_code == 302
    _assert_one_to_n(story, 2)
    assert _titles(story) == ["Mile 3", "Mile 2"]
