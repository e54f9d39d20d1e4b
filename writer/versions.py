"""Versions of options and chapters: every text each has had, who made it, when, and from which request;
two versions side by side; an earlier one restored.

The rows hold every text, the current one included (the highest number). Options and chapters made
before versions were kept have no rows: their current text reads as version 1 (`option_version_list`,
`chapter_version_list` show it without writing anything) and is stored as version 1 just before a
version 2 is added (`option_versions_ensure`, `chapter_versions_ensure`).

Where versions are made:
- an option: version 1 when its request's run stores it (`option_versions_first`, from
  `services.generation_request_run`); a swipe (`writer.swipes`) and a restore add one each;
- a chapter: version 1 when it is added (`services.chapter_add`; an accepted option's names that option
  and its request, `chapter_version_accepted` from `services.option_accept`), one per saved edit that
  changes it (`services.chapter_update`), one per restore.

A brand's approval covers one text only (brands.matching, rule 4): an option whose text changes here
is decided again by `option_placement` and waits for its brand's review again (never shown to a reader
until then). A chapter restored goes through `chapter_placement_sync` as an edited chapter does.

A rating or a preference is about the text that was rated (the preference dataset reads the option's
current text): when an option's text changes, its ratings and the preferences that name it go
(`_judgements_forget`), and the page says so.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import (
    CharField,
    Count,
    IntegerField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    TextField,
    Value,
)
from django.db.models.functions import Coalesce
from django.http import Http404
from django.utils import timezone

from brands.matching import (
    OptionPlan,
    brand_use_for_request,
    brands_blocked_for_story,
    brief_parts,
    chapter_placement_sync,
    option_placement,
    placement_terms,
    render_brand_brief,
)
from mesu_web.errors import ApplicationError
from writer.models import (
    Chapter,
    ChapterVersion,
    GenerationOption,
    GenerationRequest,
    OptionPreference,
    OptionRating,
    OptionSwipe,
    OptionVersion,
    Story,
    VersionCause,
)
from writer.text_input import clean_text

OPTION_TEXT_FIELDS = ("raw_output", "reasoning", "text", "format_ok", "tokens", "finish_reason")
# What an option's review starts from again when its text changes: an approval covers one text only.
REVIEW_RESET = {"approved_text_hash": "", "reviewed_by": None, "reviewed_at": None, "review_reason": ""}
PLACEMENT_FIELDS = (
    "brand_id", "asset_id", "placement_hint", "mentions", "reasoning_mentions", "placement_found", "placement_note",
    "review_status", "draft", "placed_passage", "placement_similarity",
)  # fmt: skip


# --- Options: reads --------------------------------------------------------------------------------


def _option_version_1(option: GenerationOption) -> OptionVersion:
    """The option's text as its version 1 (unsaved): written by its request's writer for who asked."""
    request = option.request
    return OptionVersion(
        option=option,
        number=1,
        cause=VersionCause.WRITTEN,
        **{name: getattr(option, name) for name in OPTION_TEXT_FIELDS},
        model_name=request.model_name[:128],
        created_by_id=request.requested_by_id,
        request_id=request.pk,
        created_at=option.created_at,
    )


def option_version_list(*, option: GenerationOption) -> list[OptionVersion]:
    """Every version of `option`, oldest first; its current text as version 1 (unsaved) when none was kept."""
    versions = list(
        OptionVersion.objects.filter(option=option).select_related("created_by", "request").order_by("number")
    )
    if not versions:
        version = _option_version_1(option)
        version.created_by = option.request.requested_by
        version.request = option.request
        versions = [version]
    return versions


def option_version_get(*, option: GenerationOption, number: object) -> OptionVersion:
    """Version `number` of `option`; Http404 when it has none of that number."""
    try:
        wanted = int(str(number))
    except (TypeError, ValueError):
        raise Http404("No such version.") from None
    for version in option_version_list(option=option):
        if version.number == wanted:
            return version
    raise Http404("No such version.")


def option_versions_annotated(queryset: QuerySet[GenerationOption]) -> QuerySet[GenerationOption]:
    """The request page's options with `versions_kept` and the latest swipe's `swipe_status`,
    `swipe_tokens` and `swipe_error`, in the same query (three subqueries)."""
    latest = OptionSwipe.objects.filter(option=OuterRef("pk")).order_by("-created_at", "-pk")
    return queryset.annotate(
        versions_kept=Coalesce(
            Subquery(
                OptionVersion.objects.filter(option=OuterRef("pk"))
                .order_by()
                .values("option")
                .annotate(n=Count("pk"))
                .values("n")[:1],
                output_field=IntegerField(),
            ),
            Value(1),
        ),
        swipe_status=Coalesce(Subquery(latest.values("status")[:1]), Value(""), output_field=CharField()),
        swipe_tokens=Coalesce(
            Subquery(latest.values("progress_tokens")[:1]), Value(0), output_field=IntegerField()
        ),
        swipe_error=Coalesce(Subquery(latest.values("error")[:1]), Value(""), output_field=TextField()),
    )


# --- Options: writes -------------------------------------------------------------------------------


def option_versions_first(*, request: GenerationRequest, model_name: str = "") -> None:
    """Version 1 of each option of `request` that has none: called in the transaction that stores them."""
    options = GenerationOption.objects.filter(request=request, versions__isnull=True)
    OptionVersion.objects.bulk_create(
        OptionVersion(
            option=option,
            number=1,
            cause=VersionCause.WRITTEN,
            **{name: getattr(option, name) for name in OPTION_TEXT_FIELDS},
            model_name=(model_name or request.model_name)[:128],
            created_by_id=request.requested_by_id,
            request=request,
        )
        for option in options
    )


def option_versions_ensure(*, option: GenerationOption) -> None:
    """An option written before versions were kept: its current text becomes version 1 (dated when the
    option was written). Call it with the option locked, before its text changes."""
    if OptionVersion.objects.filter(option=option).exists():
        return
    version = _option_version_1(option)
    version.save()
    OptionVersion.objects.filter(pk=version.pk).update(created_at=option.created_at)


def option_version_add(
    *,
    option: GenerationOption,
    cause: str,
    created_by: AbstractBaseUser | None,
    request: GenerationRequest | None,
    model_name: str = "",
    restored_from: int | None = None,
) -> OptionVersion:
    """A new version holding `option`'s text as it is now (saved by the caller, who holds its lock; the
    earlier text is a version already: `option_versions_ensure` before the change)."""
    last = OptionVersion.objects.filter(option=option).aggregate(last=Max("number"))["last"] or 0
    return OptionVersion.objects.create(
        option=option,
        number=last + 1,
        cause=cause,
        **{name: getattr(option, name) for name in OPTION_TEXT_FIELDS},
        model_name=model_name[:128],
        created_by=created_by,
        request=request,
        restored_from=restored_from,
    )


def option_plan_now(*, option: GenerationOption, request: GenerationRequest, with_brief: bool) -> OptionPlan:
    """What `option` is asked to carry when its text is written or restored again: its brand and asset,
    placed the same way, while the request may still carry them (the story's opt-in, the reader's switch,
    the brand active and not barred from the story); otherwise nothing, so that a brand named anyway is
    held back by `option_placement`."""
    if not request.use_brands or option.brand_id is None or option.asset_id is None:
        return OptionPlan()
    reader = request.requested_by if request.kind == GenerationRequest.Kind.READER else None
    allowed, _ = brand_use_for_request(story=request.story, reader=reader, use_brands=True)
    brand, asset = option.brand, option.asset
    if not allowed or brand is None or asset is None or not brand.is_active:
        return OptionPlan()
    if brand.pk in brands_blocked_for_story(story=request.story, preference=request.preference):
        return OptionPlan()
    brief_brand, brief_asset = brief_parts(brand=brand, asset=asset)
    return OptionPlan(
        brand_id=brand.pk,
        asset_id=asset.pk,
        hint=option.placement_hint,
        brief=render_brand_brief(brief_brand, asset=brief_asset, placement_hint=option.placement_hint)
        if with_brief
        else "",
        terms=placement_terms(brief_brand, brief_asset),
    )


def _judgements_forget(option: GenerationOption) -> int:
    """The ratings of `option` and the preferences that name it: about a text it no longer has."""
    ratings, _ = OptionRating.objects.filter(option=option).delete()
    preferences, _ = OptionPreference.objects.filter(Q(chosen=option) | Q(rejected=option)).delete()
    return ratings + preferences


def option_text_replace(*, option: GenerationOption, new: GenerationOption) -> int:
    """Give the locked `option` the text and placement of `new` (an unsaved option as the writer's run
    makes one, for the same request), with its brand's review started again; saved. Returns how many
    ratings and preferences went with the earlier text."""
    for name in OPTION_TEXT_FIELDS + PLACEMENT_FIELDS + ("warning",):
        setattr(option, name, getattr(new, name))
    for name, value in REVIEW_RESET.items():
        setattr(option, name, value)
    option.save(
        update_fields=[
            *OPTION_TEXT_FIELDS,
            *(name.removesuffix("_id") for name in PLACEMENT_FIELDS),
            "warning",
            *REVIEW_RESET,
        ]
    )
    option.__dict__.pop("quality", None)  # the cached words and repeats were the earlier text's
    return _judgements_forget(option)


def option_check_owner(
    *, option: GenerationOption, request: GenerationRequest, user: AbstractBaseUser, verb: str
) -> None:
    """Only who asked for the chapter changes its options (the author of an author's request, the reader
    of a reader's); none accepted as a chapter. ApplicationError with the reason."""
    if request.requested_by_id != user.pk:
        raise ApplicationError(f"Only who asked for this chapter can {verb} its options.")
    if request.status != GenerationRequest.Status.SUCCEEDED:
        raise ApplicationError("This chapter is still being written; wait for its options.")
    if option.accepted_chapter_id is not None:
        raise ApplicationError(
            f"{option.label} is chapter {option.accepted_chapter.number} of the story now, so it stays as it "
            "was accepted. Change the chapter instead: edit it, or restore one of its versions."
        )
    if not option.visible_to_requester and request.story.owner_id != user.pk:
        raise ApplicationError(
            f"{option.label} is waiting for a brand's review; it can be changed once you can read it."
        )


def option_version_restore(
    *, option: GenerationOption, version: OptionVersion, user: AbstractBaseUser
) -> OptionVersion:
    """Make `version`'s text the option's current text again: a new version (cause restored, naming the
    version it restores); the earlier current text stays a version. A branded option is decided again and
    waits for its brand's review (its approval covered another text). Returns the new version."""
    from writer.swipes import option_swipe_in_progress  # local: swipes imports this module

    with transaction.atomic():
        # The request first, then the option: the order the review queue locks them in.
        request = (
            GenerationRequest.objects.select_for_update().select_related("story").get(pk=option.request_id)
        )
        locked = (
            GenerationOption.objects.select_for_update(of=("self",))
            .select_related("accepted_chapter", "brand", "asset")
            .get(pk=option.pk)
        )
        locked.request = request
        option_check_owner(option=locked, request=request, user=user, verb="restore versions of")
        if version.option_id != locked.pk:
            raise ApplicationError("That version belongs to another option.")
        if option_swipe_in_progress(option=locked) is not None:
            raise ApplicationError(
                f"{locked.label} is being written again; restore a version once that is done."
            )
        option_versions_ensure(option=locked)
        current = OptionVersion.objects.filter(option=locked).aggregate(last=Max("number"))["last"] or 1
        if version.number == current:
            raise ApplicationError(f"Version {version.number} is {locked.label}'s current text already.")
        plan = option_plan_now(option=locked, request=request, with_brief=False)
        placement = option_placement(
            request=request, plan=plan, text=version.text, reasoning=version.reasoning
        )
        restored = GenerationOption(
            request=request,
            index=locked.index,
            **{name: getattr(version, name) for name in OPTION_TEXT_FIELDS},
            warning="",
            brand_id=placement.brand_id,
            asset_id=placement.asset_id,
            placement_hint=locked.placement_hint if placement.brand_id else "",
            mentions=placement.mentions,
            reasoning_mentions=placement.reasoning_mentions,
            placement_found=placement.placement_found,
            placement_note=" ".join(
                n
                for n in (f"Version {version.number} restored." if placement.brand_id else "", placement.note)
                if n
            )[:300],
            review_status=placement.review_status,
            # Versions keep no draft: the placed passage of the text before no longer applies.
            draft="",
            placed_passage=[],
            placement_similarity={},
        )
        forgotten = option_text_replace(option=locked, new=restored)
        new = option_version_add(
            option=locked,
            cause=VersionCause.RESTORED,
            created_by=user,
            request=request,
            model_name=version.model_name,
            restored_from=version.number,
        )
    new.judgements_forgotten = forgotten
    return new


# --- Chapters --------------------------------------------------------------------------------------


def _chapter_version_1(chapter: Chapter) -> ChapterVersion:
    return ChapterVersion(
        chapter=chapter,
        number=1,
        cause=VersionCause.ACCEPTED if chapter.source == Chapter.Source.GENERATED else VersionCause.EDITED,
        title=chapter.title,
        text=chapter.text,
        created_by_id=chapter.story.owner_id,
        created_at=chapter.created_at,
    )


def chapter_version_list(*, chapter: Chapter) -> list[ChapterVersion]:
    """Every version of `chapter`, oldest first; its current text as version 1 (unsaved) when none was kept."""
    versions = list(
        ChapterVersion.objects.filter(chapter=chapter)
        .select_related("created_by", "request")
        .order_by("number")
    )
    if not versions:
        version = _chapter_version_1(chapter)
        version.created_by = chapter.story.owner
        versions = [version]
    return versions


def chapter_version_get(*, chapter: Chapter, number: object) -> ChapterVersion:
    try:
        wanted = int(str(number))
    except (TypeError, ValueError):
        raise Http404("No such version.") from None
    for version in chapter_version_list(chapter=chapter):
        if version.number == wanted:
            return version
    raise Http404("No such version.")


def chapter_versions_ensure(*, chapter: Chapter) -> None:
    """A chapter added before versions were kept (or imported from a book): its current text becomes
    version 1, dated when the chapter was added. Call it before its text changes."""
    if ChapterVersion.objects.filter(chapter=chapter).exists():
        return
    version = _chapter_version_1(chapter)
    version.save()
    ChapterVersion.objects.filter(pk=version.pk).update(created_at=chapter.created_at)


@transaction.atomic
def chapter_version_add(
    *,
    chapter: Chapter,
    created_by: AbstractBaseUser | None,
    cause: str = VersionCause.EDITED,
    restored_from: int | None = None,
) -> ChapterVersion | None:
    """A new version holding `chapter`'s text and title as saved now; None when they are those of its
    current version already (a save that changed nothing)."""
    Chapter.objects.select_for_update().filter(pk=chapter.pk).first()  # one number at a time per chapter
    last = ChapterVersion.objects.filter(chapter=chapter).order_by("-number").first()
    if last is not None and (last.text, last.title) == (chapter.text, chapter.title):
        return None
    if last is None and chapter.source == Chapter.Source.GENERATED:
        cause = VersionCause.ACCEPTED
    return ChapterVersion.objects.create(
        chapter=chapter,
        number=(last.number + 1) if last else 1,
        cause=cause,
        title=chapter.title,
        text=chapter.text,
        created_by=created_by,
        restored_from=restored_from,
    )


def chapter_version_accepted(*, chapter: Chapter, option: GenerationOption, user: AbstractBaseUser) -> None:
    """The chapter was accepted from `option`: its version 1 says so, and names the request."""
    ChapterVersion.objects.filter(chapter=chapter, number=1).update(
        cause=VersionCause.ACCEPTED, option=option, request_id=option.request_id, created_by=user
    )


def chapter_version_restore(
    *, chapter: Chapter, version: ChapterVersion, user: AbstractBaseUser
) -> ChapterVersion:
    """Make `version`'s text and title the chapter's again: a new version (cause restored); the text before
    stays a version. A chapter accepted with a brand's placement is checked as an edited one is."""
    story = chapter.story
    if story.owner_id != user.pk:
        raise ApplicationError("Only the story's author can restore a version of its chapters.")
    if version.chapter_id != chapter.pk:
        raise ApplicationError("That version belongs to another chapter.")
    with transaction.atomic():
        locked = Chapter.objects.select_for_update().select_related("story").get(pk=chapter.pk)
        chapter_versions_ensure(chapter=locked)
        current = ChapterVersion.objects.filter(chapter=locked).aggregate(last=Max("number"))["last"] or 1
        if version.number == current:
            raise ApplicationError(
                f"Version {version.number} is chapter {locked.number}'s current text already."
            )
        locked.text, locked.title = clean_text(version.text), version.title
        locked.save(update_fields=["text", "title", "updated_at"])
        Story.objects.filter(pk=story.pk).update(updated_at=timezone.now())
        new = chapter_version_add(
            chapter=locked, created_by=user, cause=VersionCause.RESTORED, restored_from=version.number
        )
        if new is None:  # the same text and title as the current version: nothing to restore
            raise ApplicationError(f"Version {version.number} reads the same as the current text.")
    # Rule 5 of brands.matching: a changed approved passage goes back to its brand's review.
    chapter_placement_sync(chapter=locked)
    chapter.text, chapter.title, chapter.updated_at = locked.text, locked.title, locked.updated_at
    return new


# --- Comparing two texts ---------------------------------------------------------------------------

_TOKEN = re.compile(r"\s+|\w+(?:['’]\w+)*|[^\w\s]")
MAX_WORD_DIFF_TOKENS = 4000  # tokens a line may have for a word-by-word comparison (difflib is ~quadratic)


@dataclass(frozen=True)
class Segment:
    text: str
    changed: bool = False


@dataclass(frozen=True)
class DiffRow:
    """One line of each text side by side (None: the line is only on the other side). `kind`: same,
    changed, removed (only on the left) or added (only on the right)."""

    kind: str
    left: tuple[Segment, ...] | None
    right: tuple[Segment, ...] | None
    left_number: int | None = None
    right_number: int | None = None


@dataclass(frozen=True)
class Comparison:
    rows: list[DiffRow] = field(default_factory=list)
    words_removed: int = 0
    words_added: int = 0
    similarity: float = 1.0  # difflib's ratio of the two texts' words: 1.0 the same

    @property
    def identical(self) -> bool:
        return all(row.kind == "same" for row in self.rows)


def _merge(parts: list[Segment]) -> tuple[Segment, ...]:
    merged: list[Segment] = []
    for part in parts:
        if not part.text:
            continue
        if merged and merged[-1].changed == part.changed:
            merged[-1] = Segment(merged[-1].text + part.text, part.changed)
        else:
            merged.append(part)
    return tuple(merged)


def _bridge(parts: list[Segment]) -> list[Segment]:
    """Spaces between two changed runs read as part of one change ("<del>in late, soaked</del>", not a
    mark per word)."""
    parts = [p for p in parts if p.text]
    return [
        Segment(p.text, True)
        if not p.changed
        and not p.text.strip()
        and 0 < i < len(parts) - 1
        and parts[i - 1].changed
        and parts[i + 1].changed
        else p
        for i, p in enumerate(parts)
    ]


def _words(text: str) -> int:
    return len(re.findall(r"\w+", text))


def _line_pair(left: str, right: str) -> tuple[tuple[Segment, ...], tuple[Segment, ...]]:
    """The changed words of two lines, marked on each side."""
    a, b = _TOKEN.findall(left), _TOKEN.findall(right)
    if len(a) > MAX_WORD_DIFF_TOKENS or len(b) > MAX_WORD_DIFF_TOKENS:
        return (Segment(left, True),), (Segment(right, True),)
    ours: list[Segment] = []
    theirs: list[Segment] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        old, new = "".join(a[i1:i2]), "".join(b[j1:j2])
        if op == "equal":
            ours.append(Segment(old))
            theirs.append(Segment(new))
        else:
            # Spaces alone are not worth a mark; words (and punctuation) are.
            ours.append(Segment(old, bool(old.strip())))
            theirs.append(Segment(new, bool(new.strip())))
    return _merge(_bridge(ours)), _merge(_bridge(theirs))


def compare_texts(old: str, new: str) -> Comparison:
    """Two texts side by side, line by line (a paragraph is a line), the changed words of changed lines
    marked. The texts stay plain text: the page escapes them."""
    a, b = old.splitlines(), new.splitlines()
    rows: list[DiffRow] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            rows += [
                DiffRow("same", (Segment(a[i]),), (Segment(b[j]),), i + 1, j + 1)
                for i, j in zip(range(i1, i2), range(j1, j2), strict=True)
            ]
            continue
        paired = min(i2 - i1, j2 - j1) if op == "replace" else 0
        for k in range(paired):
            left, right = _line_pair(a[i1 + k], b[j1 + k])
            rows.append(DiffRow("changed", left, right, i1 + k + 1, j1 + k + 1))
        rows += [
            DiffRow("removed", (Segment(a[i], True),), None, i + 1, None) for i in range(i1 + paired, i2)
        ]
        rows += [DiffRow("added", None, (Segment(b[j], True),), None, j + 1) for j in range(j1 + paired, j2)]
    removed = sum(_words(s.text) for row in rows if row.left for s in row.left if s.changed)
    added = sum(_words(s.text) for row in rows if row.right for s in row.right if s.changed)
    old_words, new_words = re.findall(r"\w+", old), re.findall(r"\w+", new)
    similarity = (
        difflib.SequenceMatcher(None, old_words, new_words, autojunk=False).ratio()
        if old_words or new_words
        else 1.0
    )
    return Comparison(rows, removed, added, similarity)


def compare_numbers(versions: list, a: object, b: object) -> tuple[int, int]:
    """The two version numbers to compare from a page's `a` and `b` (the previous and the current version
    when both are missing). ApplicationError with what to do for anything else."""
    numbers = [v.number for v in versions]
    if len(numbers) < 2:
        raise ApplicationError("There is only one version so far: nothing to compare it with.")
    if a in (None, "") and b in (None, ""):
        return numbers[-2], numbers[-1]
    try:
        first, second = int(str(a).strip()), int(str(b).strip())
    except (TypeError, ValueError):
        raise ApplicationError("Choose two versions to compare, by their numbers.") from None
    if first == second:
        raise ApplicationError(f"Choose two different versions: version {first} is the same as itself.")
    missing = [n for n in (first, second) if n not in numbers]
    if missing:
        raise ApplicationError(
            f"There is no version {missing[0]}: the versions are {numbers[0]} to {numbers[-1]}."
        )
    return first, second
