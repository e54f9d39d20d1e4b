"""Browser journey: live text (issue 16), in real Chromium against the live app, with the real Celery worker
and the vLLM CPU server writing.

An author asks for the next chapter and watches the options being written: their text appears on the
request page, by htmx polling, while the progress card still says the writer is at work, and gives way
to the stored options when it is done, without a page load. Then the same with JavaScript off: the page
reloads itself (a <noscript> refresh) until the options are there.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.factories import PASSWORD, UserFactory, story_with_chapters
from writer.models import GenerationRequest

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.vllm]

GENERATION_TIMEOUT_MS = 300_000  # as test_journeys.py: a cold vLLM CPU server can be slow to start a prompt
# Long enough answers that the page sees them half written: the worker's reasoning (128 tokens, its
# default) and 160 tokens of chapter, 3 options, on the 2-core box's vLLM CPU server (~10-30 s).
LONG_ANSWERS = {"WRITER_MAX_NEW_TOKENS": 160}


@pytest.mark.parametrize("journey_settings", [LONG_ANSWERS], indirect=True)
def test_the_author_watches_the_options_being_written(open_journey):
    author = UserFactory(username="lena", roles=["author"])
    story = story_with_chapters(owner=author, chapters=2, title="Night Ferry", is_published=True)
    j = open_journey("live")
    page = j.page
    j.log_in("lena", PASSWORD)
    j.goto(story.get_absolute_url())
    page.evaluate("window.__kept = true")  # gone if the page loads again
    page.get_by_role("button", name="Ask the AI writer").click()
    expect(page.locator("h1")).to_contain_text("Chapter 3")
    page.evaluate("window.__kept = true")

    # The options as they are written, in the same page as the progress card: the request is not done.
    live = page.locator("#request-body #live-options .live-option")
    expect(live.first).to_be_visible(timeout=GENERATION_TIMEOUT_MS)
    expect(page.locator("#request-body .progress-card")).to_be_visible()
    expect(page.locator("#request-body article.option")).to_have_count(0)
    first_seen = live.first.inner_text()
    j.shot("live-text")
    gen = GenerationRequest.objects.get(story=story)
    assert gen.status in (GenerationRequest.Status.RUNNING, GenerationRequest.Status.SUCCEEDED)
    # It grows while it is written (or the request ends first, with options longer than that).
    page.wait_for_function(
        """(first) => {
            const now = document.querySelector('#live-options .live-option');
            return !now || now.innerText.length > first.length;
        }""",
        arg=first_seen,
        timeout=GENERATION_TIMEOUT_MS,
    )

    # Done: the stored options replace the draft, by htmx, without a page load.
    expect(page.locator("#request-body article.option")).to_have_count(3, timeout=GENERATION_TIMEOUT_MS)
    expect(page.locator("#live-options")).to_have_count(0)
    assert page.evaluate("window.__kept === true"), "the options should arrive by htmx polling"
    j.shot("options")

    # Without JavaScript: the request page reloads itself until the options are there.
    context = page.context.browser.new_context(java_script_enabled=False, base_url=j.base_url)
    bare = context.new_page()
    j.watch(bare)
    bare.goto("/accounts/login/")
    bare.fill("#id_username", "lena")
    bare.fill("#id_password", PASSWORD)
    bare.get_by_role("button", name="Log in").click()
    bare.goto(story.get_absolute_url())
    bare.get_by_role("button", name="Ask the AI writer").click()
    expect(bare.locator("h1")).to_contain_text("Chapter 3")
    expect(bare.locator("#request-body .progress-card")).to_be_visible()
    expect(bare.locator("#request-body article.option")).to_have_count(3, timeout=GENERATION_TIMEOUT_MS)
    bare.screenshot(path=str(j.shots / "no-javascript-options.png"), full_page=True)
    context.close()
    j.assert_clean()
