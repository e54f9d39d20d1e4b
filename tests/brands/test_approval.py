"""Issue 18: a new brand waits for staff approval (brands/approval.py). Until staff approve it, it is never
matched (real pgvector matching with real all-MiniLM-L6-v2 vectors), planned, placed, charged, auto-approved
or requested through the partner API, and the public register does not list it. Only staff decide; every
decision tells the brand's managers, a rejection with its reason; an edit of a rejected brand sends it back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from brands import approval, campaigns, matching, measurement, partners, services
from brands.models import Brand, Campaign, CampaignSpend, PlacementDecision
from mesu_web.errors import ApplicationError
from mesu_web.notifications.models import Notification
from tests.brands.test_measurement import approved_option, sponsored_world
from tests.factories import UserFactory, live_campaign, run_generation, story_with_chapters
from writer.models import Chapter, GenerationOption, GenerationRequest, ReviewStatus

SURF_TEXT = (
    "Kai paddled out past the break at dawn. The swell was clean, head-high waves peeling along the reef, "
    "and the whole surf camp was already in the water. Mina waxed her board on the sand and laughed."
)
PENDING_BANNER = "Waiting for staff approval: no chapter will carry this brand until then."
APPROVALS = reverse("brands:brand_approvals")


def new_surf_brand(users, name: str = "Tidewave Surf Co."):  # noqa: ANN001, ANN201
    """A brand as its manager makes it (pending), with an embedded asset in a live campaign."""
    brand = services.brand_create(
        name=name,
        managers=[users["mia"]],
        description="Surfboards, wetsuits and beach gear for learning to surf on cold-water coasts.",
        target_audience="Teens who love the beach and the waves.",
    )
    services.asset_create(
        brand=brand, kind="product", name=f"{name} Glide",
        description="A soft-top longboard for beginners on small waves.", terms=[f"{name} Glide"],
    )
    services.assets_embed_missing()
    live_campaign(brand)
    brand.refresh_from_db()
    return brand


@pytest.fixture
def surf_story(users):
    story = story_with_chapters(
        owner=users["alice"], chapters=0, title="Salt Summer", genre="sports romance",
        summary="A summer at a surf camp on a wild beach: first waves, wipeouts and a board-shaping contest.",
        tags=["surfing", "beach", "summer"], setting="A surf camp on a windy Atlantic beach.",
    )
    for number in (1, 2):
        Chapter.objects.create(story=story, number=number, title=f"Wave {number}", text=SURF_TEXT)
    services.story_brand_settings_update(story=story, opt_in=True)
    return story


def notes_of(user) -> list[str]:  # noqa: ANN001
    return list(Notification.objects.filter(user=user).order_by("pk").values_list("message", flat=True))


# --- Matching and planning ---------------------------------------------------------------------------


def test_a_new_brand_is_pending_and_never_matched_until_staff_approve_it(users, surf_story):
    brand = new_surf_brand(users)
    assert brand.approval == Brand.Approval.PENDING
    assert matching.brand_match_for_story(story=surf_story, k=5, max_distance=2.0) == []
    plans = matching.option_plans_for_request(story=surf_story, preference="", n=2)
    assert all(plan.brand_id is None for plan in plans.plans)
    assert plans.note.startswith("No brand matched")
    assert campaigns.offerable_assets(story_id=surf_story.pk, reader_id=None) == {}

    approval.brand_approve(brand=brand, staff_user=users["root"], note="Welcome aboard.")
    brand.refresh_from_db()
    assert brand.approval == Brand.Approval.APPROVED
    assert brand.approval_decided_by == users["root"] and brand.approval_decided_at is not None
    matches = matching.brand_match_for_story(story=surf_story, k=5)  # the default distance: a real match
    assert [m.brand.pk for m in matches] == [brand.pk]
    plans = matching.option_plans_for_request(story=surf_story, preference="", n=2)
    assert {plan.brand_id for plan in plans.plans} == {brand.pk}
    assert plans.note.startswith("Matched: Tidewave Surf Co.")


def test_a_rejected_brand_is_out_of_matching_and_its_managers_learn_why(users, surf_story):
    brand = new_surf_brand(users)
    approval.brand_approve(brand=brand, staff_user=users["root"])
    assert matching.brand_match_for_story(story=surf_story, k=5)
    approval.brand_reject(brand=brand, staff_user=users["root"], note="The website sells counterfeit boards.")
    brand.refresh_from_db()
    assert brand.approval == Brand.Approval.REJECTED
    assert brand.approval_note == "The website sells counterfeit boards."
    assert matching.brand_match_for_story(story=surf_story, k=5, max_distance=2.0) == []
    messages = notes_of(users["mia"])
    assert messages[0].startswith("Staff approved Tidewave Surf Co.")
    assert "The website sells counterfeit boards." in messages[1] and "rejected" in messages[1]
    note = Notification.objects.filter(user=users["mia"]).last()
    assert note.url == reverse("brands:brand_detail", args=[brand.slug])


@pytest.mark.slow
def test_a_generation_for_a_story_that_matches_a_pending_brand_places_nothing(users, surf_story, local_engine):
    brand = new_surf_brand(users)
    request = run_generation(surf_story, users["alice"], n=2, max_new_tokens=24)
    assert request.use_brands
    assert request.brand_note.startswith("No brand matched")
    assert not request.options.filter(brand__isnull=False).exists()
    approval.brand_approve(brand=brand, staff_user=users["root"])
    request = run_generation(surf_story, users["alice"], n=2, max_new_tokens=24)
    assert request.brand_note.startswith("Matched: Tidewave Surf Co.")
    assert set(request.options.values_list("brand_id", flat=True)) == {brand.pk}


def test_an_option_naming_a_brand_staff_have_not_approved_is_held(users, surf_story):
    brand = new_surf_brand(users)
    gen = GenerationRequest.objects.create(
        story=surf_story, requested_by=users["alice"], engine="vllm", max_new_tokens=24, next_number=3, n=1,
        use_brands=True,
    )
    text = "Mina stood up on her Tidewave Surf Co. Glide and laughed."
    planned = matching.OptionPlan(brand_id=brand.pk, asset_id=brand.assets.get().pk, terms=("Tidewave Surf Co. Glide",))
    for plan in (matching.OptionPlan(), planned):  # named unasked, or planned before a rejection
        placement = matching.option_placement(request=gen, plan=plan, text=text, reasoning="")
        assert placement.review_status == ReviewStatus.HELD
        assert "staff have not approved" in placement.note
    approval.brand_approve(brand=brand, staff_user=users["root"])
    assert matching.option_placement(request=gen, plan=planned, text=text, reasoning="").review_status == (
        ReviewStatus.PENDING
    )


# --- Review, charges, auto-approve, the partner API, the register -------------------------------------


def test_no_placement_of_a_rejected_brand_is_approved_or_charged(users):
    world = sponsored_world(users)
    fixed = live_campaign(world.brand, name="Fixed", pricing=Campaign.Pricing.FIXED)
    gen = GenerationRequest.objects.create(
        story=world.story, requested_by=users["ross"], kind=GenerationRequest.Kind.READER, engine="vllm",
        max_new_tokens=24, next_number=4, n=1, status=GenerationRequest.Status.SUCCEEDED, use_brands=True,
    )
    waiting = approved_option(gen, index=0, asset=world.asset, campaign=fixed)
    GenerationOption.objects.filter(pk=waiting.pk).update(review_status=ReviewStatus.PENDING, reviewed_at=None)
    approval.brand_reject(brand=world.brand, staff_user=users["root"], note="Misleading claims.")
    with pytest.raises(ApplicationError, match="rejected by staff"):
        services.option_approve(option=waiting, reviewer=users["mia"])
    waiting.refresh_from_db()
    assert waiting.review_status == ReviewStatus.PENDING
    # An auto-approve rule's approval goes through the same door (brands.review._auto_approve).
    with pytest.raises(ApplicationError):
        services.option_approve(
            option=waiting, reviewer=None, action=PlacementDecision.Action.AUTO_APPROVED,
            rule=world.brand.auto_approve_rules.create(min_similarity=0.0),
        )
    # A reader's view of a placement approved before the rejection is no longer charged.
    assert campaigns.impression_charge(option=world.rita_option, user=users["bob"]) is None
    assert not CampaignSpend.objects.exists()


def test_the_register_lists_only_brands_staff_approved(users, client):
    world = sponsored_world(users)
    assert client.get(reverse("brands:placement_register")).content.decode().count("<td>Tidewave</td>") == 2
    Brand.objects.filter(pk=world.brand.pk).update(approval=Brand.Approval.PENDING)
    html = client.get(reverse("brands:placement_register")).content.decode()
    assert "<td>Tidewave</td>" not in html
    assert measurement.placement_register_page(number=1).paginator.count == 0


def test_the_partner_api_refuses_a_brand_staff_have_not_approved(users):
    brand = new_surf_brand(users)
    contact = UserFactory(username="partner-contact", roles=["reader"])
    partner = partners.partner_create(name="Shop", brands=[brand], contact_username=contact.username)
    story = story_with_chapters(owner=users["alice"], chapters=1, slug="open-story", is_published=True)
    services.story_brand_settings_update(story=story, opt_in=True)
    with pytest.raises(partners.ApiConflict, match="waiting for staff approval"):
        partners.partner_request_create(partner=partner, story_slug=story.slug, brand_slug=brand.slug, n=1)
    assert not GenerationRequest.objects.exists()


# --- Decisions ----------------------------------------------------------------------------------------


def test_only_staff_decide_and_a_rejection_needs_a_reason(users):
    brand = services.brand_create(name="Kelp & Co", managers=[users["mia"]])
    for who in ("mia", "alice", "rita"):
        with pytest.raises(PermissionDenied):
            approval.brand_approve(brand=brand, staff_user=users[who])
        with pytest.raises(PermissionDenied):
            approval.brand_reject(brand=brand, staff_user=users[who], note="No.")
    with pytest.raises(ApplicationError, match="Say why"):
        approval.brand_reject(brand=brand, staff_user=users["root"], note="   ")
    brand.refresh_from_db()
    assert brand.approval == Brand.Approval.PENDING and not Notification.objects.exists()
    approval.brand_approve(brand=brand, staff_user=users["root"])
    with pytest.raises(ApplicationError, match="approved already"):
        approval.brand_approve(brand=brand, staff_user=users["root"])


def test_an_edit_of_a_rejected_brand_sends_it_back_to_staff(users):
    brand = services.brand_create(name="Kelp & Co", managers=[users["mia"]], description="Seaweed snacks.")
    approval.brand_reject(brand=brand, staff_user=users["root"], note="Say what the snacks are made of.")
    assert not approval.pending_brands().filter(pk=brand.pk).exists()
    services.brand_update(brand=brand, description="Seaweed snacks: kelp, sea salt, nothing else.")
    brand.refresh_from_db()
    assert brand.approval == Brand.Approval.PENDING
    assert brand.approval_note == "Say what the snacks are made of."  # staff see what they asked for
    assert approval.pending_brands().filter(pk=brand.pk).exists()
    # An approved brand stays approved when it is edited; a rejected one comes back through its assets too.
    approval.brand_approve(brand=brand, staff_user=users["root"])
    services.brand_update(brand=brand, tone_of_voice="Salty.")
    brand.refresh_from_db()
    assert brand.approval == Brand.Approval.APPROVED
    approval.brand_reject(brand=brand, staff_user=users["root"], note="Withdrawn.")
    services.asset_create(brand=brand, kind="product", name="Kelp crisps", terms="Kelp crisps")
    brand.refresh_from_db()
    assert brand.approval == Brand.Approval.PENDING


# --- Pages ---------------------------------------------------------------------------------------------


def test_the_brand_pages_tell_the_managers_where_the_brand_stands(users, client_for):
    brand = services.brand_create(name="Kelp & Co", managers=[users["mia"]])
    mia = client_for("mia")
    pages = [
        reverse("brands:brand_detail", args=[brand.slug]),
        reverse("brands:brand_edit", args=[brand.slug]),
        reverse("brands:brand_dashboard", args=[brand.slug]),
        reverse("brands:campaign_list", args=[brand.slug]),
    ]
    for url in pages:
        assert PENDING_BANNER in mia.get(url).content.decode(), url
    assert "waiting for staff approval" in mia.get(reverse("brands:brand_list")).content.decode()
    # Managers can still prepare the brand: an asset and a draft campaign.
    response = mia.post(
        reverse("brands:asset_create", args=[brand.slug]), {"kind": "product", "name": "Crisps", "terms": "Kelp crisps"}
    )
    assert response.status_code == 302 and brand.assets.count() == 1
    approval.brand_reject(brand=brand, staff_user=users["root"], note="Name the <b>ingredients</b>.")
    html = mia.get(pages[0]).content.decode()
    assert "Rejected by staff: Name the &lt;b&gt;ingredients&lt;/b&gt;." in html
    approval.brand_approve(brand=brand, staff_user=users["root"])
    html = mia.get(pages[0]).content.decode()
    assert PENDING_BANNER not in html and "Rejected by staff" not in html


def test_staff_list_pending_brands_newest_first_paged_with_their_profile(users, client_for):
    from brands import approval_views

    made = []
    for i in range(approval_views.PAGE_SIZE + 2):
        brand = services.brand_create(name=f"Brand {i:02d}", managers=[users["mia"]], description=f"Profile {i}.")
        Brand.objects.filter(pk=brand.pk).update(created_at=brand.created_at + timedelta(minutes=i))
        made.append(brand)
    services.asset_create(brand=made[-1], kind="mascot", name="Otis", terms="Otis the Otter")
    approval.brand_approve(brand=made[0], staff_user=users["root"])  # decided: not listed
    root = client_for("root")
    html = root.get(APPROVALS).content.decode()
    assert f"{approval_views.PAGE_SIZE + 1} waiting" in html
    newest = html.index("Brand 21")
    assert newest < html.index("Brand 20") < html.index("Brand 19")
    assert "Otis the Otter" in html and "Profile 21." in html and "mia" in html
    assert "Brand 01" not in html  # on page 2
    page2 = root.get(APPROVALS, {"page": "2"}).content.decode()
    assert "Brand 01" in page2 and "Brand 00" not in page2
    for bad in ("0", "-1", "abc", "99999999999999999999"):
        assert root.get(APPROVALS, {"page": bad}).status_code == 200
    # Staff see the link in the header; nobody else does.
    assert f'href="{APPROVALS}"' in html
    assert f'href="{APPROVALS}"' not in client_for("mia").get(reverse("brands:brand_list")).content.decode()


def test_staff_approve_and_reject_from_their_page(users, client_for):
    good = services.brand_create(name="Kelp & Co", managers=[users["mia"]])
    bad = services.brand_create(name="Fake Boards", managers=[users["mia"]])
    root = client_for("root")
    response = root.post(reverse("brands:brand_approve", args=[good.pk]), {"note": "Looks right."})
    assert response.status_code == 302 and response["Location"] == APPROVALS
    # A rejection without a reason is refused with a message; with one, it goes through.
    response = root.post(reverse("brands:brand_reject", args=[bad.pk]), {"reason": ""}, follow=True)
    assert "Say why the brand is rejected" in response.content.decode()
    root.post(reverse("brands:brand_reject", args=[bad.pk]), {"reason": "Counterfeits."})
    good.refresh_from_db()
    bad.refresh_from_db()
    assert (good.approval, good.approval_note) == (Brand.Approval.APPROVED, "Looks right.")
    assert (bad.approval, bad.approval_note) == (Brand.Approval.REJECTED, "Counterfeits.")
    assert any("Counterfeits." in m for m in notes_of(users["mia"]))
    # Managers and everyone else are sent to the admin's login, as on the other staff pages; nothing changes.
    other = services.brand_create(name="Other", managers=[users["mia"]])
    for who in ("mia", "alice", "rita"):
        client = client_for(who)
        for url in (APPROVALS, reverse("brands:brand_approve", args=[other.pk])):
            response = client.post(url) if url != APPROVALS else client.get(url)
            assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))
    other.refresh_from_db()
    assert other.approval == Brand.Approval.PENDING
    assert root.post(reverse("brands:brand_approve", args=[10**9])).status_code == 404


def test_admin_actions_approve_and_reject_with_a_reason(users, client_for):
    brand = services.brand_create(name="Kelp & Co", managers=[users["mia"]])
    other = services.brand_create(name="Fake Boards", managers=[users["mia"]])
    root = client_for("root")
    url = reverse("admin:brands_brand_changelist")
    root.post(url, {"action": "approve_brands", "_selected_action": [brand.pk]})
    brand.refresh_from_db()
    assert brand.approval == Brand.Approval.APPROVED and brand.approval_decided_by == users["root"]
    asked = root.post(url, {"action": "reject_brands", "_selected_action": [other.pk]})
    assert asked.status_code == 200 and "Reason" in asked.content.decode()  # the reason first
    root.post(url, {"action": "reject_brands", "_selected_action": [other.pk], "apply": "1", "reason": "Counterfeits."})
    other.refresh_from_db()
    assert (other.approval, other.approval_note) == (Brand.Approval.REJECTED, "Counterfeits.")
    page = root.get(reverse("admin:brands_brand_change", args=[other.pk])).content.decode()
    assert "Counterfeits." in page


def test_the_demo_brands_are_approved(users):
    from brands.approval import DEMO_NOTE
    from brands.demo import seed_brands

    brands = seed_brands(users["mia"])
    assert {b.approval for b in brands} == {Brand.Approval.APPROVED}
    assert {(b.approval_decided_by, b.approval_note) for b in brands} == {(None, DEMO_NOTE)}
    admin = UserFactory(username="admin", roles=[], is_staff=True)
    Brand.objects.update(approval=Brand.Approval.PENDING)
    brands = seed_brands(users["mia"])
    assert {b.approval_decided_by for b in brands} == {admin}
