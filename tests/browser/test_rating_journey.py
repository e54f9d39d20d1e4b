"""Browser journey: the reader rates (issue 16), in real Chromium against the live app on the demo data
(`seed_demo`: ava's published stories, the reader remy, the brand manager bree).

remy logs in, opens his finished personalised chapter (three options, stored as the worker stores them),
gives option 1 five stars and option 2 two stars, says he prefers option 1, and finds it all on
"Your ratings". The rows are then checked, and nobody else may open his ratings page.

Nothing here asks the writer for text, so the vLLM server is not started: `vllm_settings` is overridden
below with the plain test settings, as in test_bible_export_journeys.py.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from writer import services
from writer.demo import DEMO_USERS, seed_demo
from writer.models import (
    GenerationOption,
    GenerationRequest,
    OptionPreference,
    OptionRating,
    ReviewStatus,
    Story,
)
from writer.preferences import writer_of
from writer.roles import READER

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LIGHTHOUSE = "The Lighthouse Keeper's Daughter"
TEXTS = (
    "Ravi knelt by the rock pool under the tower wall and named every crab out loud.",
    "Jas sold Wren a green raincoat at the vintage stall and refused to take her money.",
    "The second light blinked twice over the harbour, and nobody on Quay Street looked up.",
)


@pytest.fixture
def vllm_settings(settings):
    """This journey never generates: no model server (it takes ~60-90 s and ~5 GB to start)."""
    return settings


@pytest.fixture
def demo() -> dict[str, str]:
    """The demo users and stories; {username: password}."""
    seed_demo()
    return {user.username: user.password for user in DEMO_USERS}


def _personal_request(*, story: Story, reader) -> GenerationRequest:  # noqa: ANN001
    """A chapter the writer wrote for `reader` (three plain options), stored as the worker stores one."""
    request = GenerationRequest.objects.create(
        story=story,
        requested_by=reader,
        kind=GenerationRequest.Kind.READER,
        n=len(TEXTS),
        preference="Ravi shows Wren the rock pool at low tide.",
        engine="vllm",
        max_new_tokens=16,
        next_number=3,
        status=GenerationRequest.Status.SUCCEEDED,
        stage="Done",
        prompt_tokens=1200,
        model_name="smollm2",
        finished_at=timezone.now(),
    )
    for index, text in enumerate(TEXTS):
        GenerationOption.objects.create(
            request=request,
            index=index,
            text=text,
            format_ok=True,
            tokens=16,
            review_status=ReviewStatus.NONE,
        )
    return request


def test_reader_rates_and_prefers_an_option(open_journey, demo):
    story = Story.objects.get(title=LIGHTHOUSE)
    assert story.is_published
    remy = get_user_model().objects.get(username="remy")
    gen = _personal_request(story=story, reader=remy)
    one, two, three = gen.options.order_by("index")

    j = open_journey("reader-rates")
    page = j.page
    j.log_in("remy", demo["remy"])
    j.goto(gen.get_absolute_url())
    expect(page.locator(".rating-intro")).to_contain_text("Rate each option from 1 to 5 stars")
    options = page.locator("article.option")
    expect(options).to_have_count(3)
    first, second = page.locator("#option-0"), page.locator("#option-1")
    expect(first.locator(".prose")).to_contain_text(TEXTS[0])
    j.shot("request")

    # Five stars for option 1, two for option 2: each post comes back to the request's page.
    first.get_by_role("button", name="5 of 5 stars").click()
    expect(page.locator(".messages")).to_contain_text("You gave Option 1 5 of 5 stars.")
    second.get_by_role("button", name="2 of 5 stars").click()
    expect(page.locator(".messages")).to_contain_text("You gave Option 2 2 of 5 stars.")
    j.shot("rated")

    # "I prefer this one" on option 1: preferred to both others shown.
    first.get_by_role("button", name="I prefer this one").click()
    expect(page.locator(".messages")).to_contain_text(
        "You prefer Option 1 to the other options you were shown."
    )
    j.shot("preferred")

    # "Your ratings" shows the stars and the choice.
    page.locator(".rating-intro").get_by_role("link", name="Your ratings").click()
    expect(page.locator("h1")).to_contain_text("Your ratings")
    rate = [page.locator(f"#rate-{i}") for i in range(3)]
    expect(rate[0].locator("h2")).to_contain_text("your rating 5 of 5")
    expect(rate[1].locator("h2")).to_contain_text("your rating 2 of 5")
    expect(rate[2].locator("h2")).to_contain_text("not rated")
    expect(rate[0].get_by_role("button", name="5 of 5 stars")).to_have_attribute("aria-pressed", "true")
    expect(rate[1].get_by_role("button", name="2 of 5 stars")).to_have_attribute("aria-pressed", "true")
    expect(rate[2].locator("[aria-pressed]")).to_have_count(0)
    expect(rate[0].locator(".badge.ok")).to_have_text("You prefer this one")
    expect(rate[1].get_by_role("button", name="I prefer this one")).to_be_visible()
    j.shot("your-ratings")

    # The rows.
    writer = writer_of(gen)
    assert sorted(
        (r.option_id, r.reader_id, r.stars, r.writer)
        for r in OptionRating.objects.filter(option__request=gen)
    ) == [(one.pk, remy.pk, 5, writer), (two.pk, remy.pk, 2, writer)]
    prefs = OptionPreference.objects.filter(request=gen)
    assert sorted((p.user_id, p.source, p.chosen_id, p.rejected_id) for p in prefs) == [
        (remy.pk, OptionPreference.Source.READER, one.pk, two.pk),
        (remy.pk, OptionPreference.Source.READER, one.pk, three.pk),
    ]

    # Nobody else opens remy's ratings: the brand manager and another reader are told it does not exist;
    # the story's author sees the request but may not rate it.
    other = get_user_model().objects.create_user(username="nina", password="nina-reads-too")
    services.user_set_roles(user=other, role_names=[READER])
    url = reverse("writer:request_ratings", args=[gen.pk])
    for username, status in (("bree", 404), ("nina", 404), ("ava", 403)):
        client = Client()
        client.force_login(get_user_model().objects.get(username=username))
        assert client.get(url).status_code == status, username
        assert client.post(reverse("writer:option_rate", args=[one.pk]), {"stars": "1"}).status_code == status
    assert OptionRating.objects.get(option=one).stars == 5
