"""Swipes (writer.swipes): one option written again by the real writer (SmolLM2-135M, the in-process
engine), through the task, while the other options stay byte for byte as they were; every text kept as
a version; the ugly cases refused with a clear message and nothing changed; its text shown as it is
written (writer.live), and a cache that fails never failing it."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.forms.models import model_to_dict
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape, linebreaks

from brands import services as brand_services
from brands.matching import brand_catalogue
from mesu_web.errors import ApplicationError
from tests.factories import run_generation, story_with_chapters
from tests.fixtures_redis import free_port
from tests.writer.test_live import worker_holds
from writer import live, services, swipes
from writer.models import (
    Chapter,
    GenerationOption,
    GenerationRequest,
    OptionSwipe,
    OptionVersion,
    ReviewStatus,
)
from writer.tasks import option_swipe_run_task

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _fresh_live_state():
    live.reset()  # a cache failure of another test is not remembered here
    yield
    live.reset()


def _snapshot(option: GenerationOption) -> dict:
    option.refresh_from_db()
    return model_to_dict(option) | {"created_at": option.created_at}


def _swipe(option: GenerationOption, user) -> OptionSwipe:  # noqa: ANN001
    """A swipe asked for and run by its task, eagerly (its lock, its retries, its failure hook)."""
    swipe = swipes.option_swipe_request(option=option, user=user, enqueue=False)
    option_swipe_run_task.apply(args=[swipe.pk])
    swipe.refresh_from_db()
    return swipe


def test_one_option_of_three_is_written_again_and_the_others_stay_byte_for_byte(users, local_engine, client_for):
    alice = users["alice"]
    story = story_with_chapters(owner=alice, chapters=2)
    gen = run_generation(story, alice, n=3)
    assert gen.status == GenerationRequest.Status.SUCCEEDED
    # Every option is its version 1 as soon as it is stored.
    assert OptionVersion.objects.filter(option__request=gen, number=1).count() == 3
    option = gen.options.get(index=1)
    others = {o.pk: _snapshot(o) for o in gen.options.exclude(pk=option.pk)}
    before = _snapshot(option)

    swipe = _swipe(option, alice)
    assert swipe.status == OptionSwipe.Status.SUCCEEDED, swipe.error
    assert swipe.progress_tokens > 0
    assert {o.pk: _snapshot(o) for o in gen.options.exclude(pk=option.pk)} == others
    assert not OptionVersion.objects.filter(option__request=gen).exclude(option=option).exclude(number=1).exists()

    option.refresh_from_db()
    v1, v2 = OptionVersion.objects.filter(option=option).order_by("number")
    assert (v1.text, v1.raw_output, v1.reasoning) == (before["text"], before["raw_output"], before["reasoning"])
    assert (v1.cause, v1.created_by, v1.request) == ("written", alice, gen)
    assert (v2.cause, v2.created_by, v2.request, swipe.version) == ("swipe", alice, gen, v2)
    assert v2.created_at > v1.created_at and v2.model_name
    assert (option.text, option.raw_output, option.tokens) == (v2.text, v2.raw_output, v2.tokens)
    assert option.raw_output.startswith("<start_working_out>") and option.format_ok
    assert option.raw_output != before["raw_output"]  # sampled again (temperature > 0)

    c = client_for("alice")
    page = c.get(gen.get_absolute_url()).content.decode()
    assert "2 versions" in page and page.count("Write this option again") == 3
    compare = c.get(reverse("writer:option_version_compare", args=[option.pk]), {"a": 1, "b": 2})
    html = compare.content.decode()
    assert compare.status_code == 200 and "Version 1 and version 2" in html
    assert 'class="diff"' in html and ("<del>" in html or "<ins>" in html or "are the same" in html)

    # Restore version 1: a third version with its text, the second kept.
    response = c.post(reverse("writer:option_version_restore", args=[option.pk, 1]))
    assert response.status_code == 302
    option.refresh_from_db()
    assert option.text == v1.text and option.raw_output == v1.raw_output
    v3 = OptionVersion.objects.get(option=option, number=3)
    assert (v3.cause, v3.restored_from, v3.text) == ("restored", 1, v1.text)
    assert OptionVersion.objects.get(option=option, number=2).text == v2.text
    assert {o.pk: _snapshot(o) for o in gen.options.exclude(pk=option.pk)} == others

    # The status poll: no swipe runs, so it stops polling and reloads the page.
    status = c.get(reverse("writer:option_swipe_status", args=[option.pk]))
    assert status.status_code == 286 and status["HX-Refresh"] == "true"


def test_the_ugly_cases_are_refused_with_a_reason_and_change_nothing(users, client_for, settings):
    """No writer is needed for a refusal: the rows are as the run stores them."""
    alice, bob, rita = users["alice"], users["bob"], users["rita"]
    story = story_with_chapters(owner=alice, chapters=1, is_published=True)

    def finished(user, kind) -> GenerationRequest:  # noqa: ANN001
        gen = GenerationRequest.objects.create(
            story=story, requested_by=user, kind=kind, n=2, engine="local", max_new_tokens=24, next_number=2,
            status=GenerationRequest.Status.SUCCEEDED,
        )
        for index in range(2):
            GenerationOption.objects.create(request=gen, index=index, text=f"Option {index}.", format_ok=True)
        return gen

    gen = finished(alice, GenerationRequest.Kind.AUTHOR)
    ritas = finished(rita, GenerationRequest.Kind.READER)
    option = gen.options.get(index=0)
    url = reverse("writer:option_swipe", args=[option.pk])

    # Someone else's option: another author, a reader, a brand manager never learn it exists; staff and
    # the story's author of a reader's request see it but may not swipe it.
    for who in ("bob", "rita", "mia"):
        assert client_for(who).post(url).status_code == 404, who
    assert client_for("root").post(url).status_code == 403
    assert client_for("alice").post(reverse("writer:option_swipe", args=[ritas.options.first().pk])).status_code == 403
    with pytest.raises(ApplicationError, match="Only who asked for this chapter"):
        swipes.option_swipe_request(option=option, user=bob, enqueue=False)
    assert not OptionSwipe.objects.exists()

    # One swipe at a time per option.
    first = swipes.option_swipe_request(option=option, user=alice, enqueue=False)
    response = client_for("alice").post(url, follow=True)
    assert "being written again already" in response.content.decode()
    assert OptionSwipe.objects.count() == 1
    # A swipe queued so long its message was lost no longer blocks; it says why it failed.
    OptionSwipe.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(hours=1))
    second = swipes.option_swipe_request(option=option, user=alice, enqueue=False)
    first.refresh_from_db()
    assert first.status == "failed" and "No worker took" in first.error
    # A running swipe whose worker died (nobody holds its lock) is failed, not waited for.
    OptionSwipe.objects.filter(pk=second.pk).update(status="running")
    third = swipes.option_swipe_request(option=option, user=alice, enqueue=False)
    second.refresh_from_db()
    assert second.status == "failed" and "stopped" in second.error
    # JavaScript off: while a swipe waits or runs, the request page reloads itself.
    waiting = client_for("alice").get(gen.get_absolute_url()).content.decode()
    assert waiting.count('<noscript><meta http-equiv="refresh" content="3"></noscript>') == 1
    OptionSwipe.objects.filter(pk=third.pk).update(status="failed")

    # The hourly limit, per person.
    settings.WRITER_SWIPES_PER_HOUR = 2  # the two of the last hour (the first was made "an hour ago")
    with pytest.raises(ApplicationError, match="2 options to be written again within an hour"):
        swipes.option_swipe_request(option=gen.options.get(index=1), user=alice, enqueue=False)
    settings.WRITER_SWIPES_PER_HOUR = 30

    # An accepted option stays as it was accepted.
    chapter = services.option_accept(option=option, user=alice)
    response = client_for("alice").post(url, follow=True)
    assert f"is chapter {chapter.number} of the story now" in response.content.decode()
    assert OptionSwipe.objects.count() == 3
    html = client_for("alice").get(gen.get_absolute_url()).content.decode()
    assert html.count("Write this option again") == 1  # the other option only
    assert "http-equiv" not in html  # nothing runs: no reload

    # A swipe asked for before the acceptance does not overwrite the chapter's option: it fails, saying so.
    other = gen.options.get(index=1)
    late = OptionSwipe.objects.create(option=option, requested_by=alice, engine="local")
    option_swipe_run_task.apply(args=[late.pk])
    late.refresh_from_db()
    assert late.status == "failed" and "stays as it was accepted" in late.error
    option.refresh_from_db()
    assert option.text == "Option 0." and not OptionVersion.objects.filter(option=option).exclude(number=1).exists()
    assert other.text == "Option 1."
    assert Chapter.objects.get(pk=chapter.pk).text == "Option 0."


@pytest.fixture
def surf_story(users, brands):
    story = story_with_chapters(
        owner=users["alice"],
        chapters=0,
        title="Salt Summer",
        summary="A summer at a surf camp on a wild beach: first waves, wipeouts and a board-shaping contest.",
        genre="sports romance",
        tags=["surfing", "beach", "summer"],
        setting="A surf camp on a windy Atlantic beach.",
        is_published=True,
    )
    text = (
        "Kai paddled out past the break at dawn. The swell was clean, head-high waves peeling along the reef, "
        "and the whole surf camp was already in the water. Mina waxed her board on the sand and laughed."
    )
    for number in (1, 2):
        Chapter.objects.create(story=story, number=number, title=f"Wave {number}", text=text)
    brand_services.story_brand_settings_update(story=story, opt_in=True)
    return story


@pytest.fixture
def brands(users):
    from brands.demo import seed_brands

    return {b.name: b for b in seed_brands(users["mia"])}


def test_a_branded_option_written_again_goes_back_to_its_brand_before_a_reader_reads_it(
    users, surf_story, local_engine, client_for, settings
):
    rita, mia = users["rita"], users["mia"]
    settings.BRAND_PLACEMENT_CANDIDATES = 2  # write first, then place, with fewer candidates: quicker
    settings.BRAND_PLACEMENT_ROUNDS = 1
    gen = run_generation(surf_story, rita, kind=GenerationRequest.Kind.READER, preference="more waves", n=1,
                         max_new_tokens=32)
    assert gen.use_brands
    option = gen.options.filter(brand__isnull=False).order_by("index").first()
    assert option is not None, gen.brand_note
    # Its brand approved the text it had: the reader reads it with the label.
    GenerationOption.objects.filter(pk=option.pk).update(review_status=ReviewStatus.PENDING)
    option.refresh_from_db()
    brand_services.option_approve(option=option, reviewer=mia)
    option.refresh_from_db()
    assert option.is_sponsored and option.visible_to_requester
    approved_text, before_brand = option.text, option.brand_id

    swipe = _swipe(option, rita)
    assert swipe.status == "succeeded", swipe.error
    option.refresh_from_db()
    # The same brand, placed the same way: written without it, then placed (or the reason it was not).
    assert option.brand_id == before_brand and option.draft and option.placement_note
    # The approval covered the text before only: the new text is decided again from scratch.
    assert option.review_status != ReviewStatus.APPROVED
    assert (option.approved_text_hash, option.reviewed_by, option.reviewed_at) == ("", None, None)
    [hits] = brand_catalogue().names.scan(option.text)
    if hits:  # it names a brand: the reader does not read it until the brand approves it
        assert option.review_status in (ReviewStatus.PENDING, ReviewStatus.HELD)
        assert not option.visible_to_requester
        assert client_for("rita").get(reverse("writer:option_versions", args=[option.pk])).status_code == 404
        assert option.text not in client_for("rita").get(gen.get_absolute_url()).content.decode()
    else:
        assert option.review_status == ReviewStatus.NOT_SENT and option.visible_to_requester
    versions = list(OptionVersion.objects.filter(option=option).order_by("number"))
    assert [v.text for v in versions] == [approved_text, option.text]
    # The brand's reviewer sees the new text in its queue when it names the brand.
    if option.review_status == ReviewStatus.PENDING:
        assert client_for("mia").get(reverse("brands:review_detail", args=[option.pk])).status_code == 200


# -- its text as it is written (writer.live) ------------------------------------------------------------


def _prefixish(part: str, whole: str) -> bool:
    """`part` is how `whole` began, or `whole` is `part` shortened (cut at its last sentence)."""
    return whole.startswith(part) or part.startswith(whole)


def _without_tokens(html: str) -> str:
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", html)  # a fresh mask each render


def test_a_swipe_s_text_appears_as_it_is_written_and_the_new_option_replaces_it(
    users, local_engine, settings, monkeypatch, client_for
):
    settings.WRITER_REASONING_TOKENS = 24
    monkeypatch.setattr(live, "PUBLISH_EVERY_SECONDS", 0.1)  # more snapshots of a short answer
    alice = users["alice"]
    story = story_with_chapters(owner=alice, chapters=2)
    gen = run_generation(story, alice, n=2, max_new_tokens=64)
    option = gen.options.get(index=1)
    swipe = swipes.option_swipe_request(option=option, user=alice, enqueue=False)
    url = reverse("writer:option_swipe_live", args=[option.pk])
    c = client_for("alice")
    snapshots: list[str] = []  # what the cache held after each write
    polls = []  # the control's poller, as alice's browser gets it while the option is written
    real_publish = live.publish_swipe

    def publish_and_look(**kwargs) -> bool:
        wrote = real_publish(**kwargs)
        if wrote:
            snapshots.append(live.read_swipe(swipe_id=kwargs["swipe_id"]))
            polls.append(c.get(url))
        return wrote

    monkeypatch.setattr(live, "publish_swipe", publish_and_look)
    # The run itself, as the worker runs it; `worker_holds` is the worker's run lock, which tells the page
    # the swipe runs (the task would take it on this test's own database session, which the page shares).
    with worker_holds(swipe):
        swipe = swipes.option_swipe_run(swipe_id=swipe.pk)
    assert swipe.status == OptionSwipe.Status.SUCCEEDED, swipe.error
    option.refresh_from_db()

    assert len(snapshots) >= 4, snapshots
    assert len(snapshots[0]) < len(snapshots[-1]) and len(set(snapshots)) >= 3  # it grows
    final_reasoning, final_chapter = live.split_answer(option.raw_output)
    written_twice = "twice" in option.warning or "two tries" in option.warning  # a short chapter's second try
    shown_chapters = 0
    for text, poll in zip(snapshots, polls, strict=True):
        assert text.startswith("<start_working_out>")
        reasoning, chapter = live.split_answer(text)
        if not written_twice:
            assert _prefixish(chapter, final_chapter), (chapter, final_chapter)
            assert _prefixish(reasoning, final_reasoning) or not chapter, (reasoning, final_reasoning)
        html = poll.content.decode()
        assert poll.status_code == 200 and "HX-Retarget" not in poll, html
        assert "Writing Option 2 again" in html and f'id="swipe-live-{option.pk}"' in html
        if chapter:  # the chapter so far, escaped, as Django escapes it; the reasoning no longer shown
            shown_chapters += 1
            assert linebreaks(chapter, autoescape=True) in html, (chapter, html)
            assert "Thinking:" not in html
        elif reasoning:
            assert escape(reasoning.splitlines()[0]) in html, (reasoning, html)
    assert shown_chapters >= 1  # the chapter was shown while it was written
    # While it is written the poll answers the control alone: the rest of the page stays as it is.
    assert all('class="card option' not in poll.content.decode() for poll in polls)

    # Done: nothing left in the cache; the poll answers the request's body as it is now (the new text,
    # "2 versions"), for the page's body, and stops polling.
    assert cache.get(live.swipe_cache_key(swipe.pk)) is None
    done = c.get(url)
    assert done.status_code == 286 and (done["HX-Retarget"], done["HX-Reswap"]) == ("#request-body", "innerHTML")
    body = done.content.decode()
    assert "2 versions" in body and "swipe-live" not in body and url not in body
    progress = c.get(reverse("writer:request_progress", args=[gen.pk]))
    assert _without_tokens(body) == _without_tokens(progress.content.decode())


def test_a_cache_that_fails_does_not_fail_the_swipe(users, local_engine, settings, caplog, client_for):
    alice = users["alice"]
    story = story_with_chapters(owner=alice, chapters=1)
    gen = run_generation(story, alice, n=2)
    option = gen.options.get(index=0)
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        }
    }
    with caplog.at_level(logging.WARNING, logger="writer.live"):
        swipe = _swipe(option, alice)
    assert swipe.status == OptionSwipe.Status.SUCCEEDED, swipe.error
    assert OptionVersion.objects.filter(option=option).count() == 2
    assert f"Could not write the live text of swipe {swipe.pk}" in caplog.text
    # Once failed, the cache is left alone for a while: one failed write, not one per report.
    assert caplog.text.count("Could not write the live text") == 1
    # The page still answers: the request's body with the new text.
    done = client_for("alice").get(reverse("writer:option_swipe_live", args=[option.pk]))
    assert done.status_code == 286 and "2 versions" in done.content.decode()
