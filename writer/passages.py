"""Passage tools: the author selects a passage of one option or one chapter and asks the writer to rewrite,
expand, shorten or describe it (more sensory detail); the change is shown against the original, word by
word, and accepted (a new version of the option or chapter) or discarded.

The selection (`locate_passage`): character offsets into the text, or the passage itself, pasted or taken
from the browser's selection, found in the text as it is now (exactly, else with any white space between
its words and emphasis marks inside them, as the page renders the text). It must be inside one text,
found once (or the browser says which occurrence it was), of at most MAX_PASSAGE_CHARS, and not blank.

Who and what (`passage_edit_request`): only the story's author; plain options of the author's own
requests (no brand: a branded option's text is under its brand's review, and a change would have to go
back to it) and chapters. An option accepted as a chapter is changed through its chapter. Each ask is
counted against a flood limit (PASSAGE_RATE_LIMIT_PER_MINUTE / _PER_HOUR, as the ratings' limit).

The writer (`passage_edit_run`, a task on the generation queue): the project's system prompt and answer
format (reasoning, then the passage between the SOLUTION tags), the story's chapter 0, a bounded piece of
the text before and after the passage, the passage and the tool's instruction, with the author's own word
(at most 300 characters). The base model writes it (no adapter: the adapters are trained to write whole
chapters, as the brand placement's rewrite says). The answer is parsed with writer.parsing; an answer out
of format is kept as the passage with a warning (a PassageEdit has no warning field: a succeeded edit's
`error` holds it), leftover tags and fences are stripped, a loop is cut; an empty passage is asked for
once more, then the edit fails with the reason.

Accept (`passage_edit_accept`): the text becomes text[:start] + result + text[end:] only while
text[start:end] is still the original passage; the change is a new version (writer.versions, cause
"passage"; the text before it is version 1 when it had none). A plain option stays plain: a new passage
that names a brand is refused. Discard keeps the text and marks the edit discarded.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Max
from django.urls import reverse
from django.utils import timezone

from brands.matching import option_acceptance
from brands.review import option_revise
from mesu_web.action_limits import ActionLimited, Limit, per_minute_and_hour, spend, wait_words
from mesu_web.errors import ApplicationError
from mesu_web.jobs.locks import run_lock
from writer import services
from writer.engines import get_engine, sampling_from_settings
from writer.models import (
    Chapter,
    ChapterVersion,
    GenerationOption,
    GenerationRequest,
    PassageEdit,
    ReviewStatus,
    Story,
    VersionCause,
)
from writer.parsing import parse_output, strip_tags
from writer.prompting import (
    REASONING_END,
    REASONING_START,
    SOLUTION_END,
    SOLUTION_START,
    SYSTEM_PROMPT,
    ChapterText,
    StoryMeta,
    prompt_budget,
    render_chapter,
    render_metadata,
)
from writer.quality import cut_loop
from writer.versions import option_version_add, option_versions_ensure

logger = logging.getLogger(__name__)

Tool = PassageEdit.Tool
Decision = PassageEdit.Decision

MAX_PASSAGE_CHARS = 4000  # ~900 tokens of English prose: an expansion of it still fits a 4,096-token context
MAX_INSTRUCTION_CHARS = 300  # PassageEdit.instruction
# The text around the passage that the writer reads, in characters, tried in this order until the prompt
# fits its budget: a paragraph or two before (where the passage must join), less after.
CONTEXT_CHARS = ((1200, 600), (400, 200), (0, 0))
# The answer's tokens: the passage's tokens times the tool's length (times 1.25 for room), at least
# MIN_ANSWER_TOKENS, at most WRITER_MAX_NEW_TOKENS x 3 (1,536 with the default 512) and half the context.
LENGTH = {Tool.REWRITE: 1.0, Tool.EXPAND: 2.0, Tool.SHORTEN: 0.5, Tool.DESCRIBE: 1.6}
ANSWER_ROOM = 1.25
MIN_ANSWER_TOKENS = 16
ATTEMPTS = 2  # an empty passage is asked for once more (another seed) before the edit fails
STALE_QUEUED = timedelta(minutes=10)  # a queued edit this old lost its message
ANSWER_QUOTE_CHARS = 300  # of an unusable answer, quoted in the failure's reason
DEFAULT_PER_MINUTE = 6  # asks per author; each one is a call to the writer
DEFAULT_PER_HOUR = 60
KEY_PREFIX = "passage-edits"

TASKS = {
    Tool.REWRITE: "Rewrite the passage: tell the same events, with the same characters and facts, in fresh "
    "wording, about as long as it is now.",
    Tool.EXPAND: "Expand the passage to about twice its length: keep the same events in the same order, and "
    "add detail, gesture and thought where they fit. Add no new events.",
    Tool.SHORTEN: "Shorten the passage to about half its length: keep the events that matter and the voice; "
    "cut repetition and padding.",
    Tool.DESCRIBE: "Rewrite the passage with more sensory detail: what the characters see, hear, smell and "
    "touch (and taste, where it fits). Keep the same events in the same order.",
}

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NEWLINES = re.compile(r"\r\n?")
_EMPHASIS = "[*_~]*"  # markdown emphasis marks: the page shows "ran" where the text says "*ran*"
_FENCE_LINE = re.compile(r"^\s*```[^\n]*\n?|\n?```\s*$")


class PassageLimited(ActionLimited):
    """Too many asks from one author: `retry_after` seconds until the next is taken."""


# --- The selection ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    start: int
    end: int
    text: str


def _normal(passage: str) -> str:
    return _NEWLINES.sub("\n", passage or "")


def _matches(text: str, passage: str) -> list[tuple[int, int]]:
    """Where `passage` is in `text` (non-overlapping, in order): exactly; else with any white space
    between its words and emphasis marks inside them (the page's rendering of the text)."""
    exact = [(m.start(), m.end()) for m in re.finditer(re.escape(passage), text)]
    if exact:
        return exact
    words = passage.split()
    pattern = rf"{_EMPHASIS}\s+{_EMPHASIS}".join(_EMPHASIS.join(re.escape(ch) for ch in word) for word in words)
    return [(m.start(), m.end()) for m in re.finditer(pattern, text)]


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _too_long(length: int) -> ApplicationError:
    return ApplicationError(
        f"The passage has {length:,} characters; a passage tool takes at most {MAX_PASSAGE_CHARS:,} at a time: "
        "select a shorter passage.",
        {"field": "passage"},
    )


def locate_passage(
    text: str,
    *,
    label: str,
    passage: str = "",
    start: int | None = None,
    end: int | None = None,
    occurrence: int | None = None,
    elsewhere: Callable[[], Sequence[tuple[str, str]]] = tuple,
) -> Selection:
    """The passage to change in `text` (called `label` in messages), from offsets or from the passage
    itself (the module's docstring); ApplicationError with a message for the author otherwise.
    `elsewhere()`: (label, text) of the texts next to this one (itself included), read only to say that a
    pasted passage that is not found runs across two of them."""
    passage = _normal(passage)
    if (start is None) != (end is None):
        raise ApplicationError("A selection needs both its start and its end: select the passage again.")
    if start is not None and end is not None:
        if not 0 <= start < end <= len(text):
            raise ApplicationError(
                f"The selection (characters {start:,} to {end:,}) is not inside {label}'s text, which has "
                f"{len(text):,} characters: select the passage again.",
                {"field": "passage"},
            )
        if not passage.strip() or " ".join(text[start:end].split()) == " ".join(passage.split()):
            s, e = _trimmed(text, start, end)
            if s == e:
                raise ApplicationError(
                    "The selection holds only spaces: select some words of the text.", {"field": "passage"}
                )
            if e - s > MAX_PASSAGE_CHARS:
                raise _too_long(e - s)
            return Selection(s, e, text[s:e])
        # The offsets point elsewhere than the passage given (the text moved): the passage decides.
    if not passage:
        raise ApplicationError(
            "Select a passage first (or paste it in the box): the selection is empty.", {"field": "passage"}
        )
    if not passage.strip():
        raise ApplicationError("The selection holds only spaces: select some words of the text.", {"field": "passage"})
    if len(passage.strip()) > MAX_PASSAGE_CHARS:
        raise _too_long(len(passage.strip()))
    found = _matches(text, passage.strip())
    if not found:
        raise _not_found(passage.strip(), label, elsewhere)
    if len(found) > 1:
        if occurrence is None or not 1 <= occurrence <= len(found):
            raise ApplicationError(
                f"This passage is in {label} {len(found)} times: select a longer passage, so that it is found "
                "once.",
                {"field": "passage"},
            )
        found = [found[occurrence - 1]]
    s, e = found[0]
    if e - s > MAX_PASSAGE_CHARS:
        raise _too_long(e - s)
    return Selection(s, e, text[s:e])


def _not_found(
    passage: str, label: str, elsewhere: Callable[[], Sequence[tuple[str, str]]]
) -> ApplicationError:
    """The message for a passage that is not in the text: it runs across two texts (its lines are found
    in different ones), or it is not there as written."""
    lines = [line.strip() for line in passage.split("\n") if line.strip()]
    where: list[str] = []
    if len(lines) > 1:
        texts = list(elsewhere())
        for line in lines:
            owner = next((name for name, other in texts if _matches(other, line)), None)
            if owner is None:
                where = []
                break
            if owner not in where:
                where.append(owner)
    if len(where) > 1:
        return ApplicationError(
            f"This passage runs across {len(where)} texts ({', '.join(where)}): select a passage inside one "
            "chapter.",
            {"field": "passage"},
        )
    return ApplicationError(
        f"This passage is not in {label}'s text as it reads now: select a passage inside one chapter, "
        "exactly as it reads.",
        {"field": "passage"},
    )


def clean_instruction(instruction: str) -> str:
    """The author's word to the writer on one line; ApplicationError when it is too long."""
    instruction = " ".join(_CONTROL.sub("", instruction or "").split())
    if len(instruction) > MAX_INSTRUCTION_CHARS:
        raise ApplicationError(
            f"Your instruction has {len(instruction):,} characters; the most is {MAX_INSTRUCTION_CHARS}.",
            {"field": "instruction"},
        )
    return instruction


# --- The flood limit (as writer.preferences counts ratings: fixed windows in Django's cache) --------


def limits() -> tuple[Limit, Limit]:
    """(asks, window seconds, window in words) of each limit."""
    return per_minute_and_hour("PASSAGE_RATE_LIMIT", DEFAULT_PER_MINUTE, DEFAULT_PER_HOUR)


def _spend(user: AbstractBaseUser) -> None:
    """Count one ask of `user`; PassageLimited when it is over a limit (mesu_web.action_limits)."""
    spend(
        key_prefix=KEY_PREFIX,
        user_id=user.pk,
        limits=limits(),
        error=PassageLimited,
        message=lambda most, words, wait: (
            f"You have asked for {most} passage changes in {words}, the most we take. "
            f"Try again in {wait_words(wait)}."
        ),
    )


# --- Targets ----------------------------------------------------------------------------------------


def option_label(option: GenerationOption) -> str:
    return f"{option.label} of chapter {option.request.next_number}"


def chapter_label(chapter: Chapter) -> str:
    return f"Chapter {chapter.number}"


def target_label(edit: PassageEdit) -> str:
    return option_label(edit.option) if edit.option_id else chapter_label(edit.chapter)


def target_url(edit: PassageEdit) -> str:
    """Where the text the edit changes is shown: the option on its request's page, or the chapter."""
    if edit.option_id:
        option = edit.option
        return f"{reverse('writer:request_detail', args=[option.request_id])}#option-{option.index}"
    return reverse("writer:chapter_detail", args=[edit.story.slug, edit.chapter.number])


def option_tools_refusal(option: GenerationOption, user: AbstractBaseUser) -> str:
    """Why the passage tools are not for `option` and `user` ("" when they are). An accepted option is
    changed through its chapter (the caller switches)."""
    request = option.request
    if request.story.owner_id != user.pk:
        return "Only the story's author can change its options."
    if option.review_status == ReviewStatus.CHANGES and option.brand_id is not None:
        # The brand asked for changes (brands.review): the writer may revise the placed passage, whoever's
        # chapter it is; accepting it sends the option back to the brand's review.
        return ""
    if request.kind != GenerationRequest.Kind.AUTHOR:
        return "A reader's personalised chapter stays as the writer wrote it for them; passage tools are not for it."
    if request.status != GenerationRequest.Status.SUCCEEDED:
        return "This request has not finished."
    if not option.accepted_chapter_id and request.options.filter(accepted_chapter__isnull=False).exists():
        # The others stay as written: the author's accept is a preference for the chosen over their texts.
        return "Another option of this request became the chapter; the others stay as they were written."
    if option.brand_id is not None or option.review_status != ReviewStatus.NONE:
        return (
            "Passage tools work on plain options: this one carries a brand placement under its brand's review, "
            "and a changed text would have to go back to it. Accept it first, or choose a plain option."
        )
    return ""


def _texts_near(story: Story, option: GenerationOption | None, chapter: Chapter | None) -> list[tuple[str, str]]:
    """The texts a passage pasted for `option` or `chapter` may have been copied across: the chapter and
    its neighbours; or the request's options and the chapter before them."""
    if chapter is not None:
        numbers = (chapter.number - 1, chapter.number, chapter.number + 1)
    else:
        numbers = (option.request.next_number - 1,)
    chapters = Chapter.objects.filter(story=story, number__in=numbers).order_by("number")
    texts = [(f"Chapter {n}", t) for n, t in chapters.values_list("number", "text")]
    if option is not None:
        options = GenerationOption.objects.filter(request_id=option.request_id).order_by("index")
        texts += [(f"Option {i + 1}", t) for i, t in options.values_list("index", "text")]
    return texts


# --- Asking -----------------------------------------------------------------------------------------


def passage_edit_request(
    *,
    user: AbstractBaseUser,
    tool: str,
    option: GenerationOption | None = None,
    chapter: Chapter | None = None,
    passage: str = "",
    start: int | None = None,
    end: int | None = None,
    occurrence: int | None = None,
    instruction: str = "",
    engine: str | None = None,
    enqueue: bool = True,
) -> PassageEdit:
    """Ask the writer to change a passage of `option` or `chapter` (exactly one): a PassageEdit row,
    queued on the generation queue. ApplicationError (PassageLimited for a flood) says what is wrong."""
    if (option is None) == (chapter is None):
        raise ApplicationError("Choose a passage of one option or one chapter.")
    if tool not in Tool.values:
        raise ApplicationError(
            f"Unknown passage tool {tool!r}; choose one of: {', '.join(Tool.values)}.", {"field": "tool"}
        )
    instruction = clean_instruction(instruction)
    engine_name = engine or settings.WRITER_ENGINE
    get_engine(engine_name)  # fails now, with the valid names, on a typo
    if option is not None:
        refusal = option_tools_refusal(option, user)
        if refusal:
            raise ApplicationError(refusal)
        if option.accepted_chapter_id:  # the option is a chapter now: the tools act on the chapter
            chapter, option = Chapter.objects.select_related("story").get(pk=option.accepted_chapter_id), None
    story = option.request.story if option is not None else chapter.story
    if story.owner_id != user.pk:
        raise ApplicationError("Only the story's author can change its chapters.")
    with transaction.atomic():
        if option is not None:
            locked_text = GenerationOption.objects.select_for_update().values_list("text", flat=True).get(pk=option.pk)
            label = option_label(option)
        else:
            locked_text = Chapter.objects.select_for_update().values_list("text", flat=True).get(pk=chapter.pk)
            label = chapter_label(chapter)
        selection = locate_passage(
            locked_text,
            label=label,
            passage=passage,
            start=start,
            end=end,
            occurrence=occurrence,
            elsewhere=lambda: _texts_near(story, option, chapter),
        )
        _spend(user)
        edit = PassageEdit.objects.create(
            story=story,
            option=option,
            chapter=chapter,
            requested_by=user,
            tool=tool,
            instruction=instruction,
            start=selection.start,
            end=selection.end,
            original=selection.text,
            engine=engine_name,
        )
    if enqueue:
        from writer.tasks import passage_edit_run_task

        edit_id = edit.pk
        transaction.on_commit(lambda: passage_edit_run_task.delay(edit_id), robust=True)
    return edit


# --- The prompt -------------------------------------------------------------------------------------


def _fenced(text: str) -> str:
    """`text` in a ```text block, its own fences spaced out (writer.prompting's chapter block)."""
    return render_chapter(ChapterText(number=0, title="", text=text)).split("\n\n", 1)[1]


def context_around(text: str, start: int, end: int, *, before: int, after: int) -> tuple[str, str]:
    """At most `before` characters of `text` before `start` (from a word) and `after` after `end` (to a
    word), "…" where they are cut."""
    head = text[max(0, start - before) : start] if before else ""
    if head and start - before > 0:
        space = head.find(" ")
        head = "…" + (head[space + 1 :] if 0 <= space < 40 else head)
    tail = text[end : end + after] if after else ""
    if tail and end + after < len(text):
        space = tail.rfind(" ")
        tail = (tail[:space] if space > len(tail) - 40 else tail) + "…"
    return head.strip(), tail.strip()


def passage_messages(
    *, meta: StoryMeta, heading: str, before: str, passage: str, after: str, tool: str, instruction: str = ""
) -> list[dict[str, str]]:
    """The writer's chat: chapter 0, the text before the passage, the passage, the text after it, and the
    task in the project's answer format."""
    parts = [render_metadata(meta)]
    if before:
        parts.append(f"## {heading}, before the passage\n\n{_fenced(before)}")
    parts.append(f"## The passage\n\n{_fenced(passage)}")
    if after:
        parts.append(f"## {heading}, after the passage\n\n{_fenced(after)}")
    task = (
        f"## Your task\n\n{TASKS[tool]} Keep the story's voice, tense and point of view, and let it join the text "
        "before and after it. Write only the new passage, not the text around it."
    )
    if instruction:
        task += f"\n\nThe author asks: {instruction}"
    task += (
        f"\n\nThink it through between {REASONING_START} and {REASONING_END}, then write the new passage between "
        f"{SOLUTION_START} and {SOLUTION_END}."
    )
    parts.append(task)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n\n".join(parts)}]


def answer_tokens(tool: str, passage_tokens: int) -> int:
    """The passage's answer budget in tokens (see LENGTH)."""
    most = min(settings.WRITER_MAX_NEW_TOKENS * 3, settings.WRITER_CONTEXT_TOKENS // 2)
    want = math.ceil(passage_tokens * LENGTH[tool] * ANSWER_ROOM) + MIN_ANSWER_TOKENS
    return max(MIN_ANSWER_TOKENS, min(want, most))


def clean_result(text: str) -> str:
    """The passage the writer wrote: no tags, no fence around it, no control characters."""
    text = _CONTROL.sub("", strip_tags(text or ""))
    text = _FENCE_LINE.sub("", text.strip())
    return text.strip()


# --- Running (writer.tasks.passage_edit_run_task) ------------------------------------------------------


def _start_run(edit_id: int) -> PassageEdit | None:
    with transaction.atomic():
        edit = PassageEdit.objects.select_for_update().get(pk=edit_id)
        if edit.is_finished:
            return None
        if edit.decision == Decision.DISCARDED:  # discarded while it waited: the writer's time is not spent
            edit.status, edit.finished_at = PassageEdit.Status.CANCELLED, timezone.now()
            edit.save(update_fields=["status", "finished_at"])
            return None
        edit.status = PassageEdit.Status.RUNNING
        edit.started_at = edit.started_at or timezone.now()
        edit.error = ""
        edit.save(update_fields=["status", "started_at", "error"])
    return PassageEdit.objects.select_related("story", "option__request", "chapter").get(pk=edit_id)


def _current_text(edit: PassageEdit) -> str:
    if edit.option_id:
        return GenerationOption.objects.values_list("text", flat=True).get(pk=edit.option_id)
    return Chapter.objects.values_list("text", flat=True).get(pk=edit.chapter_id)


def _heading(edit: PassageEdit) -> str:
    if edit.option_id:
        return f"Chapter {edit.option.request.next_number} (a draft)"
    chapter = edit.chapter
    title = " ".join(chapter.title.split())
    plain = f"Chapter {chapter.number}"
    return plain if not title or title.lower() == plain.lower() else f"{plain}: {title}"


def _finish(edit_id: int, **fields: object) -> None:
    PassageEdit.objects.filter(pk=edit_id).exclude(status=PassageEdit.Status.SUCCEEDED).update(
        finished_at=timezone.now(), **fields
    )


def passage_edit_run(*, edit_id: int) -> PassageEdit:
    """Ask the writer for the edit's passage and store it (or fail the edit with the reason). Idempotent:
    a finished edit is returned as it is. Raises EngineError (with `retryable`) when the writer fails;
    the task retries or records it."""
    edit = _start_run(edit_id)
    if edit is None:
        return PassageEdit.objects.get(pk=edit_id)
    text = _current_text(edit)
    if text[edit.start : edit.end] != edit.original:
        passage_edit_fail(edit_id=edit_id, error="The text changed after the passage was chosen; ask again.")
        return PassageEdit.objects.get(pk=edit_id)
    engine = get_engine(edit.engine)
    sampling = sampling_from_settings(
        max_tokens=answer_tokens(edit.tool, engine.count_tokens(edit.original)), seed=edit.pk
    )
    budget = prompt_budget(context_tokens=settings.WRITER_CONTEXT_TOKENS, max_new_tokens=sampling.answer_tokens)
    meta = services.story_meta(edit.story)
    messages: list[dict[str, str]] = []
    used = 0
    for before, after in CONTEXT_CHARS:
        head, tail = context_around(text, edit.start, edit.end, before=before, after=after)
        messages = passage_messages(
            meta=meta, heading=_heading(edit), before=head, passage=edit.original, after=tail, tool=edit.tool,
            instruction=edit.instruction,
        )
        used = sum(engine.count_tokens(m["content"]) + 8 for m in messages)  # + the template's per message
        if used <= budget:
            break
    else:
        passage_edit_fail(
            edit_id=edit_id,
            error=f"The passage and the story's details take {used:,} tokens, more than the writer's context leaves "
            f"them ({budget:,}): select a shorter passage.",
        )
        return PassageEdit.objects.get(pk=edit_id)
    answer, warnings, result, model = "", [], "", ""
    for attempt in range(ATTEMPTS):
        # The base model: the adapters are trained to write whole chapters, not to edit a passage.
        generated = engine.generate(messages, n=1, sampling=replace(sampling, seed=edit.pk + attempt), adapter=None)
        model = generated.model
        completion = generated.completions[0] if generated.completions else None
        answer = _CONTROL.sub("", completion.text if completion else "")
        parsed = parse_output(answer)
        result = clean_result(parsed.text)
        if result:
            # The engine's warning speaks of a chapter: here it is the passage that was cut.
            cut_note = (completion.warning if completion else "").replace("The chapter", "The passage")
            warnings = [parsed.warning if not parsed.format_ok else "", cut_note]
            break
    if not result:
        quoted = " ".join(answer.split())[:ANSWER_QUOTE_CHARS]
        passage_edit_fail(
            edit_id=edit_id,
            error=f"The writer returned no passage ({ATTEMPTS} tries"
            + (f"; its answer: “{quoted}”" if quoted else ", an empty answer")
            + "). Ask again, perhaps with another tool or instruction.",
        )
        return PassageEdit.objects.get(pk=edit_id)
    cut = cut_loop(result, settings.WRITER_MAX_REPETITION)
    if cut:
        warnings.append("cut where it began to repeat itself")
        result = cut
    _finish(
        edit_id,
        status=PassageEdit.Status.SUCCEEDED,
        result=result,
        model_name=model[:128],
        error="; ".join(w for w in warnings if w)[:2000],
    )
    return PassageEdit.objects.get(pk=edit_id)


def passage_edit_note_retry(*, edit_id: int, error: str, delay_seconds: float) -> None:
    PassageEdit.objects.filter(pk=edit_id).update(
        status=PassageEdit.Status.QUEUED, error=f"{error} Trying again in {delay_seconds:.0f} s."
    )


def passage_edit_fail(*, edit_id: int, error: str) -> None:
    """Record a failure with its reason (a finished edit stays as it is)."""
    _finish(edit_id, status=PassageEdit.Status.FAILED, error=error or "The writer failed for an unknown reason.")


def passage_edit_requeue_dead_run(edit_id: int) -> str | None:
    """For the recovery sweep (mesu_web.jobs.recovery), when it is registered: a `running` edit whose
    worker died is failed with the reason (the author asks again with one click)."""
    if not PassageEdit.objects.filter(pk=edit_id, status=PassageEdit.Status.RUNNING).exists():
        return None
    passage_edit_fail(edit_id=edit_id, error="The worker writing the passage stopped; ask again.")
    return "closed"


def passage_edit_refresh(*, edit: PassageEdit) -> PassageEdit:
    """The edit as a page shows it: one whose worker died (running, its run lock free) or whose message was
    lost (queued for STALE_QUEUED) is failed with the reason first."""
    from writer.tasks import passage_edit_run_task

    if edit.status == PassageEdit.Status.RUNNING:
        with run_lock(passage_edit_run_task.name, edit.pk) as free:
            if free:
                passage_edit_fail(edit_id=edit.pk, error="The worker writing the passage stopped; ask again.")
    elif edit.status == PassageEdit.Status.QUEUED and timezone.now() - edit.created_at > STALE_QUEUED:
        passage_edit_fail(edit_id=edit.pk, error="No worker took the passage in time; ask again.")
    else:
        return edit
    edit.refresh_from_db()
    return edit


# --- The change, shown ------------------------------------------------------------------------------

# A word (with its apostrophes and hyphens) or one punctuation mark, with the white space after it: "soaked,"
# against "soaked" is one comma added, not a word changed.
_TOKEN = re.compile(r"[\w'’-]+\s*|[^\w\s]\s*|\s+")


def passage_diff(original: str, result: str) -> list[tuple[str, str]]:
    """The change word by word: [(op, text)], op "equal", "delete" (only in the original) or "insert" (only
    in the result), in reading order; texts are plain (the template escapes them). Words and punctuation
    marks are compared without the white space after them, and shown with it."""
    a, b = _TOKEN.findall(original), _TOKEN.findall(result)
    matcher = difflib.SequenceMatcher(None, [t.strip() for t in a], [t.strip() for t in b], autojunk=False)
    out: list[tuple[str, str]] = []

    def put(op: str, text: str) -> None:
        if not text:
            return
        if out and out[-1][0] == op:
            out[-1] = (op, out[-1][1] + text)
        else:
            out.append((op, text))

    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            put("equal", "".join(b[j1:j2]))
        else:
            put("delete", "".join(a[i1:i2]))
            put("insert", "".join(b[j1:j2]))
    return out


# --- Deciding ---------------------------------------------------------------------------------------


def _check_decidable(edit: PassageEdit, user: AbstractBaseUser) -> None:
    if edit.story.owner_id != user.pk:
        raise ApplicationError("Only the story's author can decide on a passage change.")
    if edit.decision != Decision.PENDING:
        raise ApplicationError(f"This change was {edit.get_decision_display().lower()} already.")


@dataclass(frozen=True)
class Accepted:
    """What an accepted change made: the version's number, of the option or the chapter."""

    version: int
    option: GenerationOption | None = None
    chapter: Chapter | None = None


def passage_edit_accept(*, edit: PassageEdit, user: AbstractBaseUser) -> Accepted:
    """Put the result in place of the original passage, as a new version. ApplicationError (and nothing
    changed) when the text around it changed since the passage was chosen, or the result may not go in."""
    with transaction.atomic():
        locked = PassageEdit.objects.select_for_update().select_related("story").get(pk=edit.pk)
        _check_decidable(locked, user)
        if locked.status != PassageEdit.Status.SUCCEEDED or not locked.result:
            raise ApplicationError("The writer has not written this passage yet; accept it once it is there.")
        option = chapter = None
        if locked.option_id:
            option = (
                GenerationOption.objects.select_for_update(of=("self",)).select_related("request").get(pk=locked.option_id)
            )
            if option.accepted_chapter_id:  # accepted as a chapter since: the change goes to the chapter
                chapter, option = option.accepted_chapter, None
        else:
            chapter = locked.chapter
        if chapter is not None:
            chapter = Chapter.objects.select_for_update().select_related("story").get(pk=chapter.pk)
        text = option.text if option is not None else chapter.text
        if text[locked.start : locked.end] != locked.original:
            raise ApplicationError(
                "The text changed since this passage was chosen, so the change no longer fits it; ask again."
            )
        after = text[: locked.start] + locked.result + text[locked.end :]
        if len(after) > settings.MESU_CHAPTER_MAX_CHARS:
            raise ApplicationError(
                f"With this change the text would have {len(after):,} characters; the limit is "
                f"{settings.MESU_CHAPTER_MAX_CHARS:,}."
            )
        if option is not None:
            refusal = option_tools_refusal(option, user)
            if refusal:
                raise ApplicationError(refusal)
        if option is not None and option.review_status == ReviewStatus.CHANGES:
            # A placement its brand asked to change: the revision must stay inside the placed passage and
            # name that brand alone; the option then waits for the brand's review again.
            revised = option_revise(option=option, user=user, text=after)
            version = revised.versions.order_by("-number").first()
            outcome = Accepted(version=version.number if version else 1, option=revised)
        elif option is not None:
            acceptance = option_acceptance(option=option, text=after)
            if acceptance.verdict != "plain":  # the writer named a brand: a plain option stays plain
                raise ApplicationError(
                    "The new passage names a brand, and a plain option carries none without its brand's review: "
                    f"discard it, or ask again. ({acceptance.message})"
                )
            option_versions_ensure(option=option)  # the text before the change is a version
            option.text = after
            option.save(update_fields=["text"])
            option.__dict__.pop("quality", None)  # the cached words and repeats were the earlier text's
            version = option_version_add(
                option=option, cause=VersionCause.PASSAGE, created_by=user, request=option.request,
                model_name=locked.model_name,
            )
            outcome = Accepted(version=version.number, option=option)
        else:
            chapter = services.chapter_update(
                chapter=chapter, text=after, title=chapter.title, version_cause=VersionCause.PASSAGE, user=user
            )
            number = ChapterVersion.objects.filter(chapter=chapter).aggregate(top=Max("number"))["top"] or 1
            outcome = Accepted(version=number, chapter=chapter)
        PassageEdit.objects.filter(pk=locked.pk).update(decision=Decision.ACCEPTED, decided_at=timezone.now())
    return outcome


def passage_edit_discard(*, edit: PassageEdit, user: AbstractBaseUser) -> PassageEdit:
    """Keep the original: the edit is marked discarded (a queued or running one too: its result is never
    offered)."""
    with transaction.atomic():
        locked = PassageEdit.objects.select_for_update().select_related("story").get(pk=edit.pk)
        _check_decidable(locked, user)
        locked.decision = Decision.DISCARDED
        locked.decided_at = timezone.now()
        locked.save(update_fields=["decision", "decided_at"])
    return locked
