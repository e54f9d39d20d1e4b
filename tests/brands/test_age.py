"""The reader's age (issue 17): asked at sign-up (required for readers), said later on the sponsorship page
when it was not, and a reader under 18 never gets a placement, whatever they asked."""

from __future__ import annotations

import pytest

from brands import matching, services
from brands.models import AgeBracket, ReaderSponsorshipPreference
from brands.suitability import reader_age_bracket, reader_age_set, reader_placement_block
from tests.factories import PASSWORD, ChapterFactory, StoryFactory, UserFactory, approved_brand, live_campaign
from writer import services as writer_services
from writer.models import GenerationRequest

pytestmark = pytest.mark.django_db


@pytest.fixture
def surf_story(users):
    """A published seaside story, opted in, and a surf brand with a live campaign that matches it."""
    story = StoryFactory(
        owner=users["alice"],
        title="Summer Swell",
        genre="coming-of-age",
        tags=["seaside", "summer", "friendship"],
        summary="Two friends spend the summer in a windy beach town, swimming at dawn and learning to ride the waves.",
        setting="Porthwen, a small harbour town on the Cornish coast, with a long sandy beach.",
    )
    ChapterFactory(
        story=story, number=1,
        text="Mara paddled out past the breakers. The waves rolled in green and cold, and her board was slick "
        "with salt water. Theo whooped from the sand as she stood up for the first time.",
    )  # fmt: skip
    surf = approved_brand(
        name="Tidewave", managers=[users["mia"]],
        description="Surfboards, wetsuits and beach gear for cold-water coasts: learning to surf, summers by the sea.",
    )  # fmt: skip
    services.asset_create(
        brand=surf, kind="product", name="Tidewave Glide", description="A soft-top longboard for beginners.",
        terms=["Tidewave Glide"],
    )  # fmt: skip
    services.assets_embed_missing()
    live_campaign(surf)
    services.story_brand_settings_update(story=story, opt_in=True)
    return story, surf


def reader(name: str, bracket: str | None):  # noqa: ANN201
    user = UserFactory(username=name, roles=["reader"])
    if bracket is not None:
        reader_age_set(user=user, adult=bracket == AgeBracket.ADULT)
    return user


def test_an_under_18_reader_gets_no_placement_with_the_note(surf_story):
    story, _ = surf_story
    young = reader("young", AgeBracket.UNDER_18)
    assert reader_placement_block(reader=young) == "the reader said they are under 18."
    assert matching.brand_use_for_request(story=story, reader=young, use_brands=True) == (
        False,
        "No brand placement: the reader said they are under 18.",
    )
    request = writer_services.generation_request_create(
        story=story, user=young, kind=GenerationRequest.Kind.READER, use_brands=True, enqueue=False
    )
    assert request.use_brands is False
    assert request.brand_note == "No brand placement: the reader said they are under 18."
    # Not asked for: no placement either (and no note to read)
    quiet = writer_services.generation_request_create(
        story=story, user=young, kind=GenerationRequest.Kind.READER, enqueue=False
    )
    assert quiet.use_brands is False


@pytest.mark.parametrize("bracket", [AgeBracket.ADULT, None])
def test_an_adult_or_a_reader_who_did_not_say_gets_placements(surf_story, bracket):
    story, surf = surf_story
    adult = reader("grown", bracket)
    assert reader_placement_block(reader=adult) == ""
    request = writer_services.generation_request_create(
        story=story, user=adult, kind=GenerationRequest.Kind.READER, use_brands=True, enqueue=False
    )
    assert request.use_brands is True and request.brand_note == ""
    plans = matching.option_plans_for_request(story=story, preference="", n=2, reader=adult)
    assert {plan.brand_id for plan in plans.plans} == {surf.pk}, plans.note


def test_anonymous_and_no_reader_are_never_blocked_by_age():
    from django.contrib.auth.models import AnonymousUser

    assert reader_placement_block(reader=None) == ""
    assert reader_placement_block(reader=AnonymousUser()) == ""


def test_signup_asks_readers_their_age(client, db):
    page = client.get("/signup/")
    assert b"Are you 18 or older?" in page.content
    data = {"username": "teen", "password1": PASSWORD, "password2": PASSWORD, "role": "reader"}
    refused = client.post("/signup/", data)
    assert refused.status_code == 200 and b"Readers: tell us whether you are 18 or older." in refused.content
    assert not ReaderSponsorshipPreference.objects.exists()
    assert client.post("/signup/", {**data, "adult": "maybe"}).status_code == 200  # not a choice
    response = client.post("/signup/", {**data, "adult": "no"})
    assert response.status_code == 302
    teen = ReaderSponsorshipPreference.objects.get(user__username="teen")
    assert teen.age_bracket == AgeBracket.UNDER_18


def test_signup_lets_authors_skip_the_age(client, db):
    data = {"username": "writer", "password1": PASSWORD, "password2": PASSWORD, "role": "author"}
    assert client.post("/signup/", data).status_code == 302
    assert reader_age_bracket(user=UserFactory(username="writer")) == AgeBracket.UNKNOWN
    client.logout()
    data = {**data, "username": "writer2", "adult": "yes"}
    assert client.post("/signup/", data).status_code == 302
    assert reader_age_bracket(user=UserFactory(username="writer2")) == AgeBracket.ADULT


def test_a_reader_who_did_not_say_says_it_once_on_the_sponsorship_page(users, client_for):
    rita = client_for("rita")
    page = rita.get("/brands/sponsorship/")
    assert b"Are you 18 or older?" in page.content
    assert rita.post("/brands/sponsorship/age/", {"adult": "perhaps"}).status_code == 302
    assert reader_age_bracket(user=users["rita"]) == AgeBracket.UNKNOWN
    assert rita.post("/brands/sponsorship/age/", {"adult": "no"}).status_code == 302
    assert reader_age_bracket(user=users["rita"]) == AgeBracket.UNDER_18
    # said once: the page cannot undo it
    followed = rita.post("/brands/sponsorship/age/", {"adult": "yes"}, follow=True)
    assert b"You have already told us your age." in followed.content
    assert reader_age_bracket(user=users["rita"]) == AgeBracket.UNDER_18
    assert b"under 18" in rita.get("/brands/sponsorship/").content
    # the sponsored-chapters switch is kept as it was
    assert ReaderSponsorshipPreference.objects.get(user=users["rita"]).sponsored_chapters_enabled
