"""Browser journey (issue 18): the pages run under the Content-Security-Policy with no violation. Every
journey already fails on a console error, which is how Chromium reports a refused script or style; this one
walks the htmx pages of each role on purpose, checks the headers, and proves the policy is enforced (an
inline script is refused) so that a clean walk means something."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from mesu_web.notifications.services import notification_create
from tests.factories import PASSWORD, UserFactory, story_with_chapters

pytestmark = pytest.mark.browser


def test_the_htmx_pages_pass_the_content_security_policy(open_journey, settings):
    author = UserFactory(username="cspa", roles=["author"])
    story = story_with_chapters(owner=author, chapters=3, title="Harbour Lights", slug="harbour-lights")
    notification_create(user_id=author.pk, message="Your chapter is ready.", url=story.get_absolute_url())
    j = open_journey("csp")
    page = j.page
    violations: list[str] = []
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', (e) => "
        "{ (window.__csp = window.__csp || []).push(e.violatedDirective + ' ' + e.blockedURI); });"
    )
    j.log_in("cspa", PASSWORD)

    response = page.goto(j.base_url + story.get_absolute_url())
    headers = response.headers
    assert headers["content-security-policy"] == settings.CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "camera=()" in headers["permissions-policy"]
    j.shot("story")

    # htmx at work: the chapters' pages, the versions page (its styles now in the stylesheet), the bible,
    # and the notifications' mark-read (an htmx POST swapping the list and the header's count).
    for path in (
        f"/s/{story.slug}/chapters/1/",
        f"/s/{story.slug}/chapters/1/versions/",
        f"/s/{story.slug}/bible/",
        "/notifications/",
    ):
        j.goto(path)
        violations += page.evaluate("window.__csp || []")
    page.get_by_role("button", name="Mark all read").click()
    expect(page.locator(".notifications .unread")).to_have_count(0)
    j.shot("notifications-read")
    violations += page.evaluate("window.__csp || []")
    assert violations == [], violations

    # The policy is enforced: an inline script is refused (and reported), not run.
    page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = 'window.__inline_ran = true'; "
        "document.head.appendChild(s); }"
    )
    page.wait_for_function("(window.__csp || []).length > 0")
    assert page.evaluate("window.__inline_ran === undefined")
    assert any(v.startswith("script-src") for v in page.evaluate("window.__csp"))
    # That refusal was logged as a console error on purpose: the journey's error check must not count it.
    j.errors[:] = [e for e in j.errors if "Content Security Policy" not in e]
