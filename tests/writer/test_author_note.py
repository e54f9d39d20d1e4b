"""The author's note: a short steering text on the story, kept until the author changes it, that goes whole
into every next request's prompt (the author's and the readers'), after the chapters and before the
reader's preference, the brand brief and the task. Only the story's owner sees or sets it."""

from __future__ import annotations

import pytest
from django.urls import reverse

from mesu_web.errors import ApplicationError
from tests.factories import run_generation, story_with_chapters
from training.dataset import build_pairs
from writer import services
from writer.forms import StoryForm
from writer.models import AUTHOR_NOTE_MAX_CHARS, GenerationRequest, Story
from writer.prompting import (
    AUTHOR_NOTE_HEADING,
    BudgetReport,
    ChapterText,
    StoryMeta,
    build_prompt,
    render_author_note,
)

META = StoryMeta(
    title="Neon Rain",
    author_name="Ava Demo",
    summary="A courier finds out what her earpiece assistant really is.",
    genre="cyberpunk",
    tags=("cyberpunk", "found family"),
    characters="Juno Vale (courier); Static (her assistant); Oki (mechanic).",
    setting="Meridian Stack, a vertical city where it has rained for 612 days.",
    intent_notes="Fast, warm, never cynical.",
)
NOTE = "Keep the tone wry.\nJuno should not learn the secret yet."
SENTENCE = "Juno ran along the wet rail while Static counted the drones above the stack. "


def words(text: str) -> int:
    return len(text.split())


def _user(built) -> str:  # noqa: ANN001 (a BuiltPrompt)
    return built.messages[1]["content"]


def _exact(built) -> int:  # noqa: ANN001
    return sum(words(m["content"]) for m in built.messages)


def _chapters(count: int, sentences: int = 20) -> list[ChapterText]:
    return [ChapterText(n, f"Part {n}", f"Day {n}. " + SENTENCE * sentences) for n in range(1, count + 1)]


# --- the prompt ----------------------------------------------------------------------------------------


def test_the_note_sits_after_the_chapters_and_before_the_preference_brief_and_task():
    chapters = [ChapterText(1, "Static", "Juno ran. The rain fell."), ChapterText(2, "Lantern Row", "The door was open.")]
    built = build_prompt(
        meta=META, chapters=chapters, count_tokens=words, budget_tokens=10_000,
        preference="More Oki, please.", brand_brief="Kettle & Co. tea, once.", author_note=f"  {NOTE}\n",
    )  # fmt: skip
    user = _user(built)
    section = render_author_note(NOTE)
    assert section.startswith(AUTHOR_NOTE_HEADING + "\n\n") and section.endswith(NOTE)
    assert user.count(AUTHOR_NOTE_HEADING) == 1 and section + "\n\n" in user  # whole, as written
    assert (
        user.index("## Chapter 2: Lantern Row")
        < user.index("The door was open.\n```\n\n" + AUTHOR_NOTE_HEADING)  # straight after the last chapter
        < user.index("## The reader's preference")
        < user.index("## Brand brief")
        < user.index("## Your task")
    )
    report = built.report
    assert report.author_note_tokens == words(section + "\n\n") > 0
    assert report.used_tokens == _exact(built) and report.whole == [1, 2]
    assert report.summary().endswith("; author's note included")
    assert BudgetReport(**report.to_dict()) == report  # the request keeps it as JSON


def test_without_preference_or_brief_the_note_is_right_before_the_task():
    built = build_prompt(meta=META, chapters=[], count_tokens=words, budget_tokens=1_000, author_note=NOTE)
    user = _user(built)
    assert user.index("## Chapter 0: About the story") < user.index(AUTHOR_NOTE_HEADING) < user.index("## Your task")
    assert user.endswith(render_author_note(NOTE) + "\n\n" + user[user.index("## Your task") :])


@pytest.mark.parametrize("empty", ["", "   \n\t "])
def test_an_empty_note_leaves_the_prompt_exactly_as_before(empty):
    # The same expectation as test_prompting's layout test, with the note given and empty.
    chapters = [ChapterText(1, "Static", "Juno ran. The rain fell."), ChapterText(2, "Lantern Row", "The door was open.")]
    built = build_prompt(meta=META, chapters=chapters, count_tokens=words, budget_tokens=10_000, author_note=empty)
    assert built.report == BudgetReport(10_000, _exact(built), [1, 2], [], [])
    assert AUTHOR_NOTE_HEADING not in _user(built) and "author's note" not in built.report.summary()
    # And with chapters shortened and omitted, a preference and a brief: byte for byte the same prompt.
    long = _chapters(30)
    kwargs = dict(meta=META, chapters=long, count_tokens=words, budget_tokens=900, preference="x y", brand_brief="b")
    without, given = build_prompt(**kwargs), build_prompt(**kwargs, author_note=empty)
    assert given.messages == without.messages and given.report == without.report
    assert without.report.omitted  # the case is a budgeted one


def test_the_note_is_fixed_the_chapters_are_shortened_first():
    chapters = _chapters(12)
    plain = build_prompt(meta=META, chapters=chapters, count_tokens=words, budget_tokens=100_000)
    budget = plain.report.used_tokens  # everything fits whole, exactly
    assert build_prompt(meta=META, chapters=chapters, count_tokens=words, budget_tokens=budget).report.whole == list(
        range(1, 13)
    )
    note = "Keep the tone wry; Juno should not learn the secret yet. " * 6
    built = build_prompt(meta=META, chapters=chapters, count_tokens=words, budget_tokens=budget, author_note=note)
    report = built.report
    assert render_author_note(note) in _user(built)  # whole
    assert report.author_note_tokens == words(render_author_note(note) + "\n\n")
    assert report.shortened or report.omitted  # the chapters made room for it
    assert 12 in report.whole + report.shortened  # the newest chapter is still there
    assert report.used_tokens == _exact(built) <= budget
    # At every budget the note is whole or the prompt is refused: it is never cut.
    for b in range(budget - 900, budget, 37):
        try:
            built = build_prompt(meta=META, chapters=chapters, count_tokens=words, budget_tokens=b, author_note=note)
        except ApplicationError:
            continue
        assert render_author_note(note) in _user(built) and built.report.used_tokens <= b


def test_a_note_too_big_for_the_budget_is_refused_with_its_name():
    with pytest.raises(ApplicationError, match="author's note") as caught:
        build_prompt(meta=META, chapters=_chapters(2), count_tokens=words, budget_tokens=300, author_note="wry " * 400)
    assert caught.value.extra["over_by"] > 0


def test_the_training_dataset_prompts_are_unchanged():
    chapters = _chapters(4, sentences=3)
    pairs, skipped = build_pairs(book_id="b", meta=META, chapters=chapters, count_tokens=words, budget_tokens=2_000)
    assert skipped == 0 and len(pairs) == 3
    for pair in pairs:
        expected = build_prompt(
            meta=META, chapters=chapters[: pair.k], count_tokens=words, budget_tokens=2_000, next_number=pair.k + 1
        )
        assert pair.prompt == expected.messages and AUTHOR_NOTE_HEADING not in pair.prompt[1]["content"]


# --- the form and the service -----------------------------------------------------------------------


def _form_data(story: Story, note: str) -> dict:
    return {
        "title": story.title, "author_name": story.author_name, "summary": story.summary, "genre": story.genre,
        "tags": ", ".join(story.tags), "characters": story.characters, "setting": story.setting,
        "intent_notes": story.intent_notes, "author_note": note,
    }  # fmt: skip


def test_the_form_holds_the_note_to_its_limit_with_a_clear_error(users):
    story = story_with_chapters(owner=users["alice"], chapters=1)
    form = StoryForm(_form_data(story, "w" * (AUTHOR_NOTE_MAX_CHARS + 1)), instance=story)
    assert not form.is_valid()
    assert form.errors["author_note"] == [
        f"Keep the author's note to {AUTHOR_NOTE_MAX_CHARS} characters (it has {AUTHOR_NOTE_MAX_CHARS + 1}): "
        "a few lines that steer the next chapters."
    ]
    # The limit is on the cleaned text: control characters and \r\n don't count against it.
    exactly = "w" * (AUTHOR_NOTE_MAX_CHARS - 2) + "\r\n" + "w"
    form = StoryForm(_form_data(story, exactly + "\x07\x08\x7f"), instance=story)
    assert form.is_valid(), form.errors
    assert form.cleaned_data["author_note"] == "w" * (AUTHOR_NOTE_MAX_CHARS - 2) + "\nw"
    # A NUL is refused by the form, as in every text field of the site (the service removes it).
    form = StoryForm(_form_data(story, "wry\x00"), instance=story)
    assert not form.is_valid() and form.errors["author_note"] == ["Null characters are not allowed."]
    # The service holds to it too (for callers that are not the form).
    with pytest.raises(ApplicationError, match="Keep the author's note to 600 characters"):
        services.story_update(story=story, author_note="w" * 601)
    assert services.story_update(story=story, author_note="\x00\x01 \x7f").author_note == ""
    created = services.story_create(owner=users["alice"], title="Noted", author_note=" Keep it wry.\r\n ")
    assert created.author_note == "Keep it wry."


def test_the_owner_sets_it_on_the_edit_page_html_is_text_and_control_characters_go(users, client_for):
    story = story_with_chapters(owner=users["alice"], chapters=1)
    c = client_for("alice")
    url = reverse("writer:story_edit", args=[story.slug])
    form_page = c.get(url).content.decode()
    assert 'name="author_note"' in form_page and f'maxlength="{AUTHOR_NOTE_MAX_CHARS}"' in form_page
    note = "Keep it <b>wry</b>;\r\n<script>alert(1)</script> Juno\x1b must not\x07 know.  "
    response = c.post(url, _form_data(story, note))
    assert response.status_code == 302 and response["Location"] == story.get_absolute_url()
    story.refresh_from_db()
    assert story.author_note == "Keep it <b>wry</b>;\n<script>alert(1)</script> Juno must not know."
    page = c.get(story.get_absolute_url()).content.decode()
    assert "Keep it &lt;b&gt;wry&lt;/b&gt;;<br>&lt;script&gt;alert(1)&lt;/script&gt; Juno must not know." in page
    assert "<script>alert(1)</script>" not in page and "<b>wry</b>" not in page
    # The edit page shows it back (escaped) for changing.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in c.get(url).content.decode()
    # Over the limit: the page says why and keeps the old note.
    response = c.post(url, _form_data(story, "w" * 700))
    assert response.status_code == 200 and "Keep the author&#x27;s note to 600 characters (it has 700)" in (
        response.content.decode()
    )
    story.refresh_from_db()
    assert story.author_note.startswith("Keep it <b>wry</b>")


def test_only_the_owner_sets_or_sees_it(users, client_for, client):
    story = story_with_chapters(owner=users["alice"], chapters=1)
    services.story_update(story=story, author_note="The secret stays secret.")
    url = reverse("writer:story_edit", args=[story.slug])
    for who in ("bob", "rita", "mia", "root"):
        c = client_for(who)
        refusal = c.post(url, {"title": "Hijack"}).status_code  # the story edit page's own refusal
        assert refusal == 403
        assert c.post(url, _form_data(story, "Hijacked.")).status_code == refusal
        assert c.get(url).status_code == 403
        assert "The secret stays secret." not in c.get(story.get_absolute_url()).content.decode()
    response = client.post(url, _form_data(story, "Hijacked."))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert "The secret stays secret." not in client.get(story.get_absolute_url()).content.decode()
    story.refresh_from_db()
    assert story.author_note == "The secret stays secret." and story.title != "Hijack"
    assert "The secret stays secret." in client_for("alice").get(story.get_absolute_url()).content.decode()


# --- a real request ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_next_request_carries_the_note_the_authors_and_the_readers(users, local_engine, client_for, monkeypatch):
    from writer.engines import get_engine
    from writer.engines.local import LocalEngine
    from writer.preferences import request_prompt

    prompts: list[str] = []
    original = LocalEngine.generate

    def recorded(self, messages, **kwargs):  # noqa: ANN001, ANN202 (the real engine, its prompt kept)
        prompts.append(messages[1]["content"])
        return original(self, messages, **kwargs)

    monkeypatch.setattr(LocalEngine, "generate", recorded)
    story = story_with_chapters(owner=users["alice"], chapters=2)
    services.story_update(story=story, author_note=NOTE)

    request = run_generation(story, users["alice"], n=1, max_new_tokens=8)
    assert request.status == GenerationRequest.Status.SUCCEEDED, request.error
    user = prompts[-1]
    assert render_author_note(NOTE) + "\n\n## Your task" in user
    assert user.index("## Chapter 2") < user.index(AUTHOR_NOTE_HEADING)
    assert request.prompt_report["author_note_tokens"] > 0
    assert request.prompt_report["summary"].endswith("; author's note included")
    # The preference dataset rebuilds the same prompt (no brand brief here).
    assert request_prompt(request, get_engine("local").count_tokens)[1]["content"] == user

    reader = run_generation(story, users["rita"], kind=GenerationRequest.Kind.READER, n=1, max_new_tokens=8,
                            preference="a bit sad, not a tragedy")  # fmt: skip
    assert reader.status == GenerationRequest.Status.SUCCEEDED, reader.error
    user = prompts[-1]
    assert user.index(AUTHOR_NOTE_HEADING) < user.index("## The reader's preference") < user.index("## Your task")
    assert NOTE in user
    # The reader's page says a note steered it, never what it says.
    page = client_for("rita").get(reverse("writer:request_detail", args=[reader.pk])).content.decode()
    assert "author&#x27;s note included" in page and "Juno should not learn" not in page

    # Removed: the next request's prompt has no section.
    services.story_update(story=story, author_note="")
    run_generation(story, users["alice"], n=1, max_new_tokens=8)
    assert AUTHOR_NOTE_HEADING not in prompts[-1]
