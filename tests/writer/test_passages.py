"""Passage tools (writer.passages): the selection and its bad shapes, the prompt, the writer's answer (the
real SmolLM2 engine, and a scripted OpenAI-compatible server for answers the small model gives only by
chance: empty, out of format, with leftover tags), the change as a word diff, accept and discard with the
versions they leave, and the pages."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from mesu_web.errors import ApplicationError
from tests.factories import ChapterFactory, approved_brand, story_with_chapters
from tests.writer.test_bible import ScriptedWriter
from writer import passages
from writer.engines import vllm
from writer.models import (
    Chapter,
    ChapterVersion,
    GenerationOption,
    GenerationRequest,
    OptionVersion,
    PassageEdit,
    ReviewStatus,
)
from writer.passages import (
    MAX_PASSAGE_CHARS,
    PassageLimited,
    answer_tokens,
    clean_result,
    context_around,
    locate_passage,
    passage_diff,
    passage_edit_accept,
    passage_edit_discard,
    passage_edit_refresh,
    passage_edit_request,
    passage_edit_run,
    passage_messages,
)
from writer.prompting import SOLUTION_START, SYSTEM_PROMPT, StoryMeta

CHAPTERS = (
    "Lou opened the stall at dusk. The rain came in sideways off the harbour.\n\nPip was late again.",
    "The lanterns swung on their wire. Lou counted the buns twice and got two different numbers.",
    "Morning came grey over Porthwen. Nobody bought anything before nine.",
)
OPTION_TEXT = (
    "Lou lit the lanterns along the quay, one by one, and Pip counted them out loud.\n\n"
    "The first fisherman bought three buns and ate one standing in the rain. Then the wind turned, and the "
    "stall's canvas cracked like a sail."
)
PASSAGE = "The first fisherman bought three buns and ate one standing in the rain."


@pytest.fixture(autouse=True)
def _private_cache(settings, request):
    """The flood limit's counters in a cache of this test's own (the suite's Redis is its broker too)."""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": request.node.nodeid}
    }
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def story(users):
    story = story_with_chapters(owner=users["alice"], chapters=0, slug="salt-and-sugar", title="Salt and Sugar")
    for number, text in enumerate(CHAPTERS, start=1):
        ChapterFactory(story=story, number=number, title=f"Part {number}", text=text)
    return story


def make_request(story, user, *, kind=GenerationRequest.Kind.AUTHOR):  # noqa: ANN001, ANN201
    return GenerationRequest.objects.create(
        story=story, requested_by=user, kind=kind, engine="local", max_new_tokens=24, next_number=4, n=2,
        status=GenerationRequest.Status.SUCCEEDED, model_name="smollm2",
    )


@pytest.fixture
def option(story, users) -> GenerationOption:
    gen = make_request(story, users["alice"])
    GenerationOption.objects.create(request=gen, index=1, text="Another take on the night.", format_ok=True)
    return GenerationOption.objects.create(
        request=gen, index=0, text=OPTION_TEXT, reasoning="Lanterns, then the first customer.", format_ok=True,
        tokens=60, raw_output="<start_working_out>…", finish_reason="stop",
    )


def ask(option_or_chapter, user, **fields) -> PassageEdit:  # noqa: ANN001
    target = {"chapter": option_or_chapter} if isinstance(option_or_chapter, Chapter) else {"option": option_or_chapter}
    fields.setdefault("tool", "rewrite")
    return passage_edit_request(user=user, enqueue=False, **target, **fields)


def succeeded(edit: PassageEdit, result: str) -> PassageEdit:
    """The edit as a run leaves it when the writer wrote `result` (for the decisions' tests)."""
    PassageEdit.objects.filter(pk=edit.pk).update(
        status=PassageEdit.Status.SUCCEEDED, result=result, model_name="smollm2", finished_at=timezone.now()
    )
    edit.refresh_from_db()
    return edit


# --- The selection ------------------------------------------------------------------------------------


def test_a_pasted_passage_is_found_exactly_or_as_the_page_shows_it():
    text = "She *ran* to the quay.\nThe boats were gone.\n\nShe ran back."
    exact = locate_passage(text, label="Chapter 1", passage="The boats were gone.")
    assert text[exact.start : exact.end] == exact.text == "The boats were gone."
    # As the browser gives a rendered selection: the line break a space, the emphasis marks gone, CRLF.
    shown = locate_passage(text, label="Chapter 1", passage="She ran to the quay. The boats\r\nwere gone.")
    assert shown.text == "She *ran* to the quay.\nThe boats were gone." and shown.start == 0
    # Spaces around a selection are not part of the passage.
    trimmed = locate_passage(text, label="Chapter 1", passage="  She ran back.\n")
    assert trimmed.text == "She ran back." and trimmed.end == len(text)


def test_offsets_select_exactly_and_bad_ones_say_so():
    text = "One. Two. Three."
    assert locate_passage(text, label="Option 1", start=4, end=10).text == "Two."  # spaces trimmed
    with pytest.raises(ApplicationError, match=r"characters 10 to 99\) is not inside Option 1's text, which has 16"):
        locate_passage(text, label="Option 1", start=10, end=99)
    with pytest.raises(ApplicationError, match="not inside"):
        locate_passage(text, label="Option 1", start=5, end=5)
    with pytest.raises(ApplicationError, match="both its start and its end"):
        locate_passage(text, label="Option 1", start=3)
    with pytest.raises(ApplicationError, match="only spaces"):
        locate_passage("One.   Two.", label="Option 1", start=4, end=7)
    # Offsets that point elsewhere than the passage given (the text moved): the passage decides.
    assert locate_passage(text, label="Option 1", passage="Three.", start=0, end=4).text == "Three."


def test_empty_blank_long_and_twice_found_passages_are_refused_with_clear_messages():
    text = "Rain. " * 10 + "Wind."
    with pytest.raises(ApplicationError, match="Select a passage first"):
        locate_passage(text, label="Chapter 2", passage="")
    with pytest.raises(ApplicationError, match="only spaces"):
        locate_passage(text, label="Chapter 2", passage=" \n\t ")
    long = "word " * (MAX_PASSAGE_CHARS // 4)
    with pytest.raises(ApplicationError, match=r"has 4,999 characters; a passage tool takes at most 4,000"):
        locate_passage(long, label="Chapter 2", passage=long)
    with pytest.raises(ApplicationError, match="is in Chapter 2 10 times: select a longer passage"):
        locate_passage(text, label="Chapter 2", passage="Rain.")
    # The browser's script says which occurrence it was.
    third = locate_passage(text, label="Chapter 2", passage="Rain.", occurrence=3)
    assert (third.start, third.end) == (12, 17)
    with pytest.raises(ApplicationError, match="10 times"):
        locate_passage(text, label="Chapter 2", passage="Rain.", occurrence=11)


def test_a_passage_across_two_chapters_is_found_in_none_and_the_message_says_so():
    texts = [("Chapter 1", CHAPTERS[0]), ("Chapter 2", CHAPTERS[1])]
    across = "Pip was late again.\n\nThe lanterns swung on their wire."
    with pytest.raises(ApplicationError) as caught:
        locate_passage(CHAPTERS[1], label="Chapter 2", passage=across, elsewhere=lambda: texts)
    assert caught.value.message == (
        "This passage runs across 2 texts (Chapter 1, Chapter 2): select a passage inside one chapter."
    )
    with pytest.raises(ApplicationError, match="not in Chapter 2's text as it reads now: select a passage inside one"):
        locate_passage(CHAPTERS[1], label="Chapter 2", passage="Words nobody wrote.", elsewhere=lambda: texts)


# --- The prompt, the answer, the diff -----------------------------------------------------------------


def test_the_prompt_has_chapter_0_bounded_context_the_passage_and_the_tool():
    text = ("x " * 2000) + PASSAGE + (" y" * 2000)
    start = text.index(PASSAGE)
    before, after = context_around(text, start, start + len(PASSAGE), before=1200, after=600)
    assert before.startswith("…") and len(before) <= 1201 and after.endswith("…") and len(after) <= 601
    meta = StoryMeta(title="Salt and Sugar", summary="A bakery stall in the rain.")
    messages = passage_messages(
        meta=meta, heading="Chapter 4 (a draft)", before=before, passage=PASSAGE + " ```", after=after,
        tool="describe", instruction="Pip should speak",
    )
    assert messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
    user = messages[1]["content"]
    assert user.startswith("## Chapter 0: About the story") and "A bakery stall in the rain." in user
    assert user.index("before the passage") < user.index("## The passage") < user.index("after the passage")
    assert "see, hear, smell and" in user and "The author asks: Pip should speak" in user
    assert "` ` `" in user  # the passage's own fence cannot close its block
    assert user.rstrip().endswith(f"{SOLUTION_START} and </SOLUTION>.")
    for tool, words in (("rewrite", "fresh"), ("expand", "twice"), ("shorten", "half")):
        assert words in passage_messages(meta=meta, heading="h", before="", passage="p", after="", tool=tool)[1]["content"]


def test_the_answer_budget_follows_the_tool_within_its_bounds(settings):
    settings.WRITER_MAX_NEW_TOKENS = 512
    assert answer_tokens("rewrite", 100) == 141 and answer_tokens("expand", 100) == 266
    assert answer_tokens("shorten", 100) == 79 and answer_tokens("shorten", 1) == 17
    assert answer_tokens("expand", 5000) == 1536  # 3 x WRITER_MAX_NEW_TOKENS
    settings.WRITER_MAX_NEW_TOKENS = 2  # never fewer than 16
    assert answer_tokens("rewrite", 100) == 16


def test_leftover_tags_fences_and_control_characters_are_stripped_from_the_result():
    assert clean_result("```text\nNew <SOLUTION>words\x00.\n```") == "New words."
    assert clean_result("  <end_working_out>  ") == ""


def test_the_diff_is_word_by_word_and_keeps_the_texts_as_they_are():
    diff = passage_diff("The cat sat on the mat.", "The cat lay on the warm mat.")
    assert diff == [("equal", "The cat "), ("delete", "sat "), ("insert", "lay "), ("equal", "on the "),
                    ("insert", "warm "), ("equal", "mat.")]
    assert "".join(t for op, t in diff if op != "delete") == "The cat lay on the warm mat."
    assert "".join(t for op, t in diff if op != "insert") == "The cat sat on the mat."
    # Punctuation is compared on its own: a comma added is not a word changed.
    assert passage_diff("She ran home.", "She ran, soaked, home.") == [
        ("equal", "She ran"), ("insert", ", soaked, "), ("equal", "home.")
    ]
    assert passage_diff("a <b>", "a <i>") == [("equal", "a <"), ("delete", "b"), ("insert", "i"), ("equal", ">")]


# --- Asking: who, what and how often ------------------------------------------------------------------


def test_the_author_asks_for_a_plain_option_and_the_row_holds_the_passage(option, users):
    edit = ask(option, users["alice"], passage=PASSAGE, instruction="  more   rain\x07 ", tool="expand")
    assert (edit.status, edit.tool, edit.instruction, edit.decision) == ("queued", "expand", "more rain", "pending")
    assert edit.option == option and edit.chapter is None and edit.story == option.request.story
    assert OPTION_TEXT[edit.start : edit.end] == edit.original == PASSAGE
    with pytest.raises(ApplicationError, match="Unknown passage tool 'poem'"):
        ask(option, users["alice"], passage=PASSAGE, tool="poem")
    with pytest.raises(ApplicationError, match="Your instruction has 301 characters; the most is 300"):
        ask(option, users["alice"], passage=PASSAGE, instruction="x" * 301)
    with pytest.raises(ApplicationError, match="Only the story's author"):
        ask(option, users["bob"], passage=PASSAGE)
    with pytest.raises(ApplicationError, match="Unknown writer engine"):
        ask(option, users["alice"], passage=PASSAGE, engine="gpt9")


def test_readers_chapters_and_branded_options_get_no_tools_and_an_accepted_option_is_its_chapter(
    story, option, users
):
    rita_option = GenerationOption.objects.create(
        request=make_request(story, users["rita"], kind=GenerationRequest.Kind.READER), index=0, text=OPTION_TEXT
    )
    with pytest.raises(ApplicationError, match="personalised chapter stays as the writer wrote it"):
        ask(rita_option, users["alice"], passage=PASSAGE)
    brand = approved_brand(name="Tidewave", managers=[users["mia"]], description="Surfboards.")
    GenerationOption.objects.filter(pk=option.pk).update(brand=brand, review_status=ReviewStatus.PENDING)
    option.refresh_from_db()
    with pytest.raises(ApplicationError, match="plain options: this one carries a brand placement"):
        ask(option, users["alice"], passage=PASSAGE)
    GenerationOption.objects.filter(pk=option.pk).update(brand=None, review_status=ReviewStatus.NONE)
    chapter = ChapterFactory(story=story, number=4, text="A new first line.\n\n" + OPTION_TEXT)
    GenerationOption.objects.filter(pk=option.pk).update(accepted_chapter=chapter)
    option.refresh_from_db()
    edit = ask(option, users["alice"], passage=PASSAGE, start=0, end=5)  # offsets of the option's text
    assert edit.option is None and edit.chapter == chapter
    assert chapter.text[edit.start : edit.end] == PASSAGE  # found again in the chapter's text


def test_a_flood_of_asks_is_refused_with_how_long_to_wait(option, users, settings):
    settings.PASSAGE_RATE_LIMIT_PER_MINUTE = 3
    for _ in range(3):
        ask(option, users["alice"], passage=PASSAGE)
    with pytest.raises(PassageLimited, match=r"asked for 3 passage changes in a minute.*Try again in") as caught:
        ask(option, users["alice"], passage=PASSAGE)
    assert 1 <= caught.value.retry_after <= 60
    assert PassageEdit.objects.count() == 3
    # Another author's asks are their own.
    other = story_with_chapters(owner=users["bob"], chapters=1)
    ask(other.chapters.get(), users["bob"], passage="Pip was late again, as always.")


# --- The writer: scripted answers, then the real engine -----------------------------------------------


@pytest.fixture
def scripted(settings):
    servers: list[ScriptedWriter] = []

    def make(answers: list[tuple[int, str]]) -> ScriptedWriter:
        servers.append(ScriptedWriter(answers))
        settings.WRITER_ENGINE = "vllm"
        settings.WRITER_BASE_URL = servers[-1].url
        settings.WRITER_TOKENIZER_PATH = ""
        settings.WRITER_STREAM = False
        settings.WRITER_MAX_RETRIES = 0
        settings.WRITER_TIMEOUT = 10.0
        settings.WRITER_REASONING_TOKENS = 0  # one phase: the answer as the server gives it
        settings.WRITER_PREFILL_REASONING = False
        vllm.reset_caches()
        return servers[-1]

    yield make
    vllm.reset_caches()
    for server in servers:
        server.close()


def test_an_answer_out_of_format_is_kept_with_a_warning(option, users, scripted):
    server = scripted([(200, "The first fisherman, soaked, bought three buns.")])
    edit = passage_edit_run(edit_id=ask(option, users["alice"], passage=PASSAGE).pk)
    assert edit.status == "succeeded" and edit.result == "The first fisherman, soaked, bought three buns."
    assert "did not follow the answer format" in edit.error and edit.model_name == "smollm2"
    prompt = server.requests[0]["messages"][1]["content"]
    assert "## Chapter 0: About the story" in prompt and f"```text\n{PASSAGE}\n```" in prompt
    assert "Lou lit the lanterns" in prompt and "canvas cracked like a sail" in prompt  # before and after


def test_leftover_tags_and_fences_are_stripped_from_a_well_formed_answer(option, users, scripted):
    scripted([(200, "<start_working_out>Keep it wet.<end_working_out>\n<SOLUTION>```text\n"
                    "A fisherman <SOLUTION>bought buns in the rain.\n```</SOLUTION>")])
    edit = passage_edit_run(edit_id=ask(option, users["alice"], passage=PASSAGE).pk)
    assert (edit.status, edit.result, edit.error) == ("succeeded", "A fisherman bought buns in the rain.", "")


@pytest.mark.parametrize(
    ("answer", "said"),
    [("", "an empty answer"), ("<start_working_out>Just thinking.<end_working_out>", "“<start_working_out>Just")],
)
def test_an_empty_passage_is_asked_for_twice_then_fails_with_the_reason(option, users, scripted, answer, said):
    server = scripted([(200, answer)])
    edit = passage_edit_run(edit_id=ask(option, users["alice"], passage=PASSAGE).pk)
    assert edit.status == "failed" and edit.result == "" and len(server.requests) == 2
    assert edit.error.startswith("The writer returned no passage (2 tries") and said in edit.error
    # The page says it, and offers to ask again with the same passage.
    html = _client(users, "alice").get(reverse("writer:passage_detail", args=[edit.pk])).content.decode()
    assert "The writer could not change the passage" in html and "Ask again" in html


def test_a_writer_error_fails_the_edit_through_the_task(option, users, scripted):
    scripted([(400, "max_tokens is too large for this model")])
    from writer.tasks import passage_edit_run_task

    edit = ask(option, users["alice"], passage=PASSAGE)
    passage_edit_run_task.apply(args=[edit.pk])
    edit.refresh_from_db()
    assert edit.status == "failed" and "max_tokens is too large" in edit.error


def test_a_passage_that_does_not_fit_the_context_fails_before_the_writer_is_called(story, users, scripted, settings):
    server = scripted([(200, "unused")])
    chapter = ChapterFactory(story=story, number=4, text="Rain fell. " * 300)
    edit = ask(chapter, users["alice"], start=0, end=3000)
    settings.WRITER_CONTEXT_TOKENS = 300
    edit = passage_edit_run(edit_id=edit.pk)
    assert edit.status == "failed" and "select a shorter passage" in edit.error and not server.requests


def test_a_text_changed_before_the_run_fails_without_calling_the_writer(option, users, scripted):
    server = scripted([(200, "unused")])
    edit = ask(option, users["alice"], passage=PASSAGE)
    GenerationOption.objects.filter(pk=option.pk).update(text="Rewritten by hand.")
    edit = passage_edit_run(edit_id=edit.pk)
    assert edit.status == "failed" and "text changed" in edit.error and not server.requests


@pytest.mark.slow
def test_a_rewrite_by_the_real_smollm2_engine_is_accepted_as_a_new_version(option, users, local_engine, client_for):
    edit = ask(option, users["alice"], passage=PASSAGE, instruction="more rain")
    from writer.tasks import passage_edit_run_task

    passage_edit_run_task.apply(args=[edit.pk])  # the task, eagerly: its lock, its service
    edit.refresh_from_db()
    assert edit.status == "succeeded", edit.error
    assert edit.result and edit.result == clean_result(edit.result) and edit.model_name
    c = client_for("alice")
    html = c.get(reverse("writer:passage_detail", args=[edit.pk])).content.decode()
    assert 'class="passage-diff' in html and "Accept the change" in html
    response = c.post(reverse("writer:passage_accept", args=[edit.pk]))
    assert response.status_code == 302 and response["Location"].endswith(f"#option-{option.index}")
    option.refresh_from_db()
    start = OPTION_TEXT.index(PASSAGE)
    assert option.text == OPTION_TEXT[:start] + edit.result + OPTION_TEXT[start + len(PASSAGE) :]
    versions = list(OptionVersion.objects.filter(option=option).order_by("number"))
    assert [(v.number, v.cause, v.text) for v in versions] == [(1, "written", OPTION_TEXT), (2, "passage", option.text)]
    assert versions[0].raw_output == "<start_working_out>…" and versions[0].request == option.request
    assert versions[1].created_by == users["alice"] and versions[1].model_name == edit.model_name
    edit.refresh_from_db()
    assert edit.decision == "accepted" and edit.decided_at


@pytest.mark.slow
def test_the_real_engine_in_one_phase_never_loses_its_answer(option, users, local_engine, settings):
    settings.WRITER_REASONING_TOKENS = 0  # one phase, as the model writes it
    settings.WRITER_PREFILL_REASONING = False
    settings.WRITER_MAX_NEW_TOKENS = 4  # 16 tokens (the least) cannot hold the format's four tags
    edit = passage_edit_run(edit_id=ask(option, users["alice"], passage=PASSAGE, tool="shorten").pk)
    if edit.status == "succeeded":  # kept, flagged
        assert edit.result and "did not follow the answer format" in edit.error
    else:  # nothing but white space or tags, twice: the reason, never a crash
        assert edit.status == "failed" and edit.error.startswith("The writer returned no passage")


# --- Deciding -------------------------------------------------------------------------------------------


def test_accept_after_the_text_changed_changes_nothing(option, users):
    edit = succeeded(ask(option, users["alice"], passage=PASSAGE), "A new passage.")
    GenerationOption.objects.filter(pk=option.pk).update(text=OPTION_TEXT.replace("three buns", "four buns"))
    with pytest.raises(ApplicationError, match="The text changed since this passage was chosen"):
        passage_edit_accept(edit=edit, user=users["alice"])
    option.refresh_from_db()
    assert "four buns" in option.text and not OptionVersion.objects.exists()
    edit.refresh_from_db()
    assert edit.decision == "pending"


def test_a_chapter_change_is_a_new_chapter_version_and_a_discard_keeps_the_text(story, users):
    chapter = story.chapters.get(number=2)
    edit = succeeded(ask(chapter, users["alice"], passage="Lou counted the buns twice"), "Lou counted the buns")
    with pytest.raises(ApplicationError, match="Only the story's author"):
        passage_edit_accept(edit=edit, user=users["bob"])
    accepted = passage_edit_accept(edit=edit, user=users["alice"])
    chapter.refresh_from_db()
    assert chapter.text == "The lanterns swung on their wire. Lou counted the buns and got two different numbers."
    assert accepted.version == 2 and accepted.chapter == chapter
    assert [(v.number, v.cause, v.created_by_id) for v in ChapterVersion.objects.filter(chapter=chapter)] == [
        (1, "edited", users["alice"].pk), (2, "passage", users["alice"].pk)
    ]
    with pytest.raises(ApplicationError, match="accepted already"):
        passage_edit_accept(edit=edit, user=users["alice"])
    second = succeeded(ask(chapter, users["alice"], passage="The lanterns swung"), "The lamps swayed")
    passage_edit_discard(edit=second, user=users["alice"])
    second.refresh_from_db()
    chapter.refresh_from_db()
    assert second.decision == "discarded" and chapter.text.startswith("The lanterns swung")
    with pytest.raises(ApplicationError, match="discarded already"):
        passage_edit_accept(edit=second, user=users["alice"])
    assert ChapterVersion.objects.filter(chapter=chapter).count() == 2


def test_a_new_passage_that_names_a_brand_never_goes_into_a_plain_option(option, users):
    approved_brand(name="Tidewave", managers=[users["mia"]], description="Surfboards.")
    edit = succeeded(ask(option, users["alice"], passage=PASSAGE), "The fisherman waxed his Tidewave board.")
    with pytest.raises(ApplicationError, match="names a brand"):
        passage_edit_accept(edit=edit, user=users["alice"])
    option.refresh_from_db()
    assert option.text == OPTION_TEXT and option.review_status == ReviewStatus.NONE


def test_a_dead_or_lost_edit_is_failed_when_its_page_reads_it(option, users):
    edit = ask(option, users["alice"], passage=PASSAGE)
    PassageEdit.objects.filter(pk=edit.pk).update(status="running")
    edit.refresh_from_db()
    assert passage_edit_refresh(edit=edit).error == "The worker writing the passage stopped; ask again."
    # Discarded while it waited: the run writes nothing.
    dropped = ask(option, users["alice"], passage=PASSAGE)
    passage_edit_discard(edit=dropped, user=users["alice"])
    assert passage_edit_run(edit_id=dropped.pk).status == "cancelled"
    lost = ask(option, users["alice"], passage=PASSAGE)
    PassageEdit.objects.filter(pk=lost.pk).update(created_at=timezone.now() - passages.STALE_QUEUED * 2)
    lost.refresh_from_db()
    assert passage_edit_refresh(edit=lost).status == "failed"
    fresh = ask(option, users["alice"], passage=PASSAGE)
    assert passage_edit_refresh(edit=fresh).status == "queued"
    assert passages.passage_edit_requeue_dead_run(fresh.pk) is None


# --- The pages ----------------------------------------------------------------------------------------


def _client(users, name):  # noqa: ANN001, ANN202
    from django.test import Client

    c = Client()
    c.force_login(users[name])
    return c


def test_the_tools_show_under_plain_options_and_chapters_for_the_author_only(story, option, users, client_for):
    brand = approved_brand(name="Tidewave", managers=[users["mia"]], description="Surfboards.")
    GenerationOption.objects.filter(index=1).update(brand=brand, review_status=ReviewStatus.APPROVED)
    html = client_for("alice").get(reverse("writer:request_detail", args=[option.request_id])).content.decode()
    assert html.count('class="passage-form"') == 1
    assert reverse("writer:passage_option", args=[option.pk]) in html
    assert "Passage tools work on plain options" in html and "js/passage_tools.js" in html
    chapter_url = reverse("writer:chapter_detail", args=[story.slug, 2])
    assert 'class="passage-form"' in client_for("alice").get(chapter_url).content.decode()
    assert 'class="passage-form"' not in client_for("rita").get(chapter_url).content.decode()


def test_a_refused_ask_shows_the_page_again_with_the_message_and_loses_nothing(story, option, users, client_for):
    c = client_for("alice")
    url = reverse("writer:passage_chapter", args=[story.slug, 2])
    across = "Pip was late again.\r\n\r\nThe lanterns swung on their wire."
    response = c.post(url, {"tool": "describe", "passage": across, "instruction": "more <b>salt</b>"})
    html = response.content.decode()
    assert response.status_code == 400
    assert "runs across 2 texts (Chapter 1, Chapter 2): select a passage inside one chapter." in html
    assert "Pip was late again." in html and 'value="more &lt;b&gt;salt&lt;/b&gt;"' in html
    assert 'value="describe" checked' in html
    response = c.post(reverse("writer:passage_option", args=[option.pk]), {"tool": "rewrite", "passage": "   "})
    assert response.status_code == 400 and "only spaces" in response.content.decode()
    response = c.post(url, {"tool": "rewrite", "passage": "Pip", "start": "-1", "end": "x"})
    assert response.status_code == 400 and "not a whole number of characters" in response.content.decode()
    response = c.post(url, {"tool": "poem", "passage": "The lanterns swung"})
    assert response.status_code == 400 and "poem is not one of the available choices" in response.content.decode()
    response = c.post(url, {"tool": "rewrite", "passage": "The lanterns swung", "start": "0", "end": "9999"})
    assert response.status_code == 400 and "is not inside Chapter 2&#x27;s text" in response.content.decode()
    assert not PassageEdit.objects.exists()
    # Typed by hand, the page never lets the passage become markup.
    response = c.post(url, {"tool": "rewrite", "passage": "<script>alert(1)</script>"})
    assert response.status_code == 400 and "&lt;script&gt;alert(1)&lt;/script&gt;</textarea>" in response.content.decode()


def test_a_flood_gets_429_with_the_passage_kept(option, users, client_for, settings):
    settings.PASSAGE_RATE_LIMIT_PER_MINUTE = 1
    c = client_for("alice")
    url = reverse("writer:passage_option", args=[option.pk])
    assert c.post(url, {"tool": "rewrite", "passage": PASSAGE}).status_code == 302
    response = c.post(url, {"tool": "shorten", "passage": PASSAGE})
    assert response.status_code == 429 and 1 <= int(response["Retry-After"]) <= 60
    assert "the most we take" in response.content.decode() and PASSAGE in response.content.decode()
    assert PassageEdit.objects.count() == 1


def test_html_in_a_passage_and_its_result_is_escaped_in_the_diff(story, users, client_for):
    chapter = ChapterFactory(story=story, number=4, text='She wrote <script>alert("x")</script> on the wall.')
    edit = succeeded(ask(chapter, users["alice"], passage='<script>alert("x")</script>'),
                     '<img src=x onerror="alert(1)"> and a <b>bold</b> word')
    html = client_for("alice").get(reverse("writer:passage_detail", args=[edit.pk])).content.decode()
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>bold" not in html
    assert "<del>script&gt;</del>" in html and "<ins>img src=x onerror=&quot;</ins>" in html
    assert "<ins>&gt; and a &lt;b&gt;bold</ins>" in html


def test_ask_then_poll_then_decide_through_the_pages(option, users, client_for):
    c = client_for("alice")
    response = c.post(reverse("writer:passage_option", args=[option.pk]),
                      {"tool": "expand", "passage": PASSAGE, "instruction": "more rain"})
    edit = PassageEdit.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("writer:passage_detail", args=[edit.pk])
    html = c.get(response["Location"]).content.decode()
    assert reverse("writer:passage_status", args=[edit.pk]) in html and "Waiting for a writer" in html
    assert "Your instruction: “more rain”" in html
    assert c.get(reverse("writer:passage_status", args=[edit.pk])).status_code == 200  # still polling
    succeeded(edit, "The first fisherman, soaked to the bone, bought three buns and ate one in the rain.")
    status = c.get(reverse("writer:passage_status", args=[edit.pk]))
    assert status.status_code == 286 and "<ins>, soaked to the bone, </ins>" in status.content.decode()
    response = c.post(reverse("writer:passage_discard", args=[edit.pk]), follow=True)
    assert "keeps its passage as it was" in response.content.decode()
    option.refresh_from_db()
    assert option.text == OPTION_TEXT and not OptionVersion.objects.exists()
    # An accepted option's tools are its chapter's.
    chapter = ChapterFactory(story=option.request.story, number=4, text=OPTION_TEXT)
    GenerationOption.objects.filter(pk=option.pk).update(accepted_chapter=chapter)
    response = c.get(reverse("writer:passage_option", args=[option.pk]))
    assert response["Location"] == reverse("writer:passage_chapter", args=[option.request.story.slug, 4])
    html = c.get(reverse("writer:request_detail", args=[option.request_id])).content.decode()
    assert 'class="passage-form"' not in html and "which this option became" in html
    assert "Another option of this request became the chapter" in html  # option 2 stays as written
    other = GenerationOption.objects.get(request=option.request, index=1)
    with pytest.raises(ApplicationError, match="Another option of this request became the chapter"):
        ask(other, users["alice"], passage="Another take")
