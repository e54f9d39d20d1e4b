"""Live text (writer/live.py): the options' text as it is written, from the real engines through the
cache (Redis, the test database 13 or 15 of REDIS_URL) to the request page's poller; and a swipe's
text (one option written again) to its control's poller. A real swipe's is in tests/writer/test_swipes.py.

Who may see a draft is in tests/security/test_live_permissions.py."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.core.cache import cache
from django.db import connections
from django.urls import reverse

from mesu_web.jobs.locks import lock_class
from tests.factories import run_generation, story_with_chapters
from tests.fixtures_redis import free_port
from writer import live, services, swipes
from writer.engines.base import Sampling, progress_part, takes_texts
from writer.models import GenerationOption, GenerationRequest, OptionSwipe
from writer.tasks import option_swipe_run_task
from writer.versions import option_versions_first

MESSAGES = [
    {"role": "user", "content": "Continue the story: the lighthouse keeper heard a knock at midnight."}
]


@pytest.fixture(autouse=True)
def _fresh_live_state():
    live.reset()
    yield
    live.reset()


def _prefixish(part: str, whole: str) -> bool:
    """`part` is how `whole` began, or `whole` is `part` shortened (a chapter or reasoning cut at its
    last sentence when it reached its budget)."""
    return whole.startswith(part) or part.startswith(whole)


def _running(story, user, **fields) -> GenerationRequest:  # noqa: ANN001
    defaults = dict(
        story=story, requested_by=user, kind=GenerationRequest.Kind.AUTHOR, engine="local", max_new_tokens=24,
        next_number=story.chapters.count() + 1, n=2, status=GenerationRequest.Status.RUNNING, attempts=1,
    )
    return GenerationRequest.objects.create(**(defaults | fields))


def finished_request(story, user, *, texts=("Lou opened the stall.", "Pip ran in late."), **fields) -> GenerationRequest:  # noqa: ANN001
    """A request whose options are stored as its run stores them (version 1 each)."""
    defaults = dict(
        story=story, requested_by=user, kind=GenerationRequest.Kind.AUTHOR, engine="local", max_new_tokens=24,
        next_number=story.chapters.count() + 1, n=len(texts), status=GenerationRequest.Status.SUCCEEDED, attempts=1,
    )
    gen = GenerationRequest.objects.create(**(defaults | fields))
    for index, text in enumerate(texts):
        GenerationOption.objects.create(request=gen, index=index, text=text, format_ok=True, tokens=8)
    option_versions_first(request=gen)
    return gen


@contextmanager
def worker_holds(*held: OptionSwipe) -> Iterator[None]:
    """The swipes' run locks held by another database session, as the worker that runs a swipe holds its
    lock: pages take them as running, not dead (`swipes.option_swipe_in_progress`). (This session's own
    lock would not do: PostgreSQL gives a session a lock it already holds.)"""
    worker = connections.create_connection("default")
    try:
        with worker.cursor() as cursor:
            for swipe in held:
                cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [lock_class(option_swipe_run_task.name), swipe.pk])
                assert cursor.fetchone()[0], swipe
        yield
    finally:
        worker.close()  # the locks end with the session, as a worker's when it stops


# -- the progress callback's two kinds -------------------------------------------------------------------


def test_a_callback_takes_texts_when_it_names_them_and_parts_map_them():
    def tokens_only(tokens: int) -> None: ...

    def with_texts(tokens: int, texts=None) -> None: ...  # noqa: ANN001

    assert not takes_texts(None) and not takes_texts(tokens_only) and not takes_texts([].append)
    assert takes_texts(with_texts) and takes_texts(lambda tokens, **kwargs: None)
    got: list[tuple] = []
    part = progress_part(lambda tokens, texts=None: got.append((tokens, texts)), before=10, whole=lambda t: ["<" + x for x in t])
    part(3)
    part(5, texts=["a", "b"])
    assert got == [(13, None), (15, ["<a", "<b"])]
    plain: list[int] = []
    part = progress_part(plain.append, before=10)
    assert not takes_texts(part)  # the engine below does not decode texts for a callback that wants none
    part(4)
    assert plain == [14]
    by_option = live.options_progress(lambda tokens, texts=None: got.append((tokens, texts)), [2, 0])
    by_option(1, texts=["two", "zero"])
    assert got[-1] == (1, {2: "two", 0: "zero"})


# -- a real generation -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_real_generation_shows_both_options_growing_and_clears_them_at_the_end(
    users, local_engine, settings, monkeypatch, client_for
):
    settings.WRITER_REASONING_TOKENS = 24
    monkeypatch.setattr(live, "PUBLISH_EVERY_SECONDS", 0.1)  # more snapshots of a short generation
    story = story_with_chapters(owner=users["alice"], chapters=2)
    snapshots: list[tuple[float, dict[int, str]]] = []  # what the cache held after each write
    pages: list[str] = []
    real_publish = live.publish

    def publish_and_look(**kwargs) -> bool:
        wrote = real_publish(**kwargs)
        if wrote:
            snapshots.append((time.monotonic(), live.read(request_id=kwargs["request_id"], attempt=kwargs["attempt"])))
            if len(pages) < 3:  # the poller's fragment, as the author's browser gets it mid-run
                url = reverse("writer:request_live", args=[kwargs["request_id"]])
                pages.append(client_for("alice").get(url).content.decode())
        return wrote

    monkeypatch.setattr(live, "publish", publish_and_look)
    request = run_generation(story, users["alice"], n=2, max_new_tokens=64)
    assert request.status == GenerationRequest.Status.SUCCEEDED
    finals = {o.index: o.raw_output for o in request.options.all()}

    assert len(snapshots) >= 4, snapshots
    assert all(b - a >= 0.1 for (a, _), (b, _) in zip(snapshots, snapshots[1:], strict=False))  # throttled
    for index in (0, 1):
        seen = [texts[index] for _, texts in snapshots if index in texts]
        assert len(seen) >= 4, (index, seen)
        assert len(seen[0]) < len(seen[-1])  # it grows
        assert len(set(seen)) >= 3
        final_reasoning, final_chapter = live.split_answer(finals[index])
        assert final_chapter
        for text in seen:
            assert finals[index].startswith("<start_working_out>") and text.startswith("<start_working_out>")
            reasoning, chapter = live.split_answer(text)
            assert _prefixish(reasoning, final_reasoning) or not chapter, (reasoning, final_reasoning)
            assert _prefixish(chapter, final_chapter), (chapter, final_chapter)
        assert any(live.split_answer(text)[1] for text in seen)  # the chapter was shown while written
    # The author's page showed the text so far, while it was being written.
    assert any('id="live-option-0"' in page and 'id="live-option-1"' in page for page in pages), pages[:1]
    # Finished: nothing left in the cache, and the page shows the stored options, not the draft.
    assert cache.get(live.cache_key(request.pk)) is None
    body = client_for("alice").get(reverse("writer:request_live", args=[request.pk]))
    assert body.status_code == 286  # htmx stops polling
    html = body.content.decode()
    assert 'id="live-options"' not in html and html.count('class="card option') == 2
    assert "http-equiv=\"refresh\"" not in client_for("alice").get(request.get_absolute_url()).content.decode()


@pytest.mark.slow
def test_a_cache_that_fails_does_not_fail_the_generation(users, local_engine, settings, caplog):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        }
    }
    story = story_with_chapters(owner=users["alice"], chapters=1)
    with caplog.at_level(logging.WARNING, logger="writer.live"):
        request = run_generation(story, users["alice"], n=2)
    assert request.status == GenerationRequest.Status.SUCCEEDED and request.options.count() == 2
    assert "Could not write the live text of request" in caplog.text
    # Once failed, the cache is left alone for a while: one failed write, not one per report.
    assert caplog.text.count("Could not write the live text") == 1


# -- the page ----------------------------------------------------------------------------------------------


def test_the_page_shows_the_draft_so_far_and_reloads_without_javascript(users, client_for, django_assert_max_num_queries):
    story = story_with_chapters(owner=users["alice"], chapters=1)
    gen = _running(story, users["alice"])
    live.publish(request_id=gen.pk, attempt=1, texts={
        0: "<start_working_out>The keeper must open the door.<end_working_out>\n<SOLUTION>The knock came again",
        1: "<start_working_out>Who is at the door? A stor",
    })
    alice = client_for("alice")
    with django_assert_max_num_queries(4):  # the session, the user, the request with its story; no option
        fragment = alice.get(reverse("writer:request_live", args=[gen.pk]))
    assert fragment.status_code == 200
    html = fragment.content.decode()
    assert "The knock came again" in html and "Who is at the door? A stor" in html
    assert "The keeper must open the door" not in html  # option 1's reasoning gives way to its chapter
    # htmx parses a poll's answer with scripting off: a <noscript> refresh in it would be inserted live and
    # reload the page 3 s after a slow poll (seen in CI). The answer htmx asks for carries none.
    polled = alice.get(reverse("writer:request_live", args=[gen.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert "The knock came again" in polled and "noscript" not in polled and "http-equiv" not in polled
    page = alice.get(gen.get_absolute_url()).content.decode()
    assert "The knock came again" in page  # the first render too: a page without JavaScript shows it
    assert '<noscript><meta http-equiv="refresh" content="3"></noscript>' in page
    assert f'hx-get="{reverse("writer:request_live", args=[gen.pk])}" hx-trigger="every 1s"' in page


def test_an_earlier_attempt_s_text_is_not_shown_and_a_failure_clears_it(users, client_for):
    story = story_with_chapters(owner=users["alice"], chapters=1)
    gen = _running(story, users["alice"], attempts=2)
    live.publish(request_id=gen.pk, attempt=1, texts={0: "<SOLUTION>From the run that died"})
    html = client_for("alice").get(reverse("writer:request_live", args=[gen.pk])).content.decode()
    assert "From the run that died" not in html and "appears here as the writer writes it" in html
    live.reset()
    live.publish(request_id=gen.pk, attempt=2, texts={0: "<SOLUTION>From this run"})
    assert "From this run" in client_for("alice").get(reverse("writer:request_live", args=[gen.pk])).content.decode()
    services.generation_request_fail(request_id=gen.pk, error="The writer server is gone.")
    assert cache.get(live.cache_key(gen.pk)) is None
    failed = client_for("alice").get(reverse("writer:request_live", args=[gen.pk]))
    assert failed.status_code == 286 and "The writer server is gone." in failed.content.decode()


def test_a_queued_request_shows_no_live_text(users, client_for):
    story = story_with_chapters(owner=users["alice"], chapters=1)
    gen = _running(story, users["alice"], status=GenerationRequest.Status.QUEUED)  # waiting for a retry
    live.publish(request_id=gen.pk, attempt=1, texts={0: "<SOLUTION>Before the retry"})
    response = client_for("alice").get(reverse("writer:request_live", args=[gen.pk]))
    assert response.status_code == 200 and "Before the retry" not in response.content.decode()


def test_split_answer_reads_a_partial_answer():
    assert live.split_answer("<start_working_out>Plan it<end_wor") == ("Plan it", "")
    assert live.split_answer("<start_working_out>Plan<end_working_out>\n<SOLUTION>Once upon</SOL") == ("Plan", "Once upon")
    assert live.split_answer("<start_working_out>A<end_working_out>\n<SOLUTION>Done.</SOLUTION>") == ("A", "Done.")
    assert live.split_answer("A one-phase writer's chapter \ufffd") == ("", "A one-phase writer's chapter")


# -- a swipe ------------------------------------------------------------------------------------------------


def test_a_swipe_s_draft_shows_in_its_control_escaped_and_its_end_swaps_in_the_request_s_body(users, client_for):
    alice = users["alice"]
    story = story_with_chapters(owner=alice, chapters=1)
    gen = finished_request(story, alice)
    option = gen.options.get(index=1)
    swipe = OptionSwipe.objects.create(
        option=option, requested_by=alice, engine="local", status=OptionSwipe.Status.RUNNING, progress_tokens=7
    )
    url = reverse("writer:option_swipe_live", args=[option.pk])
    c = client_for("alice")
    with worker_holds(swipe):
        # The page's control polls the swipe's live text every second.
        page = c.get(gen.get_absolute_url()).content.decode()
        assert f'hx-get="{url}" hx-trigger="every 1s" hx-swap="outerHTML"' in page
        first = c.get(url)
        html = first.content.decode()
        assert first.status_code == 200 and "HX-Retarget" not in first
        assert "Writing Option 2 again" in html and "7 tokens" in html and f'hx-get="{url}"' in html
        assert "The new text appears here as the writer writes it." in html  # nothing written yet
        assert "noscript" not in c.get(url, HTTP_HX_REQUEST="true").content.decode()  # no live refresh (htmx)

        hostile = '<start_working_out>Plan <img src=x onerror="alert(1)">'
        assert live.publish_swipe(swipe_id=swipe.pk, text=hostile)
        html = c.get(url).content.decode()
        assert "<img src=x" not in html and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
        live.reset()  # the next write at once (writes are at most every PUBLISH_EVERY_SECONDS)
        assert live.publish_swipe(
            swipe_id=swipe.pk, text=hostile + "<end_working_out>\n<SOLUTION>The gate <b>creaked</b> & swung"
        )
        html = c.get(url).content.decode()
        assert f'id="swipe-live-{option.pk}"' in html
        assert "The gate &lt;b&gt;creaked&lt;/b&gt; &amp; swung" in html and "<b>creaked" not in html
        assert "onerror" not in html  # the reasoning gives way to the chapter
        # The other option's control is not polled: nothing runs on it.
        other = reverse("writer:option_swipe_live", args=[gen.options.get(index=0).pk])
        assert other not in page

        # It fails: the text is cleared, and the poll answers the request's body, which says why, in place
        # of the page's body (no page load), and stops polling.
        swipes.option_swipe_fail(swipe_id=swipe.pk, error="The writer server is gone.")
        assert cache.get(live.swipe_cache_key(swipe.pk)) is None
        ended = c.get(url)
    assert ended.status_code == 286
    assert (ended["HX-Retarget"], ended["HX-Reswap"]) == ("#request-body", "innerHTML")
    body = ended.content.decode()
    assert "The last try to write it again failed: The writer server is gone." in body
    assert body.count('class="card option') == 2 and "Pip ran in late." in body
    assert "creaked" not in body and url not in body


def test_a_swipe_whose_worker_died_ends_with_the_reason_and_a_queued_one_shows_no_text(users, client_for):
    alice = users["alice"]
    story = story_with_chapters(owner=alice, chapters=1)
    gen = finished_request(story, alice)
    option = gen.options.get(index=0)
    swipe = OptionSwipe.objects.create(option=option, requested_by=alice, engine="local", status=OptionSwipe.Status.QUEUED)
    live.publish_swipe(swipe_id=swipe.pk, text="<SOLUTION>From the run before the retry")
    url = reverse("writer:option_swipe_live", args=[option.pk])
    queued = client_for("alice").get(url)
    html = queued.content.decode()
    assert queued.status_code == 200 and "waiting for a writer" in html
    assert "From the run before the retry" not in html and "swipe-live" not in html
    # Running, but no worker holds its lock: it died. The swipe fails with the reason, its text goes.
    OptionSwipe.objects.filter(pk=swipe.pk).update(status=OptionSwipe.Status.RUNNING)
    dead = client_for("alice").get(url)
    assert dead.status_code == 286 and "The worker writing it again stopped; ask again." in dead.content.decode()
    assert cache.get(live.swipe_cache_key(swipe.pk)) is None
    swipe.refresh_from_db()
    assert swipe.status == OptionSwipe.Status.FAILED


def test_a_swipe_s_entry_is_its_own(users):
    """The swipe's key is not the request's: a request's run of the same number is left alone."""
    alice = users["alice"]
    gen = finished_request(story_with_chapters(owner=alice, chapters=1), alice)
    swipe = OptionSwipe.objects.create(option=gen.options.first(), requested_by=alice, engine="local")
    live.publish(request_id=swipe.pk, attempt=0, texts={0: "the request's"})
    live.publish_swipe(swipe_id=swipe.pk, text="the swipe's")
    assert live.read_swipe(swipe_id=swipe.pk) == "the swipe's"
    assert live.read(request_id=swipe.pk, attempt=0) == {0: "the request's"}
    live.clear_swipe(swipe_id=swipe.pk)
    assert live.read_swipe(swipe_id=swipe.pk) is None
    assert live.read(request_id=swipe.pk, attempt=0) == {0: "the request's"}
    live.clear(request_id=swipe.pk)


# -- the vLLM engine ------------------------------------------------------------------------------------


@pytest.mark.vllm
def test_the_vllm_engine_reports_each_option_s_text_as_it_streams(vllm_settings):
    from writer.engines.vllm import get_vllm_engine

    reports: list[tuple[int, list[str]]] = []
    result = get_vllm_engine().generate(
        MESSAGES, n=2, sampling=Sampling(max_tokens=24, reasoning_tokens=12, seed=5),
        on_progress=lambda tokens, texts=None: reports.append((tokens, texts)),
    )
    finals = [c.text for c in result.completions]
    with_texts = [texts for _, texts in reports if texts is not None]
    assert len(with_texts) >= 10 and all(len(texts) == 2 for texts in with_texts)
    assert with_texts[-1] == finals  # the last report is the answers as returned
    for k in (0, 1):
        seen = [texts[k] for texts in with_texts]
        assert len(set(seen)) >= 5
        final_reasoning, final_chapter = live.split_answer(finals[k])
        for text in seen:
            reasoning, chapter = live.split_answer(text)
            assert _prefixish(reasoning, final_reasoning) or not chapter
            assert _prefixish(chapter, final_chapter), (chapter, final_chapter)
    assert [tokens for tokens, _ in reports] == sorted(tokens for tokens, _ in reports)
