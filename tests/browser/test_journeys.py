"""One browser journey per role (issue 6), in real Chromium against the running app on real services:
PostgreSQL with pgvector, Redis, a Celery worker process and the vLLM CPU server with SmolLM2.

What the small model writes in 16 tokens cannot be predicted, so the journeys check what the pages
show around it (progress, options, labels, counts), never its words. Where a journey needs a brand
placement that a writer proposed, it is seeded as the worker stores one (the same mention finder),
because SmolLM2-135M naming a given asset in 16 tokens is chance: journeys 2 and 3.
"""

from __future__ import annotations

import re
import time
import uuid

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from playwright.sync_api import expect

from brands import services as brand_services
from brands.approval import brand_approve
from brands.models import Brand, BrandAsset, PlacementView
from brands.placements import find_mentions, mention_spans
from tests.factories import UserFactory, story_with_chapters
from training.models import EvaluationRun, TrainingJob, WriterAdapter
from writer.demo import DEMO_USERS, seed_demo
from writer.models import GenerationOption, GenerationRequest, ReviewStatus, Story

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.vllm]

PASSWORD = "lantern-quay-salt-42"
GENERATION_TIMEOUT_MS = 300_000  # queue + prompt + 3 x 16 tokens: ~5-20 s seen, but on a slow day the vLLM CPU server took 120 s to start a cold 3,500-token prompt (2026-12-07), then a retry
TRAINING_TIMEOUT_MS = 300_000  # loading SmolLM2 and 2 GRPO steps (~60-90 s seen)
EVALUATION_TIMEOUT_MS = 120_000


def _mark_page(page) -> None:  # noqa: ANN001 (a Page)
    """Tag the loaded document: the tag survives htmx swaps and is gone after a full page load."""
    page.evaluate("window.__journeyMark = 'kept'")


def _page_kept(page) -> bool:  # noqa: ANN001
    return page.evaluate("window.__journeyMark === 'kept'")


# --- 1. Author ---------------------------------------------------------------------------------------


def test_author_signs_up_writes_imports_and_accepts_an_edited_chapter(open_journey, samples_dir, tmp_path):
    j = open_journey("author")
    page = j.page
    j.goto("/")
    page.get_by_role("link", name="Sign up").click()
    page.fill("#id_username", "nora")
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.check("input[name=role][value=author]")
    j.shot("sign-up")
    page.get_by_role("button", name="Create my account").click()
    expect(page.locator(".messages")).to_contain_text("Welcome to MeSu Studio, nora!")
    expect(page.locator(".topbar .role")).to_have_text("author")

    # A story with its chapter 0: the metadata the writer reads before every chapter.
    page.get_by_role("link", name="New story").click()
    page.fill("#id_title", "Salt and Sugar")
    page.fill("#id_author_name", "Nora Quill")
    page.fill("#id_summary", "Lou and Pip run a night-market bakery stall in Porthwen, a rainy seaside town.")
    page.fill("#id_genre", "slice of life")
    page.fill("#id_tags", "seaside, found family, cosy")
    page.fill("#id_characters", "Lou (baker, shy, stubborn); Pip (her loud best friend, sells lanterns).")
    page.fill("#id_setting", "Porthwen harbour at night: stalls, lanterns, rain and the smell of salt.")
    page.fill("#id_intent_notes", "Cosy and funny; no villains; every chapter ends with food.")
    j.shot("new-story")
    page.get_by_role("button", name="Create the story").click()
    expect(page.locator(".messages")).to_contain_text("Story created. Add its first chapter.")

    # Its first chapter from a file.
    chapter_file = tmp_path / "chapter-1.md"
    chapter_file.write_text(
        "Lou opened the stall at dusk. The rain came in sideways off the harbour, and Pip was late again.\n\n"
        "\"Lanterns first,\" Pip said when she finally arrived, shaking water from her hood. \"Buns after.\"\n\n"
        "Lou handed her a cinnamon bun anyway. The queue was already three fishermen long.\n",
        encoding="utf-8",
    )
    page.fill("#id_title", "The stall at dusk")
    page.set_input_files("#id_file", str(chapter_file))
    page.get_by_role("button", name="Save chapter").click()
    expect(page.locator(".messages")).to_contain_text("Chapter 1 added.")
    expect(page.locator("ol.chapters li")).to_have_count(1)
    page.get_by_text("Chapter 0 — characters, setting, intent").click()
    expect(page.locator("details dl")).to_contain_text("every chapter ends with food")
    j.shot("story")

    # A whole book from a file: a second story, cut into chapters at its headings.
    page.get_by_role("link", name="Import a book").click()
    page.fill("#id_title", "Neon Rain")
    page.fill("#id_author_name", "Nora Quill")
    page.set_input_files("#id_file", str(samples_dir / "neon_rain.txt"))
    j.shot("import-book")
    page.get_by_role("button", name="Import").click()
    expect(page.locator(".messages")).to_contain_text("Imported 5 chapters")
    expect(page.locator("ol.chapters li")).to_have_count(5)
    j.shot("imported-book")

    # Ask for the next chapter of the first story and watch it being written.
    page.locator(".brand").click()
    expect(page.locator(".stories").first).to_contain_text("Salt and Sugar")
    expect(page.locator(".stories").first).to_contain_text("Neon Rain")
    page.get_by_role("link", name="Salt and Sugar").first.click()
    page.select_option("#id_n", "3")
    page.get_by_role("button", name="Ask the AI writer").click()
    expect(page.locator("h1")).to_contain_text("Chapter 2")
    progress = page.locator("#request-body .progress-card")
    expect(progress).to_be_visible()
    expect(progress.locator("progress")).to_be_visible()
    _mark_page(page)
    j.shot("progress")
    options = page.locator("#request-body article.option")
    expect(options).to_have_count(3, timeout=GENERATION_TIMEOUT_MS)
    assert _page_kept(page), "the options should arrive by htmx polling, without a page load"
    expect(page.locator("#request-body")).to_contain_text("3 options")
    for i in range(3):
        expect(options.nth(i).locator(":scope > h2")).to_contain_text(f"Option {i + 1}")
    j.shot("options")

    # Accept option 2, edited.
    option = page.locator("#option-1")
    option.locator("summary", has_text="Accept this option").click()
    option.locator("input[name=title]").fill("Lanterns on the quay")
    text = option.locator("textarea[name=text]")
    edited = "Lou lit the lanterns along the quay, one by one, and Pip counted them out loud.\n\n" + text.input_value()
    text.fill(edited)
    j.shot("accept-edited")
    option.get_by_role("button", name="Accept as the next chapter").click()
    expect(page.locator(".messages")).to_contain_text("Option 2 is now chapter 2.")
    expect(page.locator("article.reading > h1")).to_contain_text("Lanterns on the quay")
    expect(page.locator("article.reading .badge")).to_have_text("Written with the AI writer")
    expect(page.locator("article.reading .prose")).to_contain_text("Lou lit the lanterns along the quay")
    expect(page.locator(".disclosure")).to_have_count(0)  # the story is not opted in to brands
    j.shot("chapter-2")

    story = Story.objects.get(title="Salt and Sugar")
    assert list(story.chapters.order_by("number").values_list("number", "source")) == [
        (1, "uploaded"),
        (2, "generated"),
    ]
    assert story.chapters.get(number=2).text.startswith("Lou lit the lanterns along the quay")
    page.get_by_role("link", name="← Salt and Sugar").click()
    page.locator(".requests a").first.click()
    expect(page.locator("#option-1 .badge.ok")).to_contain_text("Accepted as chapter 2")
    expect(page.locator("details.accept")).to_have_count(0)  # one option per request is accepted
    j.shot("request-accepted")


# --- 2. Reader ---------------------------------------------------------------------------------------


def _approved_placement(*, story: Story, reader, manager, brand: Brand, text: str) -> GenerationOption:  # noqa: ANN001
    """A reader's earlier chapter with a placement of `brand`, stored as the worker stores one (mentions
    from the same finder) and approved by the brand's manager through the real service."""
    asset = brand.assets.order_by("pk").first()
    request = GenerationRequest.objects.create(
        story=story,
        requested_by=reader,
        kind=GenerationRequest.Kind.READER,
        n=1,
        preference="Something summery: Wren learns to surf.",
        engine="vllm",
        max_new_tokens=16,
        next_number=story.chapters.count() + 1,
        status=GenerationRequest.Status.SUCCEEDED,
        stage="Done",
        prompt_tokens=3900,
        use_brands=True,
        model_name="smollm2",
        finished_at=timezone.now(),
    )
    mentions = mention_spans(find_mentions(text, asset.terms))
    assert mentions, f"the seeded text must name {asset.name}"
    option = GenerationOption.objects.create(
        request=request,
        index=0,
        text=text,
        reasoning="A summer lesson keeps the warm tone; the board is part of the scene.",
        format_ok=True,
        tokens=16,
        brand=brand,
        asset=asset,
        placement_hint="as a prop in the scene",
        mentions=mentions,
        placement_found=True,
        review_status=ReviewStatus.PENDING,
    )
    return brand_services.option_approve(option=option, reviewer=manager)


def test_reader_asks_for_a_personal_chapter_reads_a_sponsored_one_and_turns_sponsorship_off(open_journey):
    seed_demo()  # ava's two published stories (the lighthouse one opted in), remy, bree's three brands
    passwords = {demo.username: demo.password for demo in DEMO_USERS}
    lighthouse = Story.objects.get(title="The Lighthouse Keeper's Daughter")
    remy = get_user_model().objects.get(username="remy")
    bree = get_user_model().objects.get(username="bree")
    tidewave = Brand.objects.get(name="Tidewave Surf Co.")
    sponsored = _approved_placement(
        story=lighthouse,
        reader=remy,
        manager=bree,
        brand=tidewave,
        text="Ravi paddled out on a borrowed Tidewave Glide and fell off twice before the first wave.\n\n"
        "Wren filmed the whole thing from the rocks, laughing.",
    )

    j = open_journey("reader")
    page = j.page
    j.log_in("remy", passwords["remy"])
    expect(page.locator(".topbar")).to_contain_text("Notifications 1")  # the brand's decision

    # Find the story and ask for a chapter of one's own.
    page.get_by_role("link", name="The Lighthouse Keeper's Daughter").click()
    expect(page.locator("h2", has_text="Your own next chapter")).to_be_visible()
    wish = "A bit sad, not a tragedy: Wren films the last sunrise before the sale."
    page.fill("#id_preference", wish)
    j.shot("story")
    page.get_by_role("button", name="Write my chapter").click()
    expect(page.locator(".preference")).to_contain_text(wish)
    _mark_page(page)
    body = page.locator("#request-body")
    # The chapter, or, when the writer happened to name the matched brand, the notice that it waits
    # for the brand's review: the model decides, so either is right.
    expect(body.locator("article.option, .card:has-text('waiting for the brand')").first).to_be_visible(
        timeout=GENERATION_TIMEOUT_MS
    )
    assert _page_kept(page), "the chapter should arrive by htmx polling, without a page load"
    # A poll's answer inserts no refresh (a <noscript> parsed by htmx would: it reloaded the page in CI).
    page.wait_for_timeout(3_500)
    assert _page_kept(page), "the finished page should stay, not reload itself"
    mine = GenerationRequest.objects.exclude(pk=sponsored.request_id).get(requested_by=remy)
    assert mine.status == GenerationRequest.Status.SUCCEEDED and mine.kind == GenerationRequest.Kind.READER
    assert mine.use_brands  # opted-in story, sponsorship on: the writer was given a brand brief
    expect(body.locator(".disclosure")).to_have_count(0)  # nothing approved in it
    j.shot("personal-chapter")

    # The brand approved the earlier chapter: the notification leads to it, labelled.
    page.get_by_role("link", name="Notifications").click()
    item = page.locator(".notifications li", has_text="Tidewave Surf Co. approved Option 1")
    expect(item).to_be_visible()
    j.shot("notifications")
    item.get_by_role("link").click()
    expect(page.locator(".disclosure")).to_have_text("Includes a paid placement by Tidewave Surf Co.")
    expect(page.locator("#request-body article.option")).to_contain_text("Tidewave Glide")
    j.shot("sponsored-chapter")
    # A viewable impression: the placed passage half on screen for a second, posted once by the page.
    expect(page.locator("[data-impression-state='sent']")).to_have_count(1, timeout=10_000)
    assert PlacementView.objects.filter(option=sponsored, user=remy).count() == 1  # the dashboard's reader view

    # Turn sponsored chapters off (an htmx form: the switch flips in place).
    page.get_by_role("link", name="Sponsored chapters").click()
    switch = page.locator("#sponsorship")
    expect(switch.locator(".state")).to_have_text("on")
    j.shot("sponsorship-on")
    _mark_page(page)
    switch.get_by_role("button", name="Turn them off").click()
    expect(page.locator("#sponsorship .state")).to_have_text("off")
    assert _page_kept(page), "the switch should flip by htmx, without a page load"
    j.shot("sponsorship-off")
    page.reload()
    expect(page.locator("#sponsorship .state")).to_have_text("off")

    # The next chapter remy asks for carries no brand.
    j.goto(lighthouse.get_absolute_url())
    page.fill("#id_preference", "Jas and Wren on the quay at night, just talking.")
    page.get_by_role("button", name="Write my chapter").click()
    expect(page.locator("#request-body article.option")).to_have_count(1, timeout=GENERATION_TIMEOUT_MS)
    latest = GenerationRequest.objects.filter(requested_by=remy).latest("created_at")
    assert latest.pk not in (mine.pk, sponsored.request_id) and latest.use_brands is False
    assert not latest.options.exclude(brand=None).exists()
    expect(page.locator(".disclosure")).to_have_count(0)
    j.shot("plain-chapter")


# --- 3. Brand manager --------------------------------------------------------------------------------


def _proposed_placements(*, story: Story, author, brand: Brand) -> list[GenerationOption]:  # noqa: ANN001
    """An author's request whose options the writer gave `brand` (as _option_plans spreads a brand over
    the options), stored as the worker stores them: options that name an asset wait for review, one
    that names none is not sent."""
    lantern, gull = brand.assets.order_by("pk")
    texts = [
        (lantern, "Pip hung a Saltwick lantern over the buns, and the whole stall glowed amber in the rain."),
        (gull, "Wick the gull landed on the awning and stared at the cinnamon buns until Lou gave in."),
        (lantern, "The rain stopped at midnight. Lou counted the takings while Pip sang off-key."),
    ]
    request = GenerationRequest.objects.create(
        story=story,
        requested_by=author,
        kind=GenerationRequest.Kind.AUTHOR,
        n=len(texts),
        engine="vllm",
        max_new_tokens=16,
        next_number=story.chapters.count() + 1,
        status=GenerationRequest.Status.SUCCEEDED,
        stage="Done",
        prompt_tokens=420,
        use_brands=True,
        brand_note=f"Matched: {brand.name}",
        model_name="smollm2",
        finished_at=timezone.now(),
    )
    options = []
    for index, (asset, text) in enumerate(texts):
        mentions = mention_spans(find_mentions(text, asset.terms))
        options.append(
            GenerationOption.objects.create(
                request=request,
                index=index,
                text=text,
                reasoning="A warm light in the rain suits the stall scene.",
                format_ok=True,
                tokens=16,
                brand=brand,
                asset=asset,
                placement_hint="as a prop in the scene",
                mentions=mentions,
                placement_found=bool(mentions),
                review_status=ReviewStatus.PENDING if mentions else ReviewStatus.NOT_SENT,
            )
        )
    assert [o.review_status for o in options] == [ReviewStatus.PENDING, ReviewStatus.PENDING, ReviewStatus.NOT_SENT]
    return options


def _stat(page, name: str):  # noqa: ANN001, ANN202 (a Page, a Locator)
    return page.locator(f".stats dt:text-is('{name}') + dd")


def _wait_for(condition, *, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


def test_brand_manager_creates_a_brand_and_reviews_its_placements(open_journey):
    manager = UserFactory(username="mina", password=PASSWORD, roles=["brand_manager"])
    author = UserFactory(username="alice", password=PASSWORD, roles=["author"])
    story = story_with_chapters(owner=author, chapters=2, title="Salt Stall", slug="salt-stall")
    brand_services.story_brand_settings_update(story=story, opt_in=True)

    j = open_journey("brand-manager")
    page = j.page
    j.log_in("mina", PASSWORD)
    page.get_by_role("link", name="Brands", exact=True).click()
    expect(page.locator("main")).to_contain_text("You manage no brand yet")

    # A brand with its banned themes ...
    page.get_by_role("link", name="New brand").click()
    page.fill("#id_name", "Saltwick Lanterns")
    page.fill("#id_description", "Storm lanterns and lamps for harbours, night markets and windy seaside walks.")
    page.fill("#id_tone_of_voice", "Warm, cosy, a little old-fashioned.")
    page.fill("#id_target_audience", "Families and teens who love the seaside at night.")
    page.fill("#id_banned_themes", "violence, horror, gambling")
    page.fill("#id_max_placements_per_chapter", "1")
    j.shot("new-brand")
    page.get_by_role("button", name="Create the brand").click()
    expect(page.locator(".messages")).to_contain_text("Saltwick Lanterns created.")
    # Issue 18: a new brand waits for staff; its page says so.
    expect(page.locator(".approval-banner")).to_contain_text("Waiting for staff approval")
    expect(page.locator(".tag.theme")).to_have_text(["violence", "horror", "gambling"])

    # ... and its assets, added in place (htmx).
    _mark_page(page)
    assets = page.locator("#assets")
    for kind, name, description, terms in (
        ("product", "Saltwick storm lantern", "A brass storm lantern that never blows out.", "Saltwick lantern, storm lantern"),
        ("mascot", "Wick the gull", "A cheeky herring gull with a tiny lantern.", "Wick the gull, Wick"),
    ):
        assets.locator("select[name=kind]").select_option(kind)
        assets.locator("input[name=name]").fill(name)
        assets.locator("textarea[name=description]").fill(description)
        assets.locator("input[name=terms]").fill(terms)
        assets.get_by_role("button", name="Add the asset").click()
        expect(page.locator("#assets .msg")).to_have_text(f"{name} added.")
    expect(page.locator("#assets ul.assets > li")).to_have_count(2)
    expect(page.locator("#assets code.term")).to_have_count(4)
    assert sorted(page.locator("#assets code.term").all_inner_texts()) == [
        "Saltwick lantern", "Wick", "Wick the gull", "storm lantern"
    ]
    assert _page_kept(page), "assets should be added by htmx, without a page load"
    j.shot("brand")
    brand = Brand.objects.get(name="Saltwick Lanterns")
    # Staff approve the new brand (issue 18): until then none of its placements could be approved.
    staff = UserFactory(username="root", password=PASSWORD, roles=[], is_staff=True, is_superuser=True)
    brand_approve(brand=brand, staff_user=staff, note="Welcome.")
    # The worker embeds the profile and the assets from the embeddings queue: the brand is matchable.
    _wait_for(
        lambda: not BrandAsset.objects.filter(brand=brand, embedding=None).exists(),
        timeout=120,
        what="the worker to embed the brand's assets",
    )

    page.get_by_role("link", name="Dashboard").click()
    for name, value in (("Proposed", "0"), ("Approved", "0"), ("Rejected", "0"), ("Approval rate", "—")):
        expect(_stat(page, name)).to_have_text(value)
    j.shot("dashboard-before")

    # The writer proposes placements: two options name an asset, one names none.
    proposed, gull_option, _unsent = _proposed_placements(story=story, author=author, brand=brand)

    page.get_by_role("link", name="Review queue").click()
    expect(page.locator("h1")).to_contain_text("2 waiting")
    rows = page.locator(".queue-group tbody tr")
    expect(rows).to_have_count(2)
    # The queue's count (the staff's approval above is the other count: one unread notification).
    expect(page.locator(".topbar a[href='/brands/review/'] .count")).to_have_text("2")
    j.shot("queue")

    # Reject the gull's option, with a reason; its mention is highlighted.
    rows.filter(has_text="Wick the gull").get_by_role("link", name="Review").click()
    expect(page.locator("article.reading .placement-text mark.placement")).to_have_text(["Wick the gull"])
    expect(page.locator("h2", has_text="1 mention highlighted")).to_be_visible()
    reason = "A gull begging for buns reads like an advert in the middle of the scene."
    page.fill("textarea[name=reason]", reason)
    j.shot("review-reject")
    page.get_by_role("button", name="Reject").click()
    expect(page.locator(".messages")).to_contain_text("Option 2 for “Salt Stall” rejected")
    expect(page.locator("h1")).to_contain_text("1 waiting")

    # Approve the lantern's option.
    page.locator(".queue-group tbody tr").get_by_role("link", name="Review").click()
    expect(page.locator("article.reading .placement-text mark.placement")).to_have_text(["Saltwick lantern"])
    j.shot("review-approve")
    page.get_by_role("button", name="Approve Option 1").click()
    expect(page.locator(".messages")).to_contain_text("it is shown with the disclosure label")
    expect(page.locator("main")).to_contain_text("Nothing to review")
    j.shot("queue-empty")

    proposed.refresh_from_db()
    gull_option.refresh_from_db()
    assert proposed.review_status == ReviewStatus.APPROVED and proposed.reviewed_by == manager
    assert gull_option.review_status == ReviewStatus.REJECTED and gull_option.review_reason == reason
    assert author.notifications.count() == 2  # the author hears of both decisions

    # The dashboard changed.
    page.get_by_role("link", name="Brands", exact=True).click()
    page.get_by_role("link", name="Dashboard").click()
    for name, value in (("Proposed", "2"), ("Approved", "1"), ("Rejected", "1"), ("Waiting", "0"), ("Approval rate", "50%")):
        expect(_stat(page, name)).to_have_text(value)
    # This week's bars in the chart (12 weeks, two bars each): one approved, one rejected.
    expect(page.locator("svg rect.bar.approved:not([height='0'])")).to_have_count(1)
    expect(page.locator("svg rect.bar.rejected:not([height='0'])")).to_have_count(1)
    decisions = page.locator("section", has=page.locator("h2", has_text="Decisions")).locator("tbody tr")
    expect(decisions).to_have_count(2)
    expect(decisions.filter(has_text="Rejected")).to_contain_text(reason)
    j.shot("dashboard-after")


# --- 4. Admin ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    # Prompts of at most 512 tokens in the dataset: a GRPO step on the sample books then takes ~20-30 s
    # on the busy 2-core box instead of 70-85 s at 1,024 (measured with train_grpo).
    "journey_settings", [{"WRITER_CONTEXT_TOKENS": 512}], indirect=True, ids=["512-token-prompts"]
)
def test_admin_trains_activates_and_ranks_an_adapter(journey_settings, open_journey, samples_dir, vllm_server):
    UserFactory(username="root", password=PASSWORD, roles=[], is_staff=True, is_superuser=True)
    # A served name no earlier session left in the reused vLLM server (names are never reloaded).
    job_name = f"journey-{uuid.uuid4().hex[:6]}"

    j = open_journey("admin")
    page = j.page
    j.log_in("root", PASSWORD)
    page.get_by_role("link", name="Training").click()
    page.get_by_role("link", name="Books & datasets").click()
    expect(page.locator("main")).to_contain_text("No book yet.")

    # The two sample books into the training library.
    for filename, title in (("neon_rain.txt", "NEON RAIN"), ("the_lighthouse_keepers_daughter.md", "The Lighthouse Keeper's Daughter")):
        page.set_input_files("#id_file", str(samples_dir / filename))
        page.fill("#id_author", "MeSu samples")
        page.get_by_role("button", name="Import").click()
        expect(page.locator(".messages")).to_contain_text(f"Imported “{title}”")
    books = page.locator("table.table").first.locator("tbody tr")
    expect(books).to_have_count(2)
    j.shot("books")

    # A dataset: pairs from both books, split by book.
    page.fill("#id_name", "journey")
    page.get_by_role("button", name="Build").click()
    expect(page.locator(".messages")).to_contain_text("Dataset journey:")
    dataset_dir = journey_settings.TRAINING_DATASETS_DIR / "journey"
    assert (dataset_dir / "train.jsonl").is_file() and (dataset_dir / "test.jsonl").is_file()
    j.shot("dataset")

    # A short GRPO job from the dataset.
    page.get_by_role("link", name="Train on it").click()
    expect(page.locator("#id_dataset_dir")).to_have_value(str(dataset_dir))
    page.fill("#id_name", job_name)
    for field, value in (
        ("max_steps", "2"),
        ("num_generations", "2"),
        ("max_completion_length", "16"),
        ("lora_rank", "8"),
        ("gradient_accumulation_steps", "1"),
        ("rewards", "format_partial,rouge1"),
    ):
        page.fill(f"#id_{field}", value)
    j.shot("new-job")
    page.get_by_role("button", name="Queue the job").click()
    expect(page.locator(".messages")).to_contain_text(f"Training job “{job_name}” is queued")
    _mark_page(page)
    j.shot("job-queued")

    # The worker trains it; the page polls and the reward chart appears, then moves.
    body = page.locator("#job-body")
    # "total" is the last series. (A polyline has no box to be "visible" in Playwright's sense: the
    # steps are read from its points.)
    total = body.locator("svg.reward-chart polyline").last
    expect(body.locator("svg.reward-chart")).to_be_visible(timeout=TRAINING_TIMEOUT_MS)
    expect(total).to_have_attribute("points", re.compile(r"^\S+$"))  # one step: one point, a dot
    expect(body.locator("table tbody tr")).to_have_count(1)
    first_points = total.get_attribute("points")
    j.shot("job-first-step")
    expect(body.locator(".status.succeeded")).to_be_visible(timeout=TRAINING_TIMEOUT_MS)
    expect(body.locator("table tbody tr")).to_have_count(2)
    points = total.get_attribute("points")
    # The line grew by a step (and rescaled: its axis spans the rewards seen so far).
    assert len(points.split()) == 2 and points != first_points, "the chart should move with the second step"
    assert _page_kept(page), "the job page should update by htmx polling, without a page load"
    expect(body).to_contain_text("LoRA non-zero: yes")
    j.shot("job-done")
    job = TrainingJob.objects.get(name=job_name)
    assert job.status == TrainingJob.Status.SUCCEEDED and job.step == 2 and job.lora_nonzero

    # The registered adapter, made the active writer (hot-loaded into the vLLM server).
    adapter = WriterAdapter.objects.get(job=job)  # registered before the job is marked done
    expect(body).to_contain_text(f"Registered as {adapter.name}")
    page.get_by_role("link", name="Adapters", exact=True).click()
    row = page.locator("tbody tr:not(.export-row)", has_text=adapter.name)
    expect(row).to_contain_text("non-zero")
    j.shot("adapters")
    row.get_by_role("button", name="Make active").click()
    expect(page.locator(".messages")).to_contain_text(f"{adapter.name} now writes every new chapter.")
    expect(page.locator("tr.active-row")).to_contain_text(adapter.name)
    j.shot("adapter-active")
    adapter.refresh_from_db()
    assert adapter.is_active and adapter.lora_rank == 8 and not adapter.load_error
    served = httpx.get(f"{vllm_server}/models", timeout=10).json()["data"]
    assert adapter.name in [model["id"] for model in served]

    # The leaderboard: the base model and the adapter on the held-out split.
    for target in ("base", str(adapter.pk)):
        page.get_by_role("link", name="Leaderboard", exact=True).click()
        page.select_option("#id_target", target)
        page.fill("#id_dataset_dir", str(dataset_dir))
        page.fill("#id_limit", "1")
        page.fill("#id_max_new_tokens", "16")
        page.fill("#id_rewards", "format_partial,rouge1")
        page.get_by_role("button", name="Evaluate").click()
        expect(page.locator(".messages")).to_contain_text("held-out pair(s)")
        expect(page.locator("#evaluation-body .status.succeeded")).to_be_visible(timeout=EVALUATION_TIMEOUT_MS)
        expect(page.locator("#evaluation-body table")).to_contain_text("rouge1")
        j.shot(f"evaluation-{'base' if target == 'base' else 'adapter'}")
    page.get_by_role("link", name="Leaderboard", exact=True).click()
    rows = page.locator("table.leaderboard tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text="(base)")).to_have_count(1)
    expect(rows.filter(has_text=adapter.name)).to_have_count(1)
    expect(page.locator("table.leaderboard thead")).to_contain_text("rouge1")
    j.shot("leaderboard")
    assert EvaluationRun.objects.filter(status=EvaluationRun.Status.SUCCEEDED).count() == 2
