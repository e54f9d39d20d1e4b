"""Writes. Every change to stories, chapters and generation requests goes through here."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group
from django.contrib.postgres.fields import ArrayField
from django.db import IntegrityError, transaction
from django.db.models import BigIntegerField, Case, F, Func, IntegerField, Value, When
from django.utils import timezone

from brands.matching import (
    OptionPlan,
    PlacementOutcome,
    RewritePrompt,
    brand_use_for_request,
    chapter_placement_sync,
    option_acceptance,
    option_back_to_review,
    option_placement,
    option_plans_for_request,
    place_in_drafts,
)
from brands.review import options_after_store
from mesu_web.errors import ApplicationError, EngineError
from mesu_web.slugs import private_slug
from writer import live, quotas, roles
from writer.bible import bible_selector
from writer.book_import import DetectedBook, check_chapter_count, split_book
from writer.engines import get_engine, resolve_adapter, sampling_from_settings
from writer.engines.base import Completion, Sampling, WriterEngine
from writer.models import (
    AUTHOR_NOTE_MAX_CHARS,
    MAX_OPTIONS,
    Chapter,
    GenerationOption,
    GenerationRequest,
    ReviewStatus,
    Story,
    VersionCause,
)
from writer.parsing import ParsedOutput, parse_output
from writer.preferences import author_preference_record
from writer.prompting import BuiltPrompt, ChapterText, StoryMeta, build_prompt, prompt_budget
from writer.quality import cut_loop, words_of
from writer.text_input import clean_text

if TYPE_CHECKING:
    from brands.models import Brand, Partner
from writer.versions import (
    chapter_version_accepted,
    chapter_version_add,
    chapter_versions_ensure,
    option_versions_first,
)

logger = logging.getLogger(__name__)

User = get_user_model()

STORY_FIELDS = (
    "title", "author_name", "summary", "genre", "tags", "characters", "setting", "intent_notes", "author_note",
)  # fmt: skip
PROGRESS_EVERY_SECONDS = 1.0  # at most one progress write per second while tokens stream in


# --- Users -----------------------------------------------------------------------------------------


def user_set_roles(*, user: AbstractBaseUser, role_names: Sequence[str]) -> None:
    unknown = set(role_names) - set(roles.GROUPS)
    if unknown:
        raise ApplicationError(f"Unknown role(s): {', '.join(sorted(unknown))}.")
    groups = [Group.objects.get_or_create(name=name)[0] for name in role_names]
    user.groups.set(groups)


@transaction.atomic
def user_signup(*, username: str, password: str, role: str, email: str = "") -> AbstractBaseUser:
    if role not in dict(roles.SIGNUP_ROLES):
        raise ApplicationError("Choose whether you sign up as an author or a reader.")
    user = User.objects.create_user(username=username, password=password, email=email)
    user_set_roles(user=user, role_names=[role])
    return user


# --- Stories and chapters --------------------------------------------------------------------------


def _story_slug(title: str) -> str:
    """The title's slug and a random suffix, drawn alike whether or not another author's (draft) story has
    that title: the address a user gets tells nothing of other users' stories (mesu_web.slugs.private_slug)."""
    return private_slug(title, taken=lambda slug: Story.objects.filter(slug=slug).exists(), fallback="story")


def _clean_tags(tags: Sequence[str] | str) -> list[str]:
    if isinstance(tags, str):
        tags = tags.split(",")
    seen: list[str] = []
    for tag in tags:
        tag = tag.strip().lower()[:40]
        if tag and tag not in seen:
            seen.append(tag)
    return seen[:20]


def author_note_clean(text: str) -> str:
    """The author's note as it is kept: cleaned like chapter text (line breaks normalised, control
    characters and trailing spaces removed; HTML stays text, the pages escape it), "" for an empty one.
    ApplicationError when it is longer than AUTHOR_NOTE_MAX_CHARS."""
    if not text.strip():
        return ""
    try:
        text = clean_text(text)
    except ApplicationError:  # nothing but control characters and spaces
        return ""
    if len(text) > AUTHOR_NOTE_MAX_CHARS:
        raise ApplicationError(
            f"Keep the author's note to {AUTHOR_NOTE_MAX_CHARS:,} characters (it has {len(text):,}): "
            "a few lines that steer the next chapters.",
            {"max_chars": AUTHOR_NOTE_MAX_CHARS, "chars": len(text)},
        )
    return text


def story_create(*, owner: AbstractBaseUser, title: str, **metadata: object) -> Story:
    unknown = set(metadata) - set(STORY_FIELDS)
    if unknown:
        raise ApplicationError(f"Unknown story field(s): {', '.join(sorted(unknown))}.")
    title = title.strip()
    if not title:
        raise ApplicationError("A story needs a title.")
    metadata["tags"] = _clean_tags(metadata.get("tags", []))  # type: ignore[arg-type]
    if "author_note" in metadata:
        metadata["author_note"] = author_note_clean(str(metadata["author_note"]))
    for _ in range(3):  # two authors may pick the same title at the same moment
        try:
            with transaction.atomic():
                return Story.objects.create(owner=owner, title=title, slug=_story_slug(title), **metadata)
        except IntegrityError:
            continue
    raise ApplicationError("Could not give the story a unique address; try another title.")


def story_update(*, story: Story, **fields: object) -> Story:
    unknown = set(fields) - set(STORY_FIELDS) - {"is_published"}
    if unknown:
        raise ApplicationError(f"Unknown story field(s): {', '.join(sorted(unknown))}.")
    if "title" in fields and not str(fields["title"]).strip():
        raise ApplicationError("A story needs a title.")
    if "tags" in fields:
        fields["tags"] = _clean_tags(fields["tags"])  # type: ignore[arg-type]
    if "author_note" in fields:
        fields["author_note"] = author_note_clean(str(fields["author_note"]))
    for name, value in fields.items():
        setattr(story, name, value)
    story.save()
    return story


def story_set_published(*, story: Story, published: bool) -> Story:
    story.is_published = published
    story.save(update_fields=["is_published", "updated_at"])
    return story


def _touch(story: Story) -> None:
    Story.objects.filter(pk=story.pk).update(updated_at=timezone.now())


def _check_room_for_chapters(*, have: int, adding: int) -> None:
    """ApplicationError, before any row is written, when `adding` chapters would take a story that has
    `have` past MESU_MAX_CHAPTERS_PER_STORY."""
    limit = settings.MESU_MAX_CHAPTERS_PER_STORY
    if have + adding > limit:
        raise ApplicationError(
            f"A story holds at most {limit:,} chapters and this one has {have:,}: "
            "start a new story (or a branch) for what comes next.",
            {"max_chapters": limit, "chapters": have},
        )


@transaction.atomic
def chapter_add(
    *, story: Story, text: str, title: str = "", source: str = Chapter.Source.PASTED, commercial_note: str = ""
) -> Chapter:
    text = clean_text(text)
    if len(text) > settings.MESU_CHAPTER_MAX_CHARS:
        raise ApplicationError(
            f"The chapter has {len(text):,} characters; the limit is {settings.MESU_CHAPTER_MAX_CHARS:,}."
        )
    Story.objects.select_for_update().get(pk=story.pk)  # serialise numbering per story
    # Numbers are 1..N (every write below keeps them so): the last number is the count.
    last = (
        Chapter.objects.filter(story=story).order_by("-number").values_list("number", flat=True).first() or 0
    )
    _check_room_for_chapters(have=last, adding=1)
    chapter = Chapter.objects.create(
        story=story,
        number=last + 1,
        title=title.strip()[:200],
        text=text,
        source=source,
        commercial_note=" ".join(commercial_note.split())[:200],
    )
    chapter_version_add(chapter=chapter, created_by=story.owner)  # its version 1 (writer.versions)
    _touch(story)
    return chapter


def chapter_update(
    *,
    chapter: Chapter,
    text: str,
    title: str = "",
    version_cause: str = VersionCause.EDITED,
    user: AbstractBaseUser | None = None,
    commercial_note: str | None = None,
) -> Chapter:
    """Save the chapter's new text and title: a new version of it (`version_cause`, by `user`, the story's
    author when None) when they changed (writer.versions). `commercial_note`: the author's declaration of
    their own commercial content (None keeps it as it is)."""
    text = clean_text(text)
    if len(text) > settings.MESU_CHAPTER_MAX_CHARS:
        raise ApplicationError(
            f"The chapter has {len(text):,} characters; the limit is {settings.MESU_CHAPTER_MAX_CHARS:,}."
        )
    chapter_versions_ensure(chapter=chapter)  # the text before this edit is kept as a version
    chapter.text, chapter.title = text, title.strip()[:200]
    fields = ["text", "title", "updated_at"]
    if commercial_note is not None:
        chapter.commercial_note = " ".join(commercial_note.split())[:200]
        fields.append("commercial_note")
    chapter.save(update_fields=fields)
    chapter_version_add(chapter=chapter, created_by=user or chapter.story.owner, cause=version_cause)
    _touch(chapter.story)
    # A generated chapter that carries a placement: a changed approved passage goes back to the brand.
    chapter_placement_sync(chapter=chapter)
    return chapter


# Renumbering is one UPDATE whatever the story's length (a delete, move or reorder of a 2,000-chapter story
# is as many statements as of a 3-chapter one): the unique (story, number) constraint is deferred to the
# commit, so the numbers may pass through each other inside the statement.


@transaction.atomic
def chapters_reorder(*, story: Story, chapter_ids: Sequence[int]) -> None:
    """Give the story's chapters the order of `chapter_ids` (every chapter exactly once)."""
    Story.objects.select_for_update().get(pk=story.pk)
    chapter_ids = list(chapter_ids)
    current = set(Chapter.objects.filter(story=story).values_list("pk", flat=True))
    if len(chapter_ids) != len(current) or set(chapter_ids) != current:
        raise ApplicationError("The new order must list every chapter of the story exactly once.")
    # A chapter's new number is its 1-based place in the list: array_position(ids, id), in one statement.
    position = Func(
        Value(chapter_ids, output_field=ArrayField(BigIntegerField())),
        F("pk"),
        function="array_position",
        output_field=IntegerField(),
    )
    Chapter.objects.filter(story=story).exclude(number=position).update(number=position)
    _touch(story)


@transaction.atomic
def chapter_move(*, chapter: Chapter, direction: str) -> None:
    """Swap the chapter with the one before ("up") or after it ("down"): one UPDATE of the two rows."""
    if direction not in ("up", "down"):
        raise ApplicationError("A chapter moves up or down.")
    story = Story.objects.select_for_update().get(pk=chapter.story_id)
    number = Chapter.objects.filter(pk=chapter.pk).values_list("number", flat=True).first()  # not a stale one
    if number is None:
        raise ApplicationError("This chapter is no longer in the story.")
    other = number - 1 if direction == "up" else number + 1
    swap = Case(When(number=number, then=Value(other)), default=Value(number))
    # The first chapter up or the last one down has nothing to swap with. The last one's lone row moves:
    # the error leaves the atomic block, which undoes that.
    if other < 1 or Chapter.objects.filter(story=story, number__in=(number, other)).update(number=swap) != 2:
        raise ApplicationError(f"Chapter {number} cannot move {direction}.")
    _touch(story)


@transaction.atomic
def chapter_delete(*, chapter: Chapter) -> None:
    """Delete the chapter; the chapters after it move up by one (one UPDATE)."""
    story = Story.objects.select_for_update().get(pk=chapter.story_id)
    number = Chapter.objects.filter(pk=chapter.pk).values_list("number", flat=True).first()  # not a stale one
    if number is None:  # deleted meanwhile (a second click): nothing to do
        return
    chapter.delete()
    Chapter.objects.filter(story=story, number__gt=number).update(number=F("number") - 1)
    _touch(story)


@transaction.atomic
def book_import(
    *,
    owner: AbstractBaseUser,
    title: str,
    text: str = "",
    book: DetectedBook | None = None,
    author_name: str = "",
    **metadata: object,
) -> Story:
    """A story from one book: `text` (plain text or markdown) split at its chapter headings, or a book
    file already read by `writer.book_import.read_book_file` (.txt, .md or .epub)."""
    if book is None:
        book = split_book(clean_text(text))
    if not book.chapters:
        raise ApplicationError("No chapter text was found in the book.")
    # Refused whole, before the story exists: nothing is half-imported.
    check_chapter_count(
        book, max_chapters=min(settings.MESU_MAX_CHAPTERS_PER_IMPORT, settings.MESU_MAX_CHAPTERS_PER_STORY)
    )
    # A text book's front matter, or what an EPUB says it is about.
    front_matter = book.front_matter or book.description
    if not metadata.get("summary") and front_matter:
        metadata["summary"] = front_matter[:2000]
    story = story_create(owner=owner, title=title, author_name=author_name, **metadata)
    Chapter.objects.bulk_create(
        Chapter(story=story, number=i, title=ch.title[:200], text=ch.text, source=Chapter.Source.IMPORTED)
        for i, ch in enumerate(book.chapters, start=1)
    )
    return story


# --- Generation ------------------------------------------------------------------------------------


def story_meta(story: Story) -> StoryMeta:
    return StoryMeta(
        title=story.title,
        author_name=story.author_name,
        summary=story.summary,
        genre=story.genre,
        tags=tuple(story.tags),
        characters=story.characters,
        setting=story.setting,
        intent_notes=story.intent_notes,
    )


def generation_request_create(
    *,
    story: Story,
    user: AbstractBaseUser,
    kind: str = GenerationRequest.Kind.AUTHOR,
    n: int | None = None,
    preference: str = "",
    engine: str | None = None,
    adapter: str | None = None,
    max_new_tokens: int | None = None,
    use_brands: bool | None = None,
    enqueue: bool = True,
    partner: Partner | None = None,
    requested_brand: Brand | None = None,
    client_address: str | None = None,
) -> GenerationRequest:
    """Record a request and queue it. `use_brands`: None follows the story's opt-in and the reader's
    switch; True asks for placements (still only where both allow them); False never places brands.
    `client_address`: where the ask came from (the view's `client_ip`; kept only when it is an IP
    address), for the per-address quota. Over a quota (writer/quotas.py): QuotaExceeded, nothing made."""
    if kind == GenerationRequest.Kind.AUTHOR:
        if story.owner_id != user.pk:
            raise ApplicationError("Only the story's author can ask for the next chapter of the story.")
        n = settings.WRITER_DEFAULT_OPTIONS if n is None else n
    elif kind == GenerationRequest.Kind.READER:
        if not story.is_published and story.owner_id != user.pk:
            raise ApplicationError("This story is not published.")
        n = settings.READER_DEFAULT_OPTIONS if n is None else n
    else:
        raise ApplicationError(f"Unknown request kind {kind!r}.")
    if not 1 <= n <= MAX_OPTIONS:
        raise ApplicationError(f"Ask for between 1 and {MAX_OPTIONS} options.")
    preference = preference.strip()
    if len(preference) > 1000:
        raise ApplicationError("Keep the preference under 1,000 characters.")
    engine_name = engine or settings.WRITER_ENGINE
    get_engine(engine_name)  # fails now, with the valid names, on a typo
    if adapter is None:
        from training.selectors import active_adapter_name

        adapter = active_adapter_name()
    adapter_name = adapter
    resolve_adapter(adapter_name)
    max_new = max_new_tokens or settings.WRITER_MAX_NEW_TOKENS
    if not 8 <= max_new <= settings.WRITER_CONTEXT_TOKENS // 2:
        raise ApplicationError(
            f"New tokens per option must be between 8 and {settings.WRITER_CONTEXT_TOKENS // 2}."
        )

    reader = user if kind == GenerationRequest.Kind.READER else None
    places_brands, brand_note = brand_use_for_request(story=story, reader=reader, use_brands=use_brands)
    address = quotas.valid_address(client_address)
    with transaction.atomic():  # the quota's lock is held until the row is committed
        quotas.quota_check(user=user, own_story=story.owner_id == user.pk, client_address=address)
        request = _generation_request_row(
            story=story, user=user, kind=kind, n=n, preference=preference, engine_name=engine_name,
            adapter_name=adapter_name, max_new=max_new, places_brands=places_brands, brand_note=brand_note,
            partner=partner, requested_brand=requested_brand, address=address,
        )
        if enqueue:
            generation_request_enqueue(request=request)
    return request


def _generation_request_row(
    *, story: Story, user: AbstractBaseUser, kind: str, n: int, preference: str, engine_name: str,
    adapter_name: str, max_new: int, places_brands: bool, brand_note: str, partner: Partner | None,
    requested_brand: Brand | None, address: str | None,
) -> GenerationRequest:
    from writer.selectors import chapter_count  # local: selectors import nothing from services

    return GenerationRequest.objects.create(
        story=story,
        requested_by=user,
        kind=kind,
        n=n,
        preference=preference,
        engine=engine_name,
        adapter=adapter_name,
        max_new_tokens=max_new,
        next_number=chapter_count(story=story) + 1,
        stage="Waiting for a writer",
        use_brands=places_brands,
        brand_note=brand_note,
        partner=partner,
        requested_brand=requested_brand,
        client_address=address,
    )


def generation_request_enqueue(*, request: GenerationRequest) -> None:
    """Queue the request's run once its row is committed, behind the first requests of users with fewer
    waiting (`quotas.queue_priority`: fair scheduling)."""
    from writer.tasks import generation_request_run_task

    request_id = request.pk
    priority = quotas.queue_priority(user_id=request.requested_by_id, exclude_pk=request_id)
    transaction.on_commit(
        lambda: generation_request_run_task.apply_async((request_id,), priority=priority), robust=True
    )


def _set_progress(request_id: int, **fields: object) -> None:
    GenerationRequest.objects.filter(pk=request_id).update(**fields)


def _start(request_id: int) -> GenerationRequest | None:
    """Mark the request running, or return None when it needs no run (done already, or failed)."""
    with transaction.atomic():
        request = GenerationRequest.objects.select_for_update().select_related("story").get(pk=request_id)
        if request.status in (GenerationRequest.Status.SUCCEEDED, GenerationRequest.Status.FAILED):
            return None
        if request.options.exists():  # a run finished but died before it said so
            request.status = GenerationRequest.Status.SUCCEEDED
            request.finished_at = request.finished_at or timezone.now()
            request.save(update_fields=["status", "finished_at"])
            return None
        request.status = GenerationRequest.Status.RUNNING
        request.attempts = F("attempts") + 1
        request.started_at = request.started_at or timezone.now()
        request.stage = "Building the prompt"
        request.progress_tokens = 0
        request.error = ""
        request.save(update_fields=["status", "attempts", "started_at", "stage", "progress_tokens", "error"])
    request.refresh_from_db()
    return request


# A chapter's words per token of its budget below which it is written again (with WRITER_MIN_CHAPTER_WORDS
# the cap): a request for a short chapter is not asked for more than it can hold.
MIN_WORDS_PER_CHAPTER_TOKEN = 0.25


# A chapter of a smaller budget is never written again: one cut to nothing by its limit is the budget's
# doing, and a second try would only double the wait (a 16-token request in the browser journeys).
MIN_CHAPTER_TOKENS_TO_RETRY = 128


def chapter_min_words(max_tokens: int) -> int:
    """The fewest words a chapter of `max_tokens` tokens may have before it is written again (0: never)."""
    if max_tokens < MIN_CHAPTER_TOKENS_TO_RETRY:
        return 0
    return min(settings.WRITER_MIN_CHAPTER_WORDS, int(max_tokens * MIN_WORDS_PER_CHAPTER_TOKEN))


def without_loop(completion: Completion, answer: ParsedOutput) -> tuple[Completion, ParsedOutput]:
    """A chapter that repeats itself beyond WRITER_MAX_REPETITION, cut after its last sentence before the
    loop (writer.quality.cut_loop); the completion's warning says so. Others come back as they are."""
    cut = cut_loop(answer.text, settings.WRITER_MAX_REPETITION)
    if cut is None:
        return completion, answer
    kept, written = len(words_of(cut)), len(words_of(answer.text))
    note = f"cut where it began to repeat itself ({kept} of {written} words kept)"
    return (
        replace(completion, warning="; ".join(w for w in (completion.warning, note) if w)),
        replace(answer, text=cut),
    )


def generation_request_run(*, request_id: int) -> GenerationRequest:
    """Build the prompt, call the writer engine once for n options, parse and store them.

    Idempotent: a request that already has its options is returned as it is. Raises ApplicationError
    (EngineError with `retryable`) on failure; the caller decides between a retry and
    `generation_request_fail`.
    """
    request = _start(request_id)
    if request is None:
        return GenerationRequest.objects.get(pk=request_id)
    story = request.story
    engine = get_engine(request.engine)
    adapter = resolve_adapter(request.adapter)

    place_after = settings.BRAND_PLACEMENT_METHOD == "rewrite"
    if request.use_brands:
        matched = option_plans_for_request(
            story=story,
            preference=request.preference,
            n=request.n,
            with_brief=not place_after,
            reader=request.requested_by if request.kind == GenerationRequest.Kind.READER else None,
            only_brand_id=request.requested_brand_id,  # a partner's request: its brand only
        )
        _set_progress(request_id, brand_note=matched.note)
        plans = matched.plans
    else:
        plans = [OptionPlan()] * request.n
    # The decoding of the WRITER_* settings; the prompt leaves room for the whole answer (reasoning and chapter).
    sampling = sampling_from_settings(max_tokens=request.max_new_tokens)
    prompt_for = request_prompt_builder(request=request, engine=engine, sampling=sampling)

    # Options that share a prompt come from one engine call (n=): every option when brands are placed
    # after writing; with briefs in the prompt, each brief is its own prompt.
    first_brief = plans[0].brief
    first = prompt_for(plans[0])
    _set_progress(
        request_id,
        prompt_tokens=first.report.used_tokens,
        prompt_report={**first.report.to_dict(), "summary": first.report.summary()},
        stage=f"Writing {request.n} option{'s' if request.n > 1 else ''}",
    )

    expected_tokens = request.n * (sampling.reasoning_tokens + sampling.max_tokens)
    done_before = [0]  # tokens of the groups already written
    last_write = [0.0]

    def on_progress(tokens: int, texts: Mapping[int, str] | None = None) -> None:
        if texts is not None:  # option index -> its answer so far: the page's live text (writer.live)
            live.publish(request_id=request_id, attempt=request.attempts, texts=texts)
        now = time.monotonic()
        if now - last_write[0] >= PROGRESS_EVERY_SECONDS:
            last_write[0] = now
            total = min(done_before[0] + tokens, expected_tokens)
            _set_progress(
                request_id, progress_tokens=total, stage=f"Writing: {total} of up to {expected_tokens} tokens"
            )

    model_name = [""]

    def written(tokens: int, model: str) -> None:
        done_before[0] += tokens
        model_name[0] = model

    rows = options_write(
        request=request,
        plans=plans,
        engine=engine,
        sampling=sampling,
        adapter=adapter,
        prompt_for=lambda plan: first if plan.brief == first_brief else prompt_for(plan),
        on_progress=on_progress,
        on_written=written,
        note_stage=lambda stage: _set_progress(request_id, stage=stage),
        place_after=place_after,
    )

    with transaction.atomic():
        locked = GenerationRequest.objects.select_for_update().get(pk=request_id)
        if locked.options.exists():  # another run of the same task got here first
            return locked
        GenerationOption.objects.bulk_create(rows)
        option_versions_first(request=locked, model_name=model_name[0])  # each text is its version 1
        options_after_store(options=rows)  # policy findings, a brand's auto-approve rules (brands.review)
        locked.status = GenerationRequest.Status.SUCCEEDED
        locked.stage = "Done"
        locked.progress_tokens = done_before[0]
        locked.model_name = model_name[0][:128]
        locked.finished_at = timezone.now()
        locked.save(update_fields=["status", "stage", "progress_tokens", "model_name", "finished_at"])
    live.clear(request_id=request_id)
    return locked


def request_prompt_builder(
    *, request: GenerationRequest, engine: WriterEngine, sampling: Sampling
) -> Callable[[OptionPlan], BuiltPrompt]:
    """How `request`'s prompt is built for one option's plan: chapter 0 and the story's chapters before the
    request's chapter, the reader's wish, the plan's brand brief, the story bible and the author's note
    (as they are when it is called), within the budget that leaves room for the whole answer. A swipe
    (writer.swipes) rebuilds its option's prompt with it."""
    story = request.story
    chapters = [
        ChapterText(number=c.number, title=c.title, text=c.text)
        for c in Chapter.objects.filter(story=story, number__lt=request.next_number).order_by("number")
    ]
    budget = prompt_budget(
        context_tokens=settings.WRITER_CONTEXT_TOKENS, max_new_tokens=sampling.answer_tokens
    )

    # The story bible: the accepted entries in force for this chapter that the chapters in the prompt
    # mention, within their share of the budget (writer.bible); None when the bible has none in force.
    bible = bible_selector(story=story, next_number=request.next_number, count_tokens=engine.count_tokens)

    def prompt_for(plan: OptionPlan) -> BuiltPrompt:
        return build_prompt(
            meta=story_meta(story),
            chapters=chapters,
            count_tokens=engine.count_tokens,
            budget_tokens=budget,
            preference=request.preference,
            brand_brief=plan.brief,
            next_number=request.next_number,
            bible=bible,
            author_note=story.author_note,  # the story's note as it is when the request runs
        )

    return prompt_for


def options_write(
    *,
    request: GenerationRequest,
    plans: Sequence[OptionPlan],
    engine: WriterEngine,
    sampling: Sampling,
    adapter: object,
    prompt_for: Callable[[OptionPlan], BuiltPrompt],
    on_progress: Callable[..., None] | None,
    on_written: Callable[[int, str], None],
    note_stage: Callable[[str], None],
    place_after: bool,
    indices: Sequence[int] | None = None,
) -> list[GenerationOption]:
    """Write `plans` (one option each), parse the answers and place their brands; the options as they are
    stored, unsaved, with `indices` (default 0, 1, ...). Both a request's run and a swipe of one of its
    options (writer.swipes) write through here. `on_written(tokens, model)` after each engine call;
    `note_stage(text)` when a stage begins (a short option written again, brands placed)."""
    plans = list(plans)
    indices = list(range(len(plans))) if indices is None else list(indices)

    def write(plans_to_write: list[OptionPlan], at: list[int] | None = None) -> list[Completion]:
        """One engine call per prompt (options with the same brief share one, n=), in `plans_to_write`'s order
        (`at`: their positions in `plans`, default all)."""
        at = list(range(len(plans_to_write))) if at is None else at
        by_brief: dict[str, list[int]] = {}
        for position, plan in enumerate(plans_to_write):
            by_brief.setdefault(plan.brief, []).append(position)
        completions: list[Completion | None] = [None] * len(plans_to_write)
        for positions in by_brief.values():
            plan = plans_to_write[positions[0]]
            built = prompt_for(plan)
            progress = live.options_progress(on_progress, [indices[at[p]] for p in positions])
            result = engine.generate(
                built.messages, n=len(positions), sampling=sampling, adapter=adapter, on_progress=progress
            )
            if len(result.completions) != len(positions):
                raise EngineError(
                    f"The writer returned {len(result.completions)} options instead of {len(positions)}.",
                    retryable=True,
                )
            for position, completion in zip(positions, result.completions, strict=True):
                completions[position] = completion
            on_written(sum(c.tokens for c in result.completions), result.model)
        return completions  # type: ignore[return-value]  (every position is filled above)

    completions = write(plans)
    answers = [parse_output(completion.text) for completion in completions]
    for i, (completion, answer) in enumerate(zip(completions, answers, strict=True)):
        completions[i], answers[i] = without_loop(completion, answer)
    # A chapter that came out nearly empty (the writer ended at once, or wrote a line of boilerplate) is
    # written again, once: the author asked for a chapter. The longer of the two is kept.
    min_words = chapter_min_words(sampling.max_tokens)
    short = [i for i, answer in enumerate(answers) if len(words_of(answer.text)) < min_words]
    if short:
        note_stage(f"Writing {len(short)} short option{'s' if len(short) > 1 else ''} again")
        again = write([plans[i] for i in short], short)
        for i, completion in zip(short, again, strict=True):
            completion, answer = without_loop(completion, parse_output(completion.text))
            before, after = len(words_of(answers[i].text)), len(words_of(answer.text))
            if after > before:
                completions[i], answers[i] = completion, answer
            note = (
                f"written twice: the first chapter had {before} words"
                if after > before
                else (f"the chapter has {before} words, the writer's longer of two tries")
            )
            completions[i] = replace(
                completions[i], warning="; ".join(w for w in (completions[i].warning, note) if w)
            )
    written = list(zip(plans, completions, strict=True))
    placed: dict[int, PlacementOutcome] = {}
    if place_after:
        drafts = [(plan, answer.text) for (plan, _), answer in zip(written, answers, strict=True)]
        placed = _place_brands(note_stage, drafts, engine=engine, sampling=sampling)

    return [
        _option_row(request, index, plan, completion, answers[position], placed.get(position))
        for position, (index, (plan, completion)) in enumerate(zip(indices, written, strict=True))
    ]


def _place_brands(
    note_stage: Callable[[str], None],
    drafts: list[tuple[OptionPlan, str]],
    *,
    engine: WriterEngine,
    sampling: Sampling,
) -> dict[int, PlacementOutcome]:
    """Write first, then place: each branded option's chapter, written without the brand, gets its asset
    in the passage where it fits best (brands.matching.place_in_drafts), or stays as written with the
    reason. Option index -> what was done."""

    # One phase, no reasoning: a sentence or a short passage, as the prompt says (brands.insertion). The
    # base model (no adapter) follows the editor's instructions; the adapters are trained on the chapter
    # format.
    def rewrite(prompt: RewritePrompt) -> list[str]:
        rewrite_sampling = replace(
            sampling,
            max_tokens=prompt.max_tokens,
            reasoning_tokens=0,
            prefill=prompt.prefill,
            seed=None,
            stop=prompt.stop,
            stop_after=prompt.stop_after,
            one_line=prompt.one_line,
        )
        result = engine.generate(
            prompt.messages, n=settings.BRAND_PLACEMENT_CANDIDATES, sampling=rewrite_sampling, adapter=None
        )
        return [completion.text for completion in result.completions]

    def rewrite_all(prompts: list[RewritePrompt]) -> list[list[str]]:
        # A server engine writes the options' rewrites together (concurrent calls, batched by vLLM), so a
        # branded request costs about one short call more than a plain one; the in-process engine, one
        # after another (it computes on this process's cores either way).
        if engine.name != "vllm" or len(prompts) < 2:
            return [rewrite(prompt) for prompt in prompts]
        with ThreadPoolExecutor(max_workers=len(prompts), thread_name_prefix="rewrite") as pool:
            return list(pool.map(rewrite, prompts))

    branded = [(index, plan, draft) for index, (plan, draft) in enumerate(drafts) if plan.brand_id]
    if not branded:
        return {}
    note_stage(f"Placing the brand in {len(branded)} option{'s' if len(branded) > 1 else ''}")
    outcomes = place_in_drafts(
        [(draft, plan) for _, plan, draft in branded],
        rewrite_all=rewrite_all,
    )
    return {index: outcome for (index, _, _), outcome in zip(branded, outcomes, strict=True)}


def _option_row(
    request: GenerationRequest,
    index: int,
    plan: OptionPlan,
    completion: Completion,
    parsed: ParsedOutput,
    outcome: PlacementOutcome | None = None,
) -> GenerationOption:
    """One option as stored: `parsed` is `completion.text` parsed. `outcome`: write-then-place's result for
    a branded option (its text is the chapter with the brand placed, or the draft with the reason it could
    not be)."""
    if outcome is not None:
        parsed = replace(parsed, text=outcome.text)
    # Every name of every brand, in the chapter and in the reasoning, decides whether the option waits for
    # a brand's review (whichever brand it names, planned or not) or is held back (brands.matching).
    placement = option_placement(request=request, plan=plan, text=parsed.text, reasoning=parsed.reasoning)
    return GenerationOption(
        request=request,
        index=index,
        raw_output=completion.text,
        reasoning=parsed.reasoning,
        text=parsed.text,
        format_ok=parsed.format_ok,
        # The parser's note (a broken format) and the engine's (a chapter shortened at its last sentence).
        warning="; ".join(w for w in (parsed.warning, completion.warning) if w)[:300],
        tokens=completion.tokens,
        finish_reason=completion.finish_reason[:32],
        brand_id=placement.brand_id,
        asset_id=placement.asset_id,
        # The plan's campaign pays only for the plan's brand (an option may name another brand instead).
        campaign_id=plan.campaign_id
        if placement.brand_id is not None and placement.brand_id == plan.brand_id
        else None,
        placement_hint=plan.hint[:200],
        mentions=placement.mentions,
        reasoning_mentions=placement.reasoning_mentions,
        placement_found=placement.placement_found,
        placement_note=" ".join(n for n in (outcome.note if outcome else "", placement.note) if n)[:300],
        review_status=placement.review_status,
        draft=outcome.draft if outcome is not None else "",
        placed_passage=list(outcome.passage) if outcome is not None and outcome.passage else [],
        placement_similarity=outcome.similarity if outcome is not None else {},
    )


def generation_request_note_retry(*, request_id: int, error: str, delay_seconds: float) -> None:
    _set_progress(
        request_id,
        status=GenerationRequest.Status.QUEUED,
        stage=f"Will try again in {delay_seconds:.0f} s",
        error=error,
    )


def generation_request_fail(*, request_id: int, error: str) -> None:
    """Record a failure with its reason. Options already stored (a finished run) are never undone."""
    with transaction.atomic():
        request = GenerationRequest.objects.select_for_update().get(pk=request_id)
        if request.status == GenerationRequest.Status.SUCCEEDED:
            return
        request.status = GenerationRequest.Status.FAILED
        request.stage = "Failed"
        request.error = error or "The writer failed for an unknown reason."
        request.finished_at = timezone.now()
        request.save(update_fields=["status", "stage", "error", "finished_at"])
    live.clear(request_id=request_id)


def generation_request_retry(*, request: GenerationRequest, user: AbstractBaseUser) -> GenerationRequest:
    if request.status != GenerationRequest.Status.FAILED:
        raise ApplicationError("Only a failed request can be tried again.")
    if user.pk != request.requested_by_id:
        raise ApplicationError("Only who asked for this chapter can try again.")
    with transaction.atomic():  # queued again: one more at a time (writer/quotas.py), no new row
        quotas.concurrent_check(user=user, own_story=request.story.owner_id == user.pk)
        GenerationRequest.objects.filter(pk=request.pk).update(
            status=GenerationRequest.Status.QUEUED, stage="Waiting for a writer", error="", finished_at=None
        )
        generation_request_enqueue(request=request)
    request.refresh_from_db()
    return request


def option_accept(
    *, option: GenerationOption, user: AbstractBaseUser, text: str | None = None, title: str = ""
) -> Chapter:
    """The author takes an option (optionally edited) as the story's next chapter.

    Brand placements (`brands.matching.option_acceptance`): an approved option keeps its label only while
    the passage its brand approved (the sentences naming it) is unchanged and no other brand is named;
    the author may edit the rest. An edit that changes that passage, or that names the option's brand in
    an option that was not approved, makes no chapter: the edited text goes back to the brand's review
    (saved), then ApplicationError tells the author. Text naming another brand is refused."""
    with transaction.atomic():
        request = (
            GenerationRequest.objects.select_for_update().select_related("story").get(pk=option.request_id)
        )
        story = request.story
        if story.owner_id != user.pk:
            raise ApplicationError("Only the story's author can accept a chapter into the story.")
        if request.kind != GenerationRequest.Kind.AUTHOR:
            raise ApplicationError("A reader's personalised chapter stays theirs; it cannot join the story.")
        if request.status != GenerationRequest.Status.SUCCEEDED:
            raise ApplicationError("This request has not finished.")
        if GenerationOption.objects.filter(request=request, accepted_chapter__isnull=False).exists():
            raise ApplicationError("An option of this request was already accepted.")
        # The row as it is now, locked: a review may have decided since the page was drawn.
        locked = GenerationOption.objects.select_for_update(of=("self",)).get(pk=option.pk)
        if not locked.visible_to_requester:  # a placement its brand has not (yet) let through
            raise ApplicationError(
                "This option carries a brand placement that its brand has not approved; choose another "
                "option or wait for the brand's review."
            )
        body = clean_text(locked.text if text is None else text)
        acceptance = option_acceptance(option=locked, text=body)
        if acceptance.verdict == "refused":
            raise ApplicationError(acceptance.message)
        if acceptance.verdict != "review":
            chapter = chapter_add(story=story, text=body, title=title, source=Chapter.Source.GENERATED)
            # updated_at == created_at marks "not edited since accepted": the chapter page then trusts the
            # acceptance's label without reading the option again (brands.matching.chapter_placement_check).
            Chapter.objects.filter(pk=chapter.pk).update(updated_at=F("created_at"))
            chapter.updated_at = chapter.created_at
            chapter_version_accepted(chapter=chapter, option=locked, user=user)  # version 1 names its option
            fields: dict[str, object] = {"accepted_chapter": chapter}
            if acceptance.verdict == "plain" and locked.review_status == ReviewStatus.APPROVED:
                # The author took the brand out: no label over a chapter that names no brand.
                fields |= {
                    "review_status": ReviewStatus.NOT_SENT,
                    "placement_note": "Accepted without its placement: the author took the brand out.",
                }
            GenerationOption.objects.filter(pk=option.pk).update(**fields)
            author_preference_record(
                request=request, chosen=locked, user=user
            )  # the accepted over the others
            option.accepted_chapter = chapter
            return chapter
        option_back_to_review(
            option=locked,
            text=body,
            mentions=acceptance.mentions,
            note="Edited by the author before acceptance.",
        )
    raise ApplicationError(acceptance.message)


# --- Recovery (WriterConfig.ready() registers it; mesu_web/jobs/recovery.py sweeps it) --------------


def generation_request_requeue_dead_run(request_id: int) -> str | None:
    """A `running` request whose worker died (its run lock is free): back to `queued`, to be enqueued
    again, or `failed` once it has been started RECOVERY_MAX_ATTEMPTS times: a request whose run kills its
    worker each time (out of memory) must not loop for ever. A request written twice still gets one set
    of options (generation_request_run)."""
    request = GenerationRequest.objects.select_for_update().filter(pk=request_id).first()
    if request is None or request.status != GenerationRequest.Status.RUNNING:
        return None
    if request.attempts >= settings.RECOVERY_MAX_ATTEMPTS:
        generation_request_fail(
            request_id=request_id,
            error=(
                f"The writer stopped while writing this chapter (its worker was killed or ran out of memory), "
                f"{request.attempts} attempts in all; it will not try again on its own."
            ),
        )
        return "closed"
    request.status = GenerationRequest.Status.QUEUED
    request.stage = "Waiting for a writer: the one writing it stopped"
    request.progress_tokens = 0
    request.save(update_fields=["status", "stage", "progress_tokens"])
    return "requeued"
