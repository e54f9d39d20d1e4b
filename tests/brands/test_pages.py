"""Brand pages: managers see only their brands, the review queue decides placements, authors and
readers set their switches. Named users per role (mia and max manage brands A and B)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.test import Client
from django.urls import reverse

from brands import selectors, services
from brands.models import Brand, BrandAsset, PlacementDecision, StoryBrandSettings
from brands.placements import find_mentions, mention_spans
from tests.factories import UserFactory, approved_brand, story_with_chapters
from writer.models import GenerationOption, GenerationRequest, ReviewStatus

SURF_TEXT = (
    "Lou waxed her Tidewave board at dawn while Pip hummed.\n\n"
    "<script>alert('boo')</script> The sea was loud & bright."
)
OTHER_SURF_TEXT = "Pip borrowed the Tidewaves from the rental shed and fell off twice."
BANK_TEXT = "Pip counted coins into Penny, the pink piggy bank, before the market opened."


@pytest.fixture
def world(users):
    """Brand A (surf, mia's) and brand B (bank, max's), each with an asset."""
    max_user = UserFactory(username="max", roles=["brand_manager"])
    a = approved_brand(
        name="Tidewave Surf Co.",
        managers=[users["mia"]],
        description="Surfboards and beach gear.",
        banned_themes="violence",
    )
    a_asset = services.asset_create(
        brand=a, kind="product", name="Tidewave board", terms="Tidewave, Tidewave board"
    )
    b = approved_brand(
        name="Ledger Bank", managers=[max_user], description="A friendly bank for teens."
    )
    b_asset = services.asset_create(brand=b, kind="mascot", name="Penny", terms=["Penny"])
    return SimpleNamespace(max=max_user, a=a, a_asset=a_asset, b=b, b_asset=b_asset)


def _option(gen: GenerationRequest, index: int, text: str, asset: BrandAsset | None) -> GenerationOption:
    mentions = mention_spans(find_mentions(text, asset.terms)) if asset else []
    return GenerationOption.objects.create(
        request=gen,
        index=index,
        text=text,
        reasoning="The board fits a dawn scene by the sea.",
        format_ok=True,
        brand=asset.brand if asset else None,
        asset=asset,
        mentions=mentions,
        placement_found=bool(mentions),
        review_status=ReviewStatus.PENDING if mentions else ReviewStatus.NONE,
    )


@pytest.fixture
def placements(world, users):
    """One request for chapter 3 of alice's story: options 1-2 carry brand A, option 3 brand B."""
    story = story_with_chapters(owner=users["alice"], chapters=2, title="Salt Stall")
    gen = GenerationRequest.objects.create(
        story=story,
        requested_by=users["alice"],
        engine="local",
        max_new_tokens=24,
        next_number=3,
        status=GenerationRequest.Status.SUCCEEDED,
        use_brands=True,
    )
    return SimpleNamespace(
        story=story,
        gen=gen,
        a1=_option(gen, 0, SURF_TEXT, world.a_asset),
        a2=_option(gen, 1, OTHER_SURF_TEXT, world.a_asset),
        b1=_option(gen, 2, BANK_TEXT, world.b_asset),
    )


def _status(option: GenerationOption) -> str:
    option.refresh_from_db()
    return option.review_status


def _messages(response) -> list[str]:  # noqa: ANN001
    return [str(m) for m in response.context["messages"]] if response.context else []


# --- Permissions -----------------------------------------------------------------------------------


def _pages_of_brand_b(world, placements) -> list[tuple[str, str, dict]]:  # noqa: ANN001
    slug, asset, option = world.b.slug, world.b_asset.pk, placements.b1.pk
    return [
        ("get", reverse("brands:brand_detail", args=[slug]), {}),
        ("get", reverse("brands:brand_edit", args=[slug]), {}),
        (
            "post",
            reverse("brands:brand_edit", args=[slug]),
            {"name": "Mine now", "max_placements_per_chapter": 1},
        ),
        ("get", reverse("brands:brand_dashboard", args=[slug]), {}),
        ("post", reverse("brands:asset_create", args=[slug]), {"kind": "product", "name": "X", "terms": "X"}),
        ("get", reverse("brands:asset_edit", args=[slug, asset]), {}),
        ("post", reverse("brands:asset_delete", args=[slug, asset]), {}),
        # Brand B's asset through brand A's address: still 404.
        ("get", reverse("brands:asset_edit", args=[world.a.slug, asset]), {}),
        ("get", reverse("brands:review_detail", args=[option]), {}),
        ("post", reverse("brands:option_approve", args=[option]), {}),
        ("post", reverse("brands:option_reject", args=[option]), {"reason": "Not ours"}),
    ]


def _assert_brand_b_untouched(world, placements) -> None:  # noqa: ANN001
    world.b.refresh_from_db()
    assert world.b.name == "Ledger Bank"
    assert list(world.b.assets.values_list("name", flat=True)) == ["Penny"]
    assert _status(placements.b1) == ReviewStatus.PENDING
    assert not PlacementDecision.objects.exists()


def test_a_manager_gets_404_for_everything_of_another_managers_brand(world, placements, client_for):
    mia = client_for("mia")
    for method, url, data in _pages_of_brand_b(world, placements):
        response = getattr(mia, method)(url, data)
        assert response.status_code == 404, (method, url)
    _assert_brand_b_untouched(world, placements)


@pytest.mark.parametrize("username", ["alice", "rita"])
def test_authors_and_readers_get_403_on_every_manager_page(world, placements, client_for, username):
    c = client_for(username)
    fixed = [
        ("get", reverse("brands:brand_list"), {}),
        ("get", reverse("brands:brand_create"), {}),
        ("post", reverse("brands:brand_create"), {"name": "Sneaky", "max_placements_per_chapter": 1}),
        ("get", reverse("brands:review_queue"), {}),
    ]
    for method, url, data in fixed + _pages_of_brand_b(world, placements):
        response = getattr(c, method)(url, data)
        assert response.status_code == 403, (method, url)
    assert not Brand.objects.filter(name="Sneaky").exists()
    _assert_brand_b_untouched(world, placements)


def test_anonymous_visitors_are_sent_to_log_in(world, placements, client):
    for method, url, data in [
        ("get", reverse("brands:review_queue"), {}),
        *_pages_of_brand_b(world, placements),
    ]:
        response = getattr(client, method)(url, data)
        assert response.status_code == 302, (method, url)
        assert response["Location"].startswith(reverse("login")), (method, url)
    _assert_brand_b_untouched(world, placements)


def test_a_manager_lists_only_their_brands(world, client_for, users):
    page = client_for("mia").get(reverse("brands:brand_list")).content.decode()
    assert "Tidewave Surf Co." in page and "Ledger Bank" not in page
    max_client = Client()
    max_client.force_login(world.max)
    page = max_client.get(reverse("brands:brand_list")).content.decode()
    assert "Ledger Bank" in page and "Tidewave Surf Co." not in page
    page = client_for("root").get(reverse("brands:brand_list")).content.decode()  # staff: every brand
    assert "Ledger Bank" in page and "Tidewave Surf Co." in page


# --- Brands and assets -----------------------------------------------------------------------------


def test_a_manager_creates_and_edits_a_brand(client_for, users):
    c = client_for("mia")
    response = c.post(
        reverse("brands:brand_create"),
        {
            "name": "Boba Bear",
            "description": "Bubble tea with a bear mascot.",
            "tone_of_voice": "Cheerful",
            "target_audience": "Teens",
            "banned_themes": "Violence, alcohol ,, self-harm",
            "max_placements_per_chapter": 2,
            "is_active": "on",
        },
    )
    brand = Brand.objects.get(name="Boba Bear")
    assert response.status_code == 302 and response["Location"] == reverse(
        "brands:brand_detail", args=[brand.slug]
    )
    assert list(brand.managers.all()) == [users["mia"]]
    assert brand.banned_themes == ["violence", "alcohol", "self-harm"]
    assert brand.max_placements_per_chapter == 2

    edit = reverse("brands:brand_edit", args=[brand.slug])
    assert 'value="violence, alcohol, self-harm"' in c.get(edit).content.decode()
    response = c.post(edit, {"name": "Boba Bear", "banned_themes": "gore", "max_placements_per_chapter": 1})
    assert response.status_code == 302
    brand.refresh_from_db()
    assert (brand.banned_themes, brand.max_placements_per_chapter, brand.is_active) == (["gore"], 1, False)


def test_bad_brand_input_shows_form_errors_and_saves_nothing(world, client_for):
    c = client_for("mia")
    response = c.post(reverse("brands:brand_create"), {"name": "Zero", "max_placements_per_chapter": 0})
    assert response.status_code == 200 and response.context["form"].errors["max_placements_per_chapter"]
    # The service's refusal (a taken name, whatever the case) becomes a form error.
    response = c.post(
        reverse("brands:brand_create"), {"name": "ledger bank", "max_placements_per_chapter": 1}
    )
    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == ["There is already a brand called 'ledger bank'."]
    assert "There is already a brand called &#x27;ledger bank&#x27;." in response.content.decode()
    assert Brand.objects.count() == 2


def test_a_manager_adds_edits_and_deletes_assets(world, client_for):
    c = client_for("mia")
    slug = world.a.slug
    response = c.post(
        reverse("brands:asset_create", args=[slug]),
        {
            "kind": "mascot",
            "name": "Wavey",
            "description": "A surfing otter.",
            "terms": "Wavey, Wavey the Otter",
        },
    )
    assert response.status_code == 302
    wavey = world.a.assets.get(name="Wavey")
    assert wavey.terms == ["Wavey", "Wavey the Otter"]
    page = c.get(reverse("brands:brand_detail", args=[slug])).content.decode()
    assert "Wavey the Otter" in page and "Tidewave board" in page

    # htmx: the assets card comes back alone, with the list and a fresh form.
    response = c.post(
        reverse("brands:asset_create", args=[slug]),
        {"kind": "slogan", "name": "Ride it", "terms": "Ride the Tidewave"},
        HTTP_HX_REQUEST="true",
    )
    html = response.content.decode()
    assert response.status_code == 200 and html.lstrip().startswith('<section class="card" id="assets">')
    assert "Ride it added." in html and "<html" not in html

    # No term: the service's message is shown, nothing saved.
    response = c.post(
        reverse("brands:asset_create", args=[slug]), {"kind": "product", "name": "Empty", "terms": " , "}
    )
    assert response.status_code == 200
    assert "An asset needs at least one term" in response.content.decode()
    assert not world.a.assets.filter(name="Empty").exists()

    edit = reverse("brands:asset_edit", args=[slug, wavey.pk])
    assert 'value="Wavey, Wavey the Otter"' in c.get(edit).content.decode()
    assert c.post(edit, {"kind": "mascot", "name": "Wavey", "terms": "Wavey"}).status_code == 302
    wavey.refresh_from_db()
    assert wavey.terms == ["Wavey"]

    assert c.post(reverse("brands:asset_delete", args=[slug, wavey.pk])).status_code == 302
    assert not BrandAsset.objects.filter(pk=wavey.pk).exists()
    assert c.get(reverse("brands:asset_delete", args=[slug, world.a_asset.pk])).status_code == 405


# --- The review queue ------------------------------------------------------------------------------


def test_the_queue_shows_pending_placements_of_my_brands_only(world, placements, client_for):
    response = client_for("mia").get(reverse("brands:review_queue"))
    page = response.content.decode()
    assert response.status_code == 200
    assert [o.pk for _, options in response.context["groups"] for o in options] == [
        placements.a1.pk,
        placements.a2.pk,
    ]
    assert page.count("Salt Stall") == 1  # one group for the request
    assert "Tidewave board" in page and "Ledger Bank" not in page and "Penny" not in page
    assert reverse("brands:review_detail", args=[placements.a1.pk]) in page
    assert reverse("brands:review_detail", args=[placements.b1.pk]) not in page

    max_client = Client()
    max_client.force_login(world.max)
    response = max_client.get(reverse("brands:review_queue"))
    assert [o.pk for _, options in response.context["groups"] for o in options] == [placements.b1.pk]
    assert "Tidewave" not in response.content.decode()


def test_the_review_page_highlights_mentions_and_escapes_the_text(placements, client_for):
    response = client_for("mia").get(reverse("brands:review_detail", args=[placements.a1.pk]))
    page = response.content.decode()
    assert response.status_code == 200
    assert '<mark class="placement">Tidewave board</mark>' in page
    assert "&lt;script&gt;alert(&#x27;boo&#x27;)&lt;/script&gt;" in page
    assert "<script>alert" not in page
    assert "loud &amp; bright" in page
    assert "The board fits a dawn scene by the sea." in page  # the reasoning, folded
    # The other options: mia's own is readable with its mark, brand B's shows neither brand nor text.
    assert '<mark class="placement">Tidewaves</mark>' in page
    assert "another brand's placement" in page
    assert "Ledger" not in page and "Penny" not in page and BANK_TEXT not in page
    assert reverse("brands:option_approve", args=[placements.a1.pk]) in page


def test_mentions_that_do_not_fit_the_text_are_not_marked(placements, client_for):
    GenerationOption.objects.filter(pk=placements.a1.pk).update(mentions=[[5, 9999]])
    page = client_for("mia").get(reverse("brands:review_detail", args=[placements.a1.pk])).content.decode()
    assert "don't fit this text" in page
    assert '<mark class="placement">Tidewave board</mark>' not in page and "&lt;script&gt;" in page


def test_approve_one_option_then_no_other(placements, client_for, users):
    c = client_for("mia")
    response = c.post(reverse("brands:option_approve", args=[placements.a1.pk]), follow=True)
    assert response.redirect_chain == [(reverse("brands:review_queue"), 302)]
    assert "Option 1 for “Salt Stall” approved" in " ".join(_messages(response))
    assert _status(placements.a1) == ReviewStatus.APPROVED
    assert placements.a1.reviewed_by == users["mia"]
    decision = PlacementDecision.objects.get()
    assert (decision.option_id, decision.reviewer, decision.action) == (
        placements.a1.pk,
        users["mia"],
        "approved",
    )
    assert list(response.context["groups"]) == []  # the request left the queue

    # The sibling's page says why it can't be approved; a forced POST is refused with the reason.
    page = c.get(reverse("brands:review_detail", args=[placements.a2.pk])).content.decode()
    assert "Option 1 of this chapter is already approved" in page
    response = c.post(reverse("brands:option_approve", args=[placements.a2.pk]), follow=True)
    assert response.redirect_chain == [(reverse("brands:review_detail", args=[placements.a2.pk]), 302)]
    assert "already approved" in " ".join(_messages(response))
    assert _status(placements.a2) == ReviewStatus.PENDING

    # A decided option shows its decision and no buttons.
    page = c.get(reverse("brands:review_detail", args=[placements.a1.pk])).content.decode()
    assert "Approved by mia" in page
    assert reverse("brands:option_approve", args=[placements.a1.pk]) not in page


def test_reject_needs_a_reason(placements, client_for, users):
    c = client_for("mia")
    url = reverse("brands:option_reject", args=[placements.a2.pk])
    response = c.post(url, {"reason": "   "})
    assert response.status_code == 200
    assert "Say why you reject this placement" in response.content.decode()
    assert _status(placements.a2) == ReviewStatus.PENDING

    response = c.post(
        url, {"reason": "The board appears in a scene about a fall; not our look."}, follow=True
    )
    assert response.redirect_chain == [(reverse("brands:review_queue"), 302)]
    placements.a2.refresh_from_db()
    assert placements.a2.review_status == ReviewStatus.REJECTED
    assert placements.a2.review_reason == "The board appears in a scene about a fall; not our look."
    assert PlacementDecision.objects.get().reason == placements.a2.review_reason
    # Rejecting twice is refused with the service's reason.
    response = c.post(url, {"reason": "again"}, follow=True)
    assert "only a waiting one can be rejected" in " ".join(_messages(response))


def test_decisions_need_the_csrf_token(placements, users):
    c = Client(enforce_csrf_checks=True)
    c.force_login(users["mia"])
    assert c.post(reverse("brands:option_approve", args=[placements.a1.pk])).status_code == 403
    assert (
        c.post(reverse("brands:option_reject", args=[placements.a1.pk]), {"reason": "x"}).status_code == 403
    )
    assert _status(placements.a1) == ReviewStatus.PENDING


def test_the_dashboard_counts_decisions_and_draws_the_weeks(world, placements, client_for, users):
    services.option_approve(option=placements.a1, reviewer=users["mia"])
    services.option_reject(option=placements.a2, reviewer=users["mia"], reason="Too loud <b>here</b>")
    response = client_for("mia").get(reverse("brands:brand_dashboard", args=[world.a.slug]))
    page = response.content.decode()
    assert response.status_code == 200
    dashboard = response.context["dashboard"]
    assert (dashboard.proposed, dashboard.approved, dashboard.rejected, dashboard.pending) == (2, 1, 1, 0)
    assert response.context["approval_percent"] == 50
    assert "<svg" in page and 'class="bar approved"' in page and "1 approved</title>" in page
    assert "Too loud &lt;b&gt;here&lt;/b&gt;" in page  # the audit log, escaped
    assert page.count("<td>mia</td>") == 2


# --- Authors and readers ---------------------------------------------------------------------------


def test_the_owner_opts_a_story_in_and_excludes_a_brand(world, client_for, users):
    story = story_with_chapters(owner=users["alice"], chapters=1)
    url = reverse("brands:story_settings", args=[story.slug])
    c = client_for("alice")
    page = c.get(url).content.decode()
    assert "Tidewave Surf Co." in page and "Ledger Bank" in page
    assert not selectors.story_brand_settings_get(story=story).opt_in  # out by default

    response = c.post(url, {"opt_in": "on", "excluded_brands": [world.b.pk]})
    assert response.status_code == 302 and response["Location"] == story.get_absolute_url()
    saved = StoryBrandSettings.objects.get(story=story)
    assert saved.opt_in and list(saved.excluded_brands.all()) == [world.b]

    # An excluded brand that went inactive stays listed (and excluded) when the author saves again.
    services.brand_update(brand=world.b, is_active=False)
    assert c.post(url, {"opt_in": "on", "excluded_brands": [world.b.pk]}).status_code == 302
    assert selectors.story_excluded_brand_ids(story=story) == {world.b.pk}

    assert c.post(url, {}).status_code == 302  # unticked: out, nothing excluded
    saved.refresh_from_db()
    assert not saved.opt_in and not saved.excluded_brands.exists()


def test_only_the_owner_reaches_the_story_settings(world, client_for, users, client):
    published = story_with_chapters(owner=users["alice"], chapters=1)
    draft = story_with_chapters(owner=users["alice"], chapters=1, is_published=False)
    for story, status in [(published, 403), (draft, 404)]:
        url = reverse("brands:story_settings", args=[story.slug])
        assert client_for("bob").get(url).status_code == status
        assert client_for("bob").post(url, {"opt_in": "on"}).status_code == status
        assert client_for("mia").post(url, {"opt_in": "on"}).status_code == status
        assert client.get(url).status_code == 302
    assert not StoryBrandSettings.objects.exists()


def test_a_reader_turns_sponsored_chapters_off_and_on(client_for, users):
    c = client_for("rita")
    url = reverse("brands:sponsorship")
    assert '<strong class="state on">on</strong>' in c.get(url).content.decode()

    response = c.post(url, {"enabled": "0"}, follow=True)
    assert response.redirect_chain == [(url, 302)]
    assert "Sponsored chapters are off." in _messages(response)
    assert not selectors.reader_sponsored_chapters_enabled(user=users["rita"])
    assert '<strong class="state off">off</strong>' in response.content.decode()

    # htmx: the switch alone comes back.
    response = c.post(url, {"enabled": "1"}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200 and html.startswith('<div id="sponsorship"') and "state on" in html
    assert selectors.reader_sponsored_chapters_enabled(user=users["rita"])
    assert selectors.reader_sponsored_chapters_enabled(user=users["ross"])  # someone else's stays as it was

    c.post(url, {"enabled": "maybe"})
    assert selectors.reader_sponsored_chapters_enabled(user=users["rita"])


def test_anonymous_visitors_have_no_sponsorship_switch(client, db):
    response = client.post(reverse("brands:sponsorship"), {"enabled": "0"})
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_the_review_page_shows_why_and_marks_names_in_the_reasoning(placements, client_for):
    reasoning = "I will have Lou mention her Tidewave board."
    GenerationOption.objects.filter(pk=placements.a1.pk).update(
        reasoning=reasoning,
        reasoning_mentions=[[m.start, m.end] for m in find_mentions(reasoning, ["Tidewave board"])],
        placement_note="Names Tidewave Surf Co., which it was not asked to place: sent to its review.",
    )
    page = client_for("mia").get(reverse("brands:review_detail", args=[placements.a1.pk])).content.decode()
    assert "which it was not asked to place" in page
    assert 'I will have Lou mention her <mark class="placement">Tidewave board</mark>.' in page
    assert "never shown to readers" in page


def test_an_approval_shows_the_hash_of_the_approved_text(placements, client_for):
    c = client_for("mia")
    c.post(reverse("brands:option_approve", args=[placements.a1.pk]))
    placements.a1.refresh_from_db()
    assert placements.a1.approved_text_hash == PlacementDecision.objects.get().text_hash != ""
    page = c.get(reverse("brands:review_detail", args=[placements.a1.pk])).content.decode()
    assert placements.a1.approved_text_hash[:12] in page
