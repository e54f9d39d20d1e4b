"""Generation through the service the Celery task uses, on the real engines and models."""

from __future__ import annotations

import json
import socket
import threading
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from mesu_web.errors import ApplicationError
from tests.factories import run_generation, story_with_chapters
from writer import services
from writer.models import GenerationOption, GenerationRequest
from writer.parsing import parse_output, shorten_to_sentence

pytestmark = pytest.mark.slow


def test_author_gets_three_options_by_default_and_a_rerun_adds_none(users, local_engine):
    story = story_with_chapters(owner=users["alice"], chapters=3)
    request = run_generation(story, users["alice"])
    assert request.status == GenerationRequest.Status.SUCCEEDED
    options = list(request.options.order_by("index"))
    assert [o.index for o in options] == [0, 1, 2]
    for option in options:
        assert option.raw_output.startswith("<start_working_out>")  # the prefill is part of the answer
        assert option.tokens > 0
        assert option.text or option.reasoning
        assert option.format_ok  # the two-phase answer is in the format by construction
    assert request.next_number == 4
    assert request.prompt_tokens and request.prompt_report["whole"] == [1, 2, 3]
    # Idempotent: running the same request again (a redelivered task) creates no duplicates.
    again = services.generation_request_run(request_id=request.pk)
    assert again.status == GenerationRequest.Status.SUCCEEDED
    assert GenerationOption.objects.filter(request=request).count() == 3


def test_options_are_shown_side_by_side_and_one_is_accepted_edited(users, local_engine, client_for):
    story = story_with_chapters(owner=users["alice"], chapters=2)
    request = run_generation(story, users["alice"], n=2)
    c = client_for("alice")
    html = c.get(reverse("writer:request_detail", args=[request.pk])).content.decode()
    assert html.count('class="card option') == 2
    option = request.options.get(index=1)
    response = c.post(
        reverse("writer:option_accept", args=[option.pk]), {"title": "The Turn", "text": "Edited by the author."}
    )
    chapter = story.chapters.get(number=3)
    assert response.status_code == 302 and response["Location"] == chapter.get_absolute_url()
    assert (chapter.title, chapter.text, chapter.source) == ("The Turn", "Edited by the author.", "generated")
    option.refresh_from_db()
    assert option.accepted_chapter == chapter
    # A second accept of the same request is refused and adds nothing.
    other = request.options.get(index=0)
    response = c.post(reverse("writer:option_accept", args=[other.pk]), {"text": "again"}, follow=True)
    assert "already accepted" in response.content.decode()
    assert story.chapters.count() == 3


def test_output_without_tags_is_kept_and_flagged(users, local_engine, settings, client_for):
    settings.WRITER_REASONING_TOKENS = 0  # one phase, as the model writes it
    settings.WRITER_PREFILL_REASONING = False
    story = story_with_chapters(owner=users["alice"], chapters=1)
    # 8 new tokens cannot hold a reasoning block and a closed <SOLUTION> block.
    request = run_generation(story, users["alice"], n=1, max_new_tokens=8)
    option = request.options.get()
    assert option.format_ok is False
    assert option.raw_output and option.warning
    html = client_for("alice").get(reverse("writer:request_detail", args=[request.pk])).content.decode()
    assert "⚠" in html


def test_the_reasoning_and_the_chapter_have_their_own_budgets_and_a_cut_chapter_says_so(
    users, local_engine, settings, client_for
):
    settings.WRITER_REASONING_TOKENS = 12
    settings.WRITER_REPETITION_PENALTY = 1.15
    story = story_with_chapters(owner=users["alice"], chapters=2)
    request = run_generation(story, users["alice"], n=2, max_new_tokens=16)
    assert request.status == GenerationRequest.Status.SUCCEEDED
    # The prompt left room for both budgets and the tags between them.
    assert request.prompt_report["budget_tokens"] <= settings.WRITER_CONTEXT_TOKENS - (12 + 16)
    for option in request.options.all():
        assert option.format_ok and parse_output(option.raw_output).text == option.text
        assert option.tokens <= 12 + 16
        if option.finish_reason == "length":
            # Cut by its limit: it ends at its last complete sentence (or has none to end at).
            assert shorten_to_sentence(option.text) in (option.text, None)


def test_a_chapter_shorter_than_the_minimum_is_written_again_once_and_the_longer_kept(
    users, local_engine, settings, monkeypatch
):
    from writer.engines.local import LocalEngine
    from writer.quality import words_of

    calls = []
    original = LocalEngine.generate

    def counted(self, messages, **kwargs):  # noqa: ANN001, ANN202 (the real engine, counted)
        result = original(self, messages, **kwargs)
        calls.append([len(words_of(parse_output(c.text).text)) for c in result.completions])
        return result

    monkeypatch.setattr(LocalEngine, "generate", counted)
    story = story_with_chapters(owner=users["alice"], chapters=2)
    # A minimum no 24-token chapter reaches (by default it would be a quarter of the budget, 6 words):
    # every option is short.
    monkeypatch.setattr(services, "MIN_WORDS_PER_CHAPTER_TOKEN", 1000.0)
    monkeypatch.setattr(services, "MIN_CHAPTER_TOKENS_TO_RETRY", 0)  # (by default a 24-token chapter never is)
    settings.WRITER_MIN_CHAPTER_WORDS = 10_000
    request = run_generation(story, users["alice"], n=2, max_new_tokens=24)
    assert request.status == GenerationRequest.Status.SUCCEEDED
    assert len(calls) == 2 and [len(c) for c in calls] == [2, 2]  # written, then both written again (once)
    for option in request.options.order_by("index"):
        first, second = calls[0][option.index], calls[1][option.index]
        assert len(words_of(option.text)) == max(first, second)  # the longer of the two is kept
        assert "written twice" in option.warning or "longer of two tries" in option.warning
        assert option.format_ok
    # No minimum: written once.
    calls.clear()
    settings.WRITER_MIN_CHAPTER_WORDS = 0
    run_generation(story, users["alice"], n=2, max_new_tokens=24)
    assert len(calls) == 1
    assert services.chapter_min_words(512) == 0
    settings.WRITER_MIN_CHAPTER_WORDS = 100
    monkeypatch.setattr(services, "MIN_WORDS_PER_CHAPTER_TOKEN", 0.25)
    assert (services.chapter_min_words(512), services.chapter_min_words(64)) == (100, 16)
    monkeypatch.setattr(services, "MIN_CHAPTER_TOKENS_TO_RETRY", 128)
    assert (services.chapter_min_words(512), services.chapter_min_words(64)) == (100, 0)


def test_reader_preference_reaches_the_prompt_and_only_they_and_the_author_see_it(
    users, local_engine, client_for, settings
):
    story = story_with_chapters(owner=users["alice"], chapters=2)
    request = run_generation(story, users["rita"], kind=GenerationRequest.Kind.READER, preference="a bit sad, not a tragedy")
    assert request.status == GenerationRequest.Status.SUCCEEDED and request.options.count() == 1
    url = reverse("writer:request_detail", args=[request.pk])
    assert client_for("rita").get(url).status_code == 200
    assert client_for("alice").get(url).status_code == 200
    assert client_for("ross").get(url).status_code == 404
    assert client_for("bob").get(url).status_code == 404
    # The reader cannot accept it into the author's story, and it stays the reader's: the author can't either.
    option = request.options.get()
    assert client_for("rita").post(reverse("writer:option_accept", args=[option.pk]), {"text": "x"}).status_code == 403
    response = client_for("alice").post(reverse("writer:option_accept", args=[option.pk]), {"text": "x"}, follow=True)
    assert "stays theirs" in response.content.decode()
    assert story.chapters.count() == 2


def test_readers_cannot_ask_for_unpublished_stories(users):
    story = story_with_chapters(owner=users["alice"], chapters=1, is_published=False)
    with pytest.raises(ApplicationError, match="not published"):
        services.generation_request_create(
            story=story, user=users["rita"], kind=GenerationRequest.Kind.READER, preference="x", enqueue=False
        )


@pytest.mark.parametrize("n", [0, 5])
def test_option_count_is_one_to_four(users, n):
    story = story_with_chapters(owner=users["alice"], chapters=1)
    with pytest.raises(ApplicationError, match="between 1 and 4"):
        services.generation_request_create(story=story, user=users["alice"], n=n, enqueue=False)


def test_two_hundred_chapters_fit_the_budget(users, local_engine, settings):
    settings.WRITER_CONTEXT_TOKENS = 2048
    story = story_with_chapters(owner=users["alice"], chapters=0)
    from writer.models import Chapter

    paragraph = "The tide came in. Lou counted the gulls on the pier and wrote their names down. " * 12
    Chapter.objects.bulk_create(
        Chapter(story=story, number=i, title=f"Day {i}", text=f"Day {i}. {paragraph}") for i in range(1, 201)
    )
    request = run_generation(story, users["alice"], n=1, max_new_tokens=8)
    report = request.prompt_report
    assert request.status == GenerationRequest.Status.SUCCEEDED
    assert report["used_tokens"] <= report["budget_tokens"] <= 2048 - 8
    assert 200 in report["whole"]
    assert report["omitted"] and 1 in report["omitted"]
    assert sorted(report["whole"] + report["shortened"] + report["omitted"]) == list(range(1, 201))


class _HangingServer:
    """A real TCP server that accepts connections and never answers: an engine that times out."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        self.sock.close()


def test_an_engine_that_times_out_fails_with_a_reason_and_loses_nothing(users, settings, model_dir, client_for):
    server = _HangingServer()
    settings.WRITER_ENGINE = "vllm"
    settings.WRITER_BASE_URL = f"http://127.0.0.1:{server.port}/v1"
    settings.WRITER_TOKENIZER_PATH = str(model_dir)
    settings.WRITER_TIMEOUT = 0.5
    settings.WRITER_MAX_RETRIES = 1
    from writer.engines import vllm as vllm_engine

    vllm_engine.get_vllm_engine.cache_clear()
    try:
        story = story_with_chapters(owner=users["alice"], chapters=2)
        out = StringIO()
        with pytest.raises(SystemExit):
            call_command("generate_next", "--story", story.slug, "--n", "2", stdout=out)
        payload = json.loads(out.getvalue())
        assert payload["status"] == "failed" and payload["options"] == []
        assert "127.0.0.1" in payload["error"] or "time" in payload["error"].lower()
        request = GenerationRequest.objects.get(pk=payload["request"])
        html = client_for("alice").get(reverse("writer:request_detail", args=[request.pk])).content.decode()
        assert "could not finish" in html and "Try again" in html
        assert story.chapters.count() == 2
    finally:
        server.close()
        vllm_engine.get_vllm_engine.cache_clear()


def test_progress_fragment_polls_until_done(users, local_engine, client_for):
    story = story_with_chapters(owner=users["alice"], chapters=1)
    request = services.generation_request_create(story=story, user=users["alice"], n=1, enqueue=False)
    c = client_for("alice")
    url = reverse("writer:request_progress", args=[request.pk])
    running = c.get(url, HTTP_HX_REQUEST="true")
    assert running.status_code == 200 and "<progress" in running.content.decode()
    services.generation_request_run(request_id=request.pk)
    done = c.get(url, HTTP_HX_REQUEST="true")
    assert done.status_code == 286  # htmx stops polling
    assert "Option 1" in done.content.decode()
