"""Story addresses tell nothing of other users' stories (issue 18, item 4). Before, a new story's slug took
"-2", "-3", ... after any taken slug: a visitor who created "Secret Title" and got "secret-title-2" learned
that another author has a draft of that name. Now every new story's slug is its title's slug and a random
suffix, drawn the same way whether or not such a story exists."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from django.urls import reverse

from mesu_web.slugs import SUFFIX_ALPHABET, SUFFIX_LENGTH, private_slug
from tests.factories import StoryFactory
from writer import services
from writer.models import Story

SHAPE = re.compile(rf"^secret-title-[{SUFFIX_ALPHABET}]{{{SUFFIX_LENGTH}}}$")
DRAWS = 150  # slugs drawn in each world


def _bobs_slugs(bob, count: int) -> list[str]:  # noqa: ANN001
    return [services.story_create(owner=bob, title="Secret Title").slug for _ in range(count)]


def _suffix_letters(slugs: list[str]) -> Counter[str]:
    return Counter("".join(slug.removeprefix("secret-title-") for slug in slugs))


def test_the_slug_a_user_gets_does_not_depend_on_another_users_draft(users):
    bob = users["bob"]
    without = _bobs_slugs(bob, DRAWS)
    # Alice's hidden drafts: one made by the service, and the addresses the old scheme handed out.
    hidden = services.story_create(owner=users["alice"], title="Secret Title")
    for slug in ("secret-title", "secret-title-2", "secret-title-3"):
        StoryFactory(owner=users["alice"], title="Secret Title", slug=slug, is_published=False)
    with_hidden = _bobs_slugs(bob, DRAWS)

    assert not hidden.is_published and SHAPE.match(hidden.slug)
    # The same shape in both worlds, never the bare title or a counted suffix...
    assert all(SHAPE.match(slug) for slug in without + with_hidden), (without[:3], with_hidden[:3])
    assert len(set(without + with_hidden + [hidden.slug])) == 2 * DRAWS + 1
    # ... and the same spread of suffixes: the total-variation distance between the two worlds' suffix letters
    # (150 x 6 = 900 each, over 31 letters) is ~0.10 for two uniform samples and never reached 0.19 in
    # 30,000 simulated pairs; a suffix that depended on the hidden story would be far apart.
    a, b = _suffix_letters(without), _suffix_letters(with_hidden)
    distance = sum(abs(a[c] - b[c]) for c in SUFFIX_ALPHABET) / (2 * DRAWS * SUFFIX_LENGTH)
    assert distance < 0.25, (a, b)
    assert len(a) == len(b) == len(SUFFIX_ALPHABET)  # every letter drawn in both: spread, not a few values


def test_the_draw_never_asks_whether_the_bare_slug_exists():
    """Existence can only change the outcome through `taken`: it is asked about suffixed slugs only, and
    a taken one is drawn again, never counted up from."""
    asked: list[str] = []

    def taken(slug: str) -> bool:
        asked.append(slug)
        return len(asked) < 3  # the first two draws clash

    slug = private_slug("Secret Title", taken=taken, fallback="story")
    assert slug == asked[-1] and len(asked) == 3 and len(set(asked)) == 3
    assert all(SHAPE.match(s) for s in asked) and "secret-title" not in asked


@pytest.mark.parametrize(
    ("title", "base"), [("!!!", "story"), ("Café Lumière — Part 2", "cafe-lumiere-part-2")]
)
def test_slugs_stay_readable_and_fit_the_column(title, base):
    slug = private_slug(title, taken=lambda s: False, fallback="story")
    assert slug.startswith(f"{base}-") and len(slug) == len(base) + 1 + SUFFIX_LENGTH
    long_slug = private_slug("word " * 100, taken=lambda s: False, fallback="story")
    assert len(long_slug) <= Story._meta.get_field("slug").max_length


def test_the_create_page_gives_a_private_address(client_for, users):
    StoryFactory(owner=users["alice"], title="Secret Title", slug="secret-title", is_published=False)
    response = client_for("bob").post(reverse("writer:story_create"), {"title": "Secret Title"})
    assert response.status_code == 302
    story = Story.objects.get(owner=users["bob"], title="Secret Title")
    assert SHAPE.match(story.slug) and story.slug in response["Location"]
    assert "secret-title-2" not in response["Location"]
