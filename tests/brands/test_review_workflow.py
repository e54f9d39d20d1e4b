"""The review workflow beyond yes and no (issue 17, part 6): request changes and the author's revision,
approve with an edit of the placed passage only, policy findings, and the SLA of the queue."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from brands import review, selectors, services
from brands.models import BrandSuitability, PlacementDecision, StorySuitability, text_hash
from mesu_web.errors import ApplicationError
from mesu_web.notifications.models import Notification
from tests.factories import UserFactory, approved_brand, story_with_chapters
from writer.models import GenerationOption, GenerationRequest, OptionVersion, ReviewStatus

BEFORE = "Lou walked to the beach at dawn.\n\n"
PASSAGE = "She waxed her Tidewave board until it shone."
AFTER = "\n\nThe waves came in grey and slow."
TEXT = BEFORE + PASSAGE + AFTER


@pytest.fixture
def surf(users):
    brand = approved_brand(
        name="Tidewave", managers=[users["mia"]], description="Surfboards.", banned_themes="violence"
    )
    services.asset_create(brand=brand, kind="product", name="Board", terms="Tidewave")
    return brand


@pytest.fixture
def story(users):
    return story_with_chapters(owner=users["alice"], chapters=2, slug="beach", is_published=True)


def make_option(story, brand, *, text=TEXT, placed=True, index=0, request=None, **fields):  # noqa: ANN001, ANN201
    request = request or GenerationRequest.objects.create(
        story=story, requested_by=story.owner, kind="author", engine="vllm", max_new_tokens=24, next_number=3,
        n=3, status=GenerationRequest.Status.SUCCEEDED, use_brands=True,
    )
    start = text.index("Tidewave")
    values = {
        "request": request, "index": index, "text": text, "format_ok": True, "brand": brand,
        "asset": brand.assets.first(), "mentions": [[start, start + len("Tidewave")]], "placement_found": True,
        "review_status": ReviewStatus.PENDING,
        "placed_passage": [text.index(PASSAGE), text.index(PASSAGE) + len(PASSAGE)] if placed and PASSAGE in text else [],
        "placement_similarity": {"rouge_l": 0.97, "bertscore": 0.9},
    }
    values.update(fields)
    return GenerationOption.objects.create(**values)


# --- The placed passage (pure) ---------------------------------------------------------------------


def test_the_editable_span_is_the_placed_passage_else_the_lines_of_the_mentions():
    start = TEXT.index(PASSAGE)
    assert review.editable_span(TEXT, [start, start + len(PASSAGE)], []) == (start, start + len(PASSAGE))
    mention = TEXT.index("Tidewave")
    assert review.editable_span(TEXT, [], [[mention, mention + 8]]) == (start, start + len(PASSAGE))
    assert review.editable_span(TEXT, [], []) is None
    assert review.editable_span(TEXT, [5, 999], []) is None  # offsets of another text


def test_an_edit_outside_the_passage_is_refused_byte_for_byte():
    span = (TEXT.index(PASSAGE), TEXT.index(PASSAGE) + len(PASSAGE))
    new = BEFORE + "Her Tidewave board shone." + AFTER
    assert review.edited_span(TEXT, new, span) == (len(BEFORE), len(BEFORE) + len("Her Tidewave board shone."))
    with pytest.raises(ApplicationError, match="before the placed passage"):
        review.edited_span(TEXT, BEFORE.replace("dawn", "dusk") + PASSAGE + AFTER, span)
    with pytest.raises(ApplicationError, match="after the placed passage"):
        review.edited_span(TEXT, BEFORE + PASSAGE + AFTER + " ", span)
    with pytest.raises(ApplicationError, match="after the placed passage"):
        review.edited_span(TEXT, BEFORE + PASSAGE + AFTER.replace("grey", "gray"), span)


# --- Policy findings (pure) ------------------------------------------------------------------------


def facts(**kw):  # noqa: ANN003, ANN201
    return review.PolicyFacts(brand_name="Tidewave", **kw)


def rules_of(found):  # noqa: ANN001, ANN201
    return [f["rule"] for f in found]


def test_each_policy_rule_says_what_matched():
    span = (TEXT.index(PASSAGE), TEXT.index(PASSAGE) + len(PASSAGE))
    violent = TEXT.replace("grey and slow", "with violence")
    assert rules_of(review.banned_theme_findings(violent, span, facts(banned_themes=["violence"]))) == ["banned_theme"]
    far = "x" * 1000 + " violence"
    assert review.banned_theme_findings(TEXT + far, span, facts(banned_themes=["violence"])) == []
    found = review.other_brand_findings(TEXT + " A Ledger Bank sign.", "", facts(other_brand_names={"Ledger": ["Ledger Bank"]}))
    assert rules_of(found) == ["other_brand"] and "Ledger" in found[0]["detail"]
    assert rules_of(review.similarity_findings({"rouge_l": 0.91})) == ["low_similarity"]
    assert review.similarity_findings({"rouge_l": 0.95}) == [] and review.similarity_findings({}) == []
    assert rules_of(review.sensitive_findings(facts(story_categories=["IAB7"]))) == ["sensitive_category"]
    assert review.sensitive_findings(facts(story_categories=["health"], allow_health=True)) == []
    assert rules_of(review.sensitive_findings(facts(story_categories=["politics"]))) == ["sensitive_category"]
    assert rules_of(review.tier_findings(facts(story_tier="high", max_tier="medium"))) == ["risk_tier"]
    assert review.tier_findings(facts(story_tier="medium", max_tier="medium")) == []
    assert review.tier_findings(facts(story_tier=None)) == []
    assert rules_of(review.reasoning_only_findings([], [[0, 3]], facts())) == ["reasoning_only"]
    assert review.reasoning_only_findings([[0, 3]], [[0, 3]], facts()) == []


def test_findings_are_stored_and_shown_on_the_review_page_and_in_the_queue(surf, story, client_for):
    StorySuitability.objects.create(story=story, categories=["health"], risk_tier="high")
    option = make_option(story, surf, placement_similarity={"rouge_l": 0.8})
    review.options_after_store(options=[option])
    option.refresh_from_db()
    assert set(rules_of(option.policy_findings)) == {"low_similarity", "sensitive_category", "risk_tier"}
    assert option.review_status == ReviewStatus.PENDING
    mia = client_for("mia")
    page = mia.get(reverse("brands:review_detail", args=[option.pk])).content.decode()
    assert "Policy findings" in page and "Risk tier above the brand" in page and "ROUGE-L 0.800" in page
    queue = mia.get(reverse("brands:review_queue")).content.decode()
    assert "sensitive category (health)" in queue


# --- Request changes, then the author's revision ---------------------------------------------------


def test_request_changes_then_the_author_revises_and_it_comes_back(surf, story, users, client_for):
    option = make_option(story, surf)
    mia = client_for("mia")
    response = mia.post(reverse("brands:option_request_changes", args=[option.pk]), {"comment": "Name it once, softly."})
    assert response.status_code == 302
    option.refresh_from_db()
    assert option.review_status == ReviewStatus.CHANGES and option.review_reason == "Name it once, softly."
    decision = PlacementDecision.objects.get(option=option)
    assert decision.action == "changes" and decision.reviewer == users["mia"]
    assert Notification.objects.filter(user=users["alice"], message__contains="asks for changes").exists()
    assert not selectors.review_queue_for_manager(user=users["mia"]).filter(pk=option.pk).exists()

    # The author sees the comment and the form on the request page, and revises.
    alice = client_for("alice")
    page = alice.get(option.request.get_absolute_url()).content.decode()
    assert "asks for changes" in page and "Name it once, softly." in page
    form = alice.get(reverse("brands:option_revise", args=[option.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert PASSAGE in form
    new_passage = "She waxed the Tidewave until it shone."
    response = alice.post(reverse("brands:option_revise", args=[option.pk]), {"passage": new_passage})
    assert response.status_code == 302
    option.refresh_from_db()
    assert option.text == BEFORE + new_passage + AFTER
    assert option.review_status == ReviewStatus.PENDING and option.reviewed_by is None
    assert option.placed_passage == [len(BEFORE), len(BEFORE) + len(new_passage)]
    assert list(OptionVersion.objects.filter(option=option).values_list("number", "text")) == [
        (1, TEXT), (2, option.text)
    ]
    assert selectors.review_queue_for_manager(user=users["mia"]).filter(pk=option.pk).exists()
    assert Notification.objects.filter(user=users["mia"], message__contains="revised").exists()


@pytest.mark.parametrize(
    ("comment", "message"),
    [("", "Say what should change"), ("   ", "Say what should change"), ("x" * 2001, "keep it under 2,000")],
)
def test_an_empty_or_huge_comment_is_refused_and_nothing_changes(surf, story, client_for, comment, message):
    option = make_option(story, surf)
    response = client_for("mia").post(reverse("brands:option_request_changes", args=[option.pk]), {"comment": comment})
    assert response.status_code == 400 and message in response.content.decode()
    option.refresh_from_db()
    assert option.review_status == ReviewStatus.PENDING and not PlacementDecision.objects.exists()


def test_only_the_story_author_revises_and_only_a_sent_back_option(surf, story, users, client_for):
    option = make_option(story, surf)
    with pytest.raises(ApplicationError, match="only a placement whose brand asked for changes"):
        review.option_revise(option=option, user=users["alice"], passage="The Tidewave shone.")
    services.option_changes_request(option=option, reviewer=users["mia"], comment="Softer.")
    with pytest.raises(ApplicationError, match="Only the story's author"):
        review.option_revise(option=option, user=users["bob"], passage="The Tidewave shone.")
    for who in ("bob", "rita", "mia", "root"):
        assert client_for(who).post(reverse("brands:option_revise", args=[option.pk]), {"passage": "x"}).status_code == 404
    # A revision that drops the brand is refused; the text stays as it was.
    response = client_for("alice").post(
        reverse("brands:option_revise", args=[option.pk]), {"passage": "She waxed her board."}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200 and "must still name Tidewave" in response.content.decode()
    assert "She waxed her board." in response.content.decode()  # what was written is kept in the form
    option.refresh_from_db()
    assert option.text == TEXT and option.review_status == ReviewStatus.CHANGES


def test_a_decision_on_an_option_already_decided_or_of_another_brand(surf, story, users, client_for):
    option = make_option(story, surf)
    services.option_reject(option=option, reviewer=users["mia"], reason="No.")
    with pytest.raises(ApplicationError, match="only a waiting one"):
        services.option_changes_request(option=option, reviewer=users["mia"], comment="Softer.")
    response = client_for("mia").post(reverse("brands:option_request_changes", args=[option.pk]), {"comment": "x"})
    assert response.status_code == 400 and "only a waiting one" in response.content.decode()
    other = UserFactory(username="max", roles=["brand_manager"])
    fresh = make_option(story, surf, index=1, request=option.request)
    with pytest.raises(ApplicationError, match="Only a manager of this brand"):
        services.option_changes_request(option=fresh, reviewer=other, comment="x")
    c = client_for("alice")
    c.force_login(other)
    assert c.post(reverse("brands:option_request_changes", args=[fresh.pk]), {"comment": "x"}).status_code == 404
    assert c.post(reverse("brands:option_approve_edit", args=[fresh.pk]), {"passage": "x"}).status_code == 404


# --- Approve with an edit of the placed passage ----------------------------------------------------


def test_approve_with_an_edit_binds_the_approval_to_the_edited_text(surf, story, users, client_for):
    option = make_option(story, surf)
    new_passage = "Her Tidewave board shone in the first light."
    response = client_for("mia").post(reverse("brands:option_approve_edit", args=[option.pk]), {"passage": new_passage})
    assert response.status_code == 302
    option.refresh_from_db()
    assert option.text == BEFORE + new_passage + AFTER
    assert option.review_status == ReviewStatus.APPROVED
    assert option.approved_text_hash == text_hash(option.text)
    decision = PlacementDecision.objects.get(option=option)
    assert decision.action == PlacementDecision.Action.APPROVED_WITH_EDIT and decision.text_hash == text_hash(option.text)
    versions = list(OptionVersion.objects.filter(option=option).order_by("number"))
    assert [v.text for v in versions] == [TEXT, option.text] and versions[1].created_by == users["mia"]


def test_an_edit_outside_the_passage_or_without_the_brand_is_refused(surf, story, users, client_for):
    option = make_option(story, surf)
    with pytest.raises(ApplicationError, match="only the placed passage may be edited"):
        services.option_approve_with_edit(option=option, reviewer=users["mia"], text=TEXT.replace("dawn", "dusk"))
    response = client_for("mia").post(reverse("brands:option_approve_edit", args=[option.pk]), {"passage": "A plain board."})
    assert response.status_code == 400 and "must still name Tidewave" in response.content.decode()
    assert "A plain board." in response.content.decode()  # the edit is kept in the form
    response = client_for("mia").post(reverse("brands:option_approve_edit", args=[option.pk]), {"passage": PASSAGE})
    assert "The passage is unchanged" in response.content.decode()
    option.refresh_from_db()
    assert option.text == TEXT and option.review_status == ReviewStatus.PENDING
    assert not PlacementDecision.objects.exists() and not OptionVersion.objects.filter(option=option).exists()


def test_an_approval_refused_for_the_budget_keeps_the_text(surf, story, users):
    from decimal import Decimal

    from tests.factories import live_campaign

    campaign = live_campaign(surf, pricing="fixed", price=Decimal("10"), budget_total=Decimal("5"))
    option = make_option(story, surf, campaign=campaign)
    with pytest.raises(ApplicationError, match="no budget left"):
        services.option_approve_with_edit(
            option=option, reviewer=users["mia"], text=BEFORE + "The Tidewave shone." + AFTER
        )
    option.refresh_from_db()
    assert option.text == TEXT and option.review_status == ReviewStatus.PENDING


# --- SLA -------------------------------------------------------------------------------------------


def test_placements_past_the_sla_are_flagged_and_counted_oldest_first(surf, story, users, client_for):
    old = make_option(story, surf)
    GenerationOption.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=4))
    recent = make_option(story, surf, index=1)
    GenerationOption.objects.filter(pk=recent.pk).update(created_at=timezone.now() - timedelta(days=2))
    assert selectors.review_queue_overdue_count(user=users["mia"]) == 1  # default 3 days
    page = selectors.review_queue_page(user=users["mia"], number=1, per_page=25)
    assert [(r.pk, r.overdue) for r in page] == [(old.pk, True), (recent.pk, False)]
    html = client_for("mia").get(reverse("brands:review_queue")).content.decode()
    assert "1 past the review SLA" in html and html.count("past SLA") == 1
    BrandSuitability.objects.update_or_create(brand=surf, defaults={"review_sla_days": 1})
    assert selectors.review_queue_overdue_count(user=users["mia"]) == 2
    assert all(r.overdue for r in selectors.review_queue_page(user=users["mia"], number=1, per_page=25))
    assert selectors.review_queue_overdue_count(user=UserFactory(username="max", roles=["brand_manager"])) == 0


def test_the_writer_revises_the_placed_passage_with_the_brands_comment(surf, story, users, client_for):
    """Issue 17: "the author or the writer revises the passage". The author's "Ask the writer to revise it"
    is the passage tool on the placed passage, with the brand's comment as its instruction; accepting the
    writer's change sends the option back to the brand's review (the run itself is tests/writer/test_passages'
    business: here the writer's answer is put on the finished row)."""
    from writer.models import PassageEdit

    option = make_option(story, surf)
    services.option_changes_request(option=option, reviewer=users["mia"], comment="Name it once, softly.")
    alice = client_for("alice")
    form = alice.get(reverse("brands:option_revise", args=[option.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert "Ask the writer to revise it" in form and 'name="instruction" value="Name it once, softly."' in form
    response = alice.post(
        reverse("writer:passage_option", args=[option.pk]),
        {"tool": "rewrite", "passage": PASSAGE, "instruction": "Name it once, softly."},
    )
    assert response.status_code == 302, response.content[:500]
    edit = PassageEdit.objects.get(option=option)
    assert (edit.original, edit.instruction) == (PASSAGE, "Name it once, softly.")

    # The writer's passage drops the brand: refused, nothing changes.
    PassageEdit.objects.filter(pk=edit.pk).update(status="succeeded", result="She waxed her board until it shone.")
    alice.post(reverse("writer:passage_accept", args=[edit.pk]))
    option.refresh_from_db()
    assert option.text == TEXT and option.review_status == ReviewStatus.CHANGES

    revised = "She waxed the Tidewave once, softly."
    PassageEdit.objects.filter(pk=edit.pk).update(result=revised)
    alice.post(reverse("writer:passage_accept", args=[edit.pk]))
    option.refresh_from_db()
    assert option.text == BEFORE + revised + AFTER
    assert option.review_status == ReviewStatus.PENDING
    assert OptionVersion.objects.filter(option=option).count() == 2
    assert selectors.review_queue_for_manager(user=users["mia"]).filter(pk=option.pk).exists()
