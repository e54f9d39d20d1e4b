"""Browser journey: the author swipes an option (issue 16), in real Chromium against the live app, with a
real Celery worker whose writer is the in-process engine on SmolLM2-135M (no vLLM server to start).

nora opens her finished request (three options, stored as the worker stores them), writes option 2
again and watches it being written; the page reloads with its new text and "2 versions", the other two
options as they were. She compares the two versions side by side, restores version 1, takes option 2
as chapter 3 and continues the story from chapter 2 as a branch; the original keeps its chapter 3.

What the small model writes cannot be predicted, so the journey checks what the pages show around it
(progress, versions, the comparison, labels, counts) and that the other options did not change.
"""

from __future__ import annotations

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from tests.factories import PASSWORD, UserFactory, story_with_chapters
from writer.models import GenerationOption, GenerationRequest, OptionVersion, Story
from writer.versions import option_versions_first

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SWIPE_TIMEOUT_MS = 300_000  # the worker loads SmolLM2 (~5-10 s) and writes 16 + 16 tokens on a busy box
TEXTS = (
    "Lou opened the stall at dusk and counted the lanterns twice.",
    "Pip ran in late, soaked, with a bag of oranges nobody had asked for.",
    "The harbour bell rang nine times, and the queue went quiet.",
)


@pytest.fixture
def vllm_settings(settings, model_dir, monkeypatch):
    """The writer is the in-process engine in the worker (it reads these from its environment)."""
    settings.WRITER_ENGINE = "local"
    settings.WRITER_MODEL_PATH = model_dir
    settings.WRITER_TOKENIZER_PATH = str(model_dir)
    settings.WRITER_REASONING_TOKENS = 16
    monkeypatch.setenv("WRITER_REASONING_TOKENS", "16")  # the worker's, as the tests' own settings
    return settings


def _finished_request(story: Story, author) -> GenerationRequest:  # noqa: ANN001
    """Three plain options, stored as the worker stores them (version 1 each)."""
    gen = GenerationRequest.objects.create(
        story=story, requested_by=author, kind=GenerationRequest.Kind.AUTHOR, n=3, engine="local",
        max_new_tokens=16, next_number=3, status=GenerationRequest.Status.SUCCEEDED, stage="Done",
        prompt_tokens=300, model_name="smollm2", finished_at=timezone.now(),
    )
    for index, text in enumerate(TEXTS):
        raw = f"<start_working_out>A plan.<end_working_out><SOLUTION>{text}</SOLUTION>"
        GenerationOption.objects.create(
            request=gen, index=index, raw_output=raw, reasoning="A plan.", text=text, format_ok=True, tokens=16
        )
    option_versions_first(request=gen, model_name="smollm2")
    return gen


def test_author_swipes_an_option_compares_restores_and_branches(open_journey):
    nora = UserFactory(username="nora", roles=["author"])
    story = story_with_chapters(owner=nora, chapters=2, title="Salt and Sugar", slug="salt-and-sugar")
    gen = _finished_request(story, nora)
    one, two, three = gen.options.order_by("index")

    j = open_journey("author-swipes")
    page = j.page
    j.log_in("nora", PASSWORD)
    j.goto(gen.get_absolute_url())
    options = [page.locator(f"#option-{i}") for i in range(3)]
    for option, text in zip(options, TEXTS, strict=True):
        expect(option.locator(".prose")).to_contain_text(text)
        expect(option.locator(".versions-link")).to_have_text("1 version")
    j.shot("request")

    # Write option 2 again: the page says so, shows the swipe's progress, and reloads when it is done.
    options[1].get_by_role("button", name="Write this option again").click()
    expect(page.locator(".messages")).to_contain_text("Writing Option 2 again; the other options stay as they are")
    running = options[1].locator(".swipe-control.running")
    expect(running).to_contain_text("Writing Option 2 again")
    expect(running.locator("progress")).to_be_visible()
    j.shot("swipe-running")
    expect(options[1].locator(".versions-link")).to_have_text("2 versions", timeout=SWIPE_TIMEOUT_MS)
    expect(options[1].locator(".swipe-control.running")).to_have_count(0)
    expect(options[0].locator(".prose")).to_contain_text(TEXTS[0])
    expect(options[2].locator(".prose")).to_contain_text(TEXTS[2])
    expect(options[0].locator(".versions-link")).to_have_text("1 version")
    j.shot("swiped")
    two.refresh_from_db()
    v2 = OptionVersion.objects.get(option=two, number=2)
    assert (v2.cause, v2.created_by, v2.request_id, two.text) == ("swipe", nora, gen.pk, v2.text)
    for option, text in ((one, TEXTS[0]), (three, TEXTS[2])):
        option.refresh_from_db()
        assert option.text == text and option.versions.count() == 1

    # Its versions, then the two side by side.
    options[1].locator(".versions-link").click()
    expect(page.locator("h1")).to_contain_text("Versions")
    expect(page.locator("#version-2")).to_contain_text("current")
    expect(page.locator("#version-2 .version-meta")).to_contain_text("Written again (swipe)")
    expect(page.locator("#version-1 .version-meta")).to_contain_text("Written by the writer")
    j.shot("versions")
    page.get_by_role("button", name="Compare side by side").click()
    expect(page.locator("h1")).to_contain_text("Version 1 and version 2")
    expect(page.locator("table.diff")).to_contain_text(TEXTS[1].split(",")[0])
    j.shot("compare")

    # Restore version 1: a third version, the option's first text back.
    page.get_by_role("link", name="Versions of Option 2 of chapter 3").click()
    page.get_by_role("button", name="Restore version 1").click()
    expect(page.locator(".messages")).to_contain_text("Version 1 of Option 2 restored as version 3.")
    expect(options[1].locator(".prose")).to_contain_text(TEXTS[1])
    expect(options[1].locator(".versions-link")).to_have_text("3 versions")
    j.shot("restored")

    # Take it as chapter 3, then continue the story from chapter 2 as a branch.
    options[1].get_by_text("Accept this option…").click()
    options[1].get_by_role("button", name="Accept as the next chapter").click()
    expect(page.locator(".messages")).to_contain_text("Option 2 is now chapter 3.")
    page.get_by_role("link", name="← Chapter 2").click()
    page.get_by_role("button", name="Continue from here (branch)").click()
    expect(page.locator(".messages")).to_contain_text("A branch from chapter 2")
    expect(page.locator(".branch-of")).to_contain_text("Branch of Salt and Sugar from chapter 2.")
    expect(page.locator("ol.chapters li")).to_have_count(2)
    j.shot("branch")
    branch = Story.objects.get(branch_of=story)
    assert branch.chapters.count() == 2 and story.chapters.count() == 3
    assert story.chapters.get(number=3).text == TEXTS[1]
    page.get_by_role("link", name="Salt and Sugar", exact=True).click()
    expect(page.locator(".branches")).to_contain_text(branch.title)
    j.shot("original-lists-branch")
