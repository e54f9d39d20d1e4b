"""Browser journey: the author rewrites a passage (issue 16, passage tools), in real Chromium against the
live app with a real Celery worker writing on the in-process transformers engine (SmolLM2-135M).

nora opens her finished request (two plain options, stored as the worker stores them). A selection that
runs from option 1 into option 2 is refused on the page; a triple-click on a paragraph of option 1
fills the tools' passage box. She asks for a rewrite with a word of instruction, watches the writer work
(htmx polling), sees the change as a word diff, accepts it, and finds the option's text changed and a
second version on its versions page. What the small model writes cannot be predicted: the journey checks
the pages around it, and the rows, never its words.

The worker runs the local engine (no vLLM server: `vllm_settings` is overridden below), with a short
reasoning budget through its environment.
"""

from __future__ import annotations

import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from tests.factories import PASSWORD, UserFactory, story_with_chapters
from writer.models import GenerationOption, GenerationRequest, OptionVersion, PassageEdit

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSAGE_TIMEOUT_MS = 240_000  # the worker loads torch and SmolLM2 (~10-30 s), then ~16 + 48 tokens on a CPU
OPENING = "Lou lit the lanterns along the quay, one by one, and Pip counted them out loud."
PARAGRAPH = "The first fisherman bought three buns and ate one standing in the rain, grinning at nobody."
CLOSING = "Then the wind turned, and the stall's canvas cracked like a sail."


@pytest.fixture
def vllm_settings(settings, model_dir, monkeypatch):
    """No vLLM server: the worker writes with the in-process engine, from its environment."""
    settings.WRITER_ENGINE = "local"
    settings.WRITER_MODEL_PATH = model_dir
    settings.WRITER_TOKENIZER_PATH = str(model_dir)
    monkeypatch.setenv("WRITER_REASONING_TOKENS", "16")  # the worker copies this process's environment
    return settings


def _request_with_options(owner) -> GenerationRequest:  # noqa: ANN001
    story = story_with_chapters(owner=owner, chapters=2, title="Salt and Sugar", slug="salt-and-sugar")
    request = GenerationRequest.objects.create(
        story=story, requested_by=owner, kind=GenerationRequest.Kind.AUTHOR, engine="local", max_new_tokens=16,
        next_number=3, n=2, status=GenerationRequest.Status.SUCCEEDED, model_name="smollm2",
        stage="Done", finished_at=timezone.now(),
    )
    GenerationOption.objects.create(
        request=request, index=0, text=f"{OPENING}\n\n{PARAGRAPH}\n\n{CLOSING}", format_ok=True, tokens=60
    )
    GenerationOption.objects.create(
        request=request, index=1, text="Morning came grey over Porthwen, and nobody bought anything.",
        format_ok=True, tokens=20,
    )
    return request


def test_author_rewrites_a_passage_of_an_option(open_journey):
    nora = UserFactory(username="nora", roles=["author"])
    request = _request_with_options(nora)
    option = request.options.get(index=0)

    j = open_journey("passage")
    page = j.page
    j.log_in("nora", PASSWORD)
    j.goto(f"/requests/{request.pk}/")
    first = page.locator("#option-0")
    expect(first.locator(".prose p")).to_have_count(3)
    tools = first.locator("details.passage-tools")
    expect(tools.locator("summary")).to_contain_text("Passage tools")

    # A selection from option 1 into option 2: refused on the page, nothing filled.
    page.evaluate(
        """() => {
            const range = document.createRange();
            range.setStart(document.querySelector('#option-0 .prose p:last-child').firstChild, 10);
            range.setEnd(document.querySelector('#option-1 .prose p').firstChild, 12);
            const selection = window.getSelection();
            selection.removeAllRanges();
            selection.addRange(range);
            document.dispatchEvent(new MouseEvent('mouseup', {bubbles: true}));
        }"""
    )
    note = first.locator(".passage-selection")
    expect(note).to_have_text("Select a passage inside one chapter: this selection runs across two texts.")
    expect(first.locator("textarea[name=passage]")).to_have_value("")
    j.shot("across-two-options")

    # A paragraph of option 1, selected as a person does: three clicks.
    first.locator(".prose p").nth(1).click(click_count=3)
    expect(first.locator("textarea[name=passage]")).to_have_value(re.compile(re.escape(PARAGRAPH)))
    expect(note).to_contain_text("Selected")
    expect(tools).to_have_attribute("open", "")
    expect(first.locator("input[name=tool][value=rewrite]")).to_be_checked()
    first.locator("input[name=instruction]").fill("more rain, fewer words")
    j.shot("passage-selected")
    first.get_by_role("button", name="Ask the writer").click()

    # The change's page: the writer at work, then the change as a diff.
    expect(page.locator("h1")).to_contain_text("Rewrite")
    expect(page.locator(".preference")).to_contain_text("more rain, fewer words")
    j.shot("writing")
    diff = page.locator("#passage-body .passage-diff")
    expect(diff).to_be_visible(timeout=PASSAGE_TIMEOUT_MS)
    edit = PassageEdit.objects.get()
    assert edit.status == "succeeded" and edit.result, edit.error
    assert (edit.option_id, edit.original, edit.instruction) == (option.pk, PARAGRAPH, "more rain, fewer words")
    expect(diff.locator("ins").first).to_be_attached()
    expect(page.locator(".passage-result h2")).to_contain_text(f"{len(PARAGRAPH.split())} →")
    j.shot("the-change")

    page.get_by_role("button", name="Accept the change").click()
    expect(page.locator(".messages")).to_contain_text("Option 1 now reads with the new passage (version 2)")
    option.refresh_from_db()
    assert option.text == f"{OPENING}\n\n{edit.result}\n\n{CLOSING}"
    assert [(v.number, v.cause) for v in OptionVersion.objects.filter(option=option)] == [
        (1, "written"), (2, "passage")
    ]
    first = page.locator("#option-0")
    expect(first.locator(".prose")).to_contain_text(OPENING)
    expect(first.locator(".prose")).not_to_contain_text(PARAGRAPH)
    expect(first.locator(".versions-link")).to_have_text("2 versions")
    j.shot("accepted")

    first.locator(".versions-link").click()
    expect(page.locator("#version-2 .version-meta")).to_contain_text("A passage tool's change accepted")
    expect(page.locator("#version-1")).to_contain_text(PARAGRAPH)
    j.shot("versions")
