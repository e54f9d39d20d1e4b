"""The story bible: the author's characters, places, objects and facts, and what the writer's prompt takes
of them.

Entries (writer.models.StoryBibleEntry) have a name, aliases, a description, and the chapters they hold
for ("true from chapter N", optionally "until chapter M"). The author writes them; the writer proposes some
from the recent chapters (`bible_proposals_request`, a task on the generation queue), which the author
accepts, edits or rejects. Only accepted entries reach the prompt.

The prompt (`bible_selector`, given to writer.prompting.build_prompt): the accepted entries in force for
the chapter being written (from_chapter <= N <= until_chapter) that the chapters in the prompt mention by
name or alias, most relevant first (mentioned in the newest chapter, then most often), as many as fit
the section's share of the budget (writer.prompting.BIBLE_SHARE). The request's budget report names the
entries that went in and those left out for length.

When a chapter mentions an entry (`BibleMatcher`), whole words only ("Ann" is not in "Anne", "Will" not
in "Willow"; "Will's" is Will):
- a name written all in lower case ("the curse", "static") matches in any case;
- a capitalised name matches in any case ("JUNO", "juno"), unless it is a common word: its lower-case
  form is in COMMON_WORDS (every word of it) or the chapters read use it in lower case ("will", "hope",
  "rose", "the old town"). A common-word name then matches only as written ("Will", not "will" or
  "WILL"), and not at the start of a sentence, where every word is capitalised: "Will you come?" and
  "Hope was gone." are not Will and Hope; "said Will", "and Hope's" are.
The same rule decides whether a proposed name is in the chapters the writer read.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from mesu_web.errors import ApplicationError
from mesu_web.jobs.locks import run_lock
from writer.engines import get_engine
from writer.engines.base import Sampling
from writer.models import BibleProposalRun, Chapter, Story, StoryBibleEntry
from writer.prompting import (
    BibleEntryText,
    BibleSelection,
    BibleSelector,
    ChapterText,
    bible_block,
    bible_order,
    prompt_budget,
    render_bible,
    render_bible_entry,
    render_chapter,
)

logger = logging.getLogger(__name__)

Kind = StoryBibleEntry.Kind
Status = StoryBibleEntry.Status

MAX_NAME_CHARS = 80
MAX_ALIASES = 12
MAX_DESCRIPTION_CHARS = 2000
LIVE = (Status.ACCEPTED, Status.PROPOSED)  # the entries whose names must be unique in a story

# Lower-case words that are also names (of people, places, things) often enough to be mistaken for
# them. A capitalised name made only of these words is matched as written, never at a sentence's start
# (the module's docstring). The chapters read add the story's own: any name they also use in lower case.
COMMON_WORDS = frozenset(
    """
    a an the and or but if so no yes not one two all any some this that these those here there
    i me my you he him his she her it its we us our they them their who what when where why how
    will would shall should may might must can could do did does done have has had be is was are
    am been being go went gone get got make made say said see saw seen come came take took give gave
    hope faith grace joy mercy patience prudence charity constance honor honour glory justice liberty
    chance chase hunter mark bill pat rob sue jack frank art dawn eve sky river storm rain snow star
    june april august may march summer autumn winter spring fall sunny rose lily daisy violet iris ivy
    holly heather hazel ash oak willow rowan jade ruby pearl amber crystal opal coral penny ginger honey
    sugar candy angel bear fox wolf hawk robin jay wren drake crow raven king queen prince princess duke
    earl baron bishop knight page mason cooper baker smith carter fisher taylor porter miller archer
    ward young long brown green black white gray grey red gold silver reed rush stone wood hill field
    moon sun north south east west love true free bliss harmony melody destiny trinity miracle
    summit haven harbour harbor bay sea port city town village tower castle bridge market church
    school house home hall garden park lake forest island valley mountain station street road gate
    old new great little big high low first last doctor captain colonel general major sergeant
    father mother brother sister uncle aunt grandma grandpa nan boss chief master miss sir madam lady
    lord professor judge officer nurse teacher
    """.split()
)

# --- Matching ------------------------------------------------------------------------------------------


def _normal(text: str) -> str:
    """A name as compared: its words joined by one space."""
    return " ".join(text.split())


def is_common_word(name: str) -> bool:
    """Whether every word of `name` is in COMMON_WORDS (case-insensitive): "Will", "Hope", "Old Town"."""
    words = _normal(name).lower().split()
    return bool(words) and all(w.strip("'’.,") in COMMON_WORDS for w in words)


# Skipped when looking back from a mention for the end of the sentence before it: white space, quotes,
# brackets, emphasis and dashes ('he said. "Will!' starts a sentence; 'she said, "Will!' does not).
_BEFORE_SENTENCE = " \t\"'“‘«„(*_[—–-"
_SENTENCE_END = ".!?…\n\r"


def at_sentence_start(text: str, start: int) -> bool:
    """Whether the word at `start` of `text` begins a sentence (or a line, or the text)."""
    i = start - 1
    while i >= 0 and text[i] in _BEFORE_SENTENCE:
        i -= 1
    return i < 0 or text[i] in _SENTENCE_END


@dataclass
class Mentions:
    """How an entry is mentioned in the chapters given: how often, and in which chapters (ascending)."""

    count: int = 0
    chapters: list[int] = field(default_factory=list)

    @property
    def first(self) -> int:
        return self.chapters[0]

    @property
    def latest(self) -> int:
        return self.chapters[-1]


def _trie_pattern(names: Iterable[str]) -> str:
    """One regular expression for all `names` (lower case, words joined by one space), factored as a
    trie: a chapter is read once, and each position tries a letter or two, not every name (500 entries
    over a 130 KB prompt: 0.2 s as a plain alternation). The longer name wins where one starts another
    ("Juno Vale", not "Juno" and a stray "Vale"); the words of a name may be split by any white space
    (a line break in the chapter)."""
    trie: dict[str, dict] = {}
    for name in names:
        node = trie
        for ch in name:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict[str, dict]) -> str:
        branches = [
            (r"\s+" if ch == " " else re.escape(ch)) + emit(child) for ch, child in sorted(node.items()) if ch
        ]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if "" in node:  # a name ends here; a longer one may go on
            return f"(?:{body})?"
        return body

    return emit(trie)


class BibleMatcher:
    """Finds the mentions of named things in chapters, by the rule of the module's docstring.

    `names`: key -> the names (name and aliases) it is mentioned by, as the author wrote them. One
    regular expression over all of them, so a chapter is read once whatever the number of entries."""

    def __init__(self, names: Mapping[object, Iterable[str]]) -> None:
        # normalised lower-case name -> [(key, the name as written, normalised)]
        self._by_lower: dict[str, list[tuple[object, str]]] = {}
        for key, written_names in names.items():
            for written in written_names:
                written = _normal(written)
                if written and any(ch.isalnum() for ch in written):
                    self._by_lower.setdefault(written.lower(), []).append((key, written))
        self._pattern: re.Pattern[str] | None = None
        if self._by_lower:
            self._pattern = re.compile(rf"(?<!\w){_trie_pattern(self._by_lower)}(?!\w)", re.IGNORECASE)

    def scan(self, texts: Mapping[int, str]) -> dict[object, Mentions]:
        """key -> its Mentions in `texts` (chapter number -> text); keys never mentioned are left out."""
        if self._pattern is None:
            return {}
        hits: list[tuple[int, str, str, bool]] = []  # (chapter, as found, lower-case, at a sentence start)
        lower_uses: set[str] = set()  # names the chapters also write in lower case
        for number, text in texts.items():
            for m in self._pattern.finditer(text):
                found = _normal(m.group(0))
                lower = found.lower()
                if found == lower:
                    lower_uses.add(lower)
                hits.append((number, found, lower, at_sentence_start(text, m.start())))
        found_for: dict[object, Mentions] = {}
        for number, found, lower, sentence_start in hits:
            for key, written in self._by_lower.get(lower, ()):
                if not self._counts(written, found, lower in lower_uses, sentence_start):
                    continue
                mentions = found_for.setdefault(key, Mentions())
                mentions.count += 1
                if not mentions.chapters or mentions.chapters[-1] != number:
                    mentions.chapters.append(number)
        for mentions in found_for.values():
            mentions.chapters = sorted(set(mentions.chapters))
        return found_for

    @staticmethod
    def _counts(written: str, found: str, used_in_lower_case: bool, sentence_start: bool) -> bool:
        if written == written.lower():  # a name written in lower case: any case
            return True
        if not (used_in_lower_case or is_common_word(written)):  # a proper name: any case
            return True
        # A common word: only as the author capitalised it, and not where a sentence starts.
        return found == written and not sentence_start


def entry_names(entry: StoryBibleEntry) -> list[str]:
    return [entry.name, *entry.aliases]


# --- The prompt's selector -----------------------------------------------------------------------------


def entries_in_force(*, story: Story, chapter_number: int):  # noqa: ANN201 (a QuerySet)
    """The accepted entries that hold for chapter `chapter_number`."""
    return StoryBibleEntry.objects.filter(
        story=story, status=Status.ACCEPTED, from_chapter__lte=chapter_number
    ).filter(Q(until_chapter__isnull=True) | Q(until_chapter__gte=chapter_number))


def entry_text(entry: StoryBibleEntry) -> BibleEntryText:
    return BibleEntryText(
        name=entry.name, description=entry.description, kind=entry.kind, aliases=tuple(entry.aliases)
    )


def bible_selector(
    *, story: Story, next_number: int, count_tokens: Callable[[str], int]
) -> BibleSelector | None:
    """The selector writer.prompting.build_prompt calls with the chapters in the prompt (number -> kept
    text) and the section's share of tokens; None when no accepted entry holds for `next_number` (the
    prompt is then built as without a bible).

    It returns the entries those chapters mention, most relevant first (mentioned in the newest chapter,
    then most often, then by name) as many as fit, in the section's order, with the names of those left
    out for length. Token counts of each entry's line are kept between calls (build_prompt may call it
    again with other chapters)."""
    entries = list(entries_in_force(story=story, chapter_number=next_number).order_by("pk"))
    if not entries:
        return None
    by_pk = {e.pk: e for e in entries}
    texts = {e.pk: entry_text(e) for e in entries}
    matcher = BibleMatcher({e.pk: entry_names(e) for e in entries})
    line_costs: dict[int, int] = {}
    heading_costs: dict[str, int] = {}
    intro_cost: list[int] = []

    def line_cost(pk: int) -> int:
        if pk not in line_costs:
            line_costs[pk] = count_tokens(render_bible_entry(texts[pk]) + "\n")
        return line_costs[pk]

    def heading_cost(kind: str) -> int:
        if kind not in heading_costs:
            heading_costs[kind] = count_tokens(f"\n\n### {kind.title()}s\n\n")
        return heading_costs[kind]

    def intro() -> int:
        if not intro_cost:
            one = render_bible([BibleEntryText(name="x", kind="fact")])
            intro_cost.append(count_tokens(one[: one.index("\n\n### ")] + "\n\n"))
        return intro_cost[0]

    def select(chapter_texts: Mapping[int, str], cap: int) -> BibleSelection:
        mentioned = matcher.scan(chapter_texts)
        ranked = sorted(
            mentioned, key=lambda pk: (-mentioned[pk].latest, -mentioned[pk].count, by_pk[pk].name.lower(), pk)
        )
        chosen: list[int] = []
        left_out: list[int] = []
        estimate = intro()
        kinds: set[str] = set()
        for pk in ranked:
            kind = by_pk[pk].kind
            cost = line_cost(pk) + (0 if kind in kinds else heading_cost(kind))
            if estimate + cost <= cap:
                chosen.append(pk)
                kinds.add(kind)
                estimate += cost
            else:
                left_out.append(pk)
        # The estimate adds pieces; the section is counted whole (a tokenizer may merge across seams).
        block = bible_block(bible_order([texts[pk] for pk in chosen]))
        while chosen and count_tokens(block) > cap:
            left_out.append(chosen.pop())  # the least relevant goes first
            block = bible_block(bible_order([texts[pk] for pk in chosen]))
        rank = {pk: i for i, pk in enumerate(ranked)}
        return BibleSelection(
            entries=bible_order([texts[pk] for pk in chosen]),
            omitted=[by_pk[pk].name for pk in sorted(left_out, key=rank.__getitem__)],
            block=block,
        )

    return select


# --- Writes: the author's ------------------------------------------------------------------------------


def _clean_name(name: str, *, what: str = "name") -> str:
    name = _normal(str(name or "")).strip("'\"“”‘’")
    name = _normal(name)
    if not name:
        raise ApplicationError(f"An entry needs a {what}.", {"field": "name" if what == "name" else "aliases"})
    if len(name) > MAX_NAME_CHARS:
        raise ApplicationError(
            f"“{name[:40]}…” is {len(name)} characters long; a {what} has at most {MAX_NAME_CHARS}.",
            {"field": "name" if what == "name" else "aliases"},
        )
    if not any(ch.isalnum() for ch in name):
        raise ApplicationError(
            f"“{name}” has no letter or digit: a chapter could never mention it.",
            {"field": "name" if what == "name" else "aliases"},
        )
    return name


def _clean_aliases(aliases: Sequence[str] | str, name: str) -> list[str]:
    if isinstance(aliases, str):
        aliases = re.split(r"[,\n;]", aliases)
    seen = {name.lower()}
    kept: list[str] = []
    for alias in aliases:
        if not _normal(str(alias or "")):
            continue
        alias = _clean_name(alias, what="alias")
        if alias.lower() not in seen:
            seen.add(alias.lower())
            kept.append(alias)
    if len(kept) > MAX_ALIASES:
        raise ApplicationError(f"An entry has at most {MAX_ALIASES} aliases; this one has {len(kept)}.",
                               {"field": "aliases"})
    return kept


def _clean_chapters(from_chapter: object, until_chapter: object) -> tuple[int, int | None]:
    try:
        start = int(from_chapter)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ApplicationError("“True from chapter” must be a chapter number.", {"field": "from_chapter"}) from None
    if start < 1:
        raise ApplicationError("“True from chapter” must be 1 or more.", {"field": "from_chapter"})
    if until_chapter in (None, ""):
        return start, None
    try:
        end = int(until_chapter)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ApplicationError("“Until chapter” must be a chapter number, or empty.",
                               {"field": "until_chapter"}) from None
    if end < start:
        raise ApplicationError(
            f"“Until chapter” ({end}) is before “true from chapter” ({start}): leave it empty for an entry "
            "that holds from then on.",
            {"field": "until_chapter"},
        )
    return start, end


def _clean_kind(kind: str) -> str:
    if kind not in Kind.values:
        raise ApplicationError(
            f"Unknown kind {kind!r}: choose one of {', '.join(Kind.values)}.", {"field": "kind"}
        )
    return kind


def _clean_description(description: str) -> str:
    description = (description or "").strip()
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise ApplicationError(
            f"The description has {len(description):,} characters; keep it under {MAX_DESCRIPTION_CHARS:,} "
            "(it goes into the writer's prompt).",
            {"field": "description"},
        )
    return description


def _check_unique(*, story: Story, name: str, aliases: Sequence[str], exclude_pk: int | None) -> None:
    """A clear error when the name is another live entry's name or alias, or an alias is another's name.
    (Two entries may share an alias: "the captain" of two captains.)"""
    others = StoryBibleEntry.objects.filter(story=story, status__in=LIVE).exclude(pk=exclude_pk)
    lower = name.lower()
    alias_lowers = {a.lower() for a in aliases}
    for other in others.only("pk", "name", "aliases", "status", "kind"):
        what = "a proposal" if other.status == Status.PROPOSED else "an entry"
        hint = "accept or edit it" if other.status == Status.PROPOSED else "edit that one"
        if other.name.lower() == lower:
            raise ApplicationError(
                f"The story bible already has {what} named “{other.name}” ({other.get_kind_display().lower()}): "
                f"{hint}, or give this one another name.",
                {"field": "name"},
            )
        alias = next((a for a in other.aliases if a.lower() == lower), None)
        if alias is not None:
            raise ApplicationError(
                f"“{alias}” is already an alias of “{other.name}”: a chapter that says it would mean both.",
                {"field": "name"},
            )
        if other.name.lower() in alias_lowers:
            raise ApplicationError(
                f"The alias “{other.name}” is the name of another entry: a chapter that says it would mean both.",
                {"field": "aliases"},
            )


def _save(entry: StoryBibleEntry) -> StoryBibleEntry:
    try:
        with transaction.atomic():
            entry.save()
    except IntegrityError:
        # Two tabs (or the writer's proposals) saved the same name at the same moment.
        raise ApplicationError(
            f"The story bible already has an entry named “{entry.name}”; give this one another name.",
            {"field": "name"},
        ) from None
    return entry


def entry_create(
    *,
    story: Story,
    name: str,
    kind: str = Kind.CHARACTER,
    description: str = "",
    aliases: Sequence[str] | str = (),
    from_chapter: int = 1,
    until_chapter: int | None = None,
) -> StoryBibleEntry:
    """An accepted entry written by the author."""
    name = _clean_name(name)
    aliases = _clean_aliases(aliases, name)
    start, end = _clean_chapters(from_chapter, until_chapter)
    entry = StoryBibleEntry(
        story=story,
        kind=_clean_kind(kind),
        name=name,
        description=_clean_description(description),
        aliases=aliases,
        from_chapter=start,
        until_chapter=end,
        status=Status.ACCEPTED,
        source=StoryBibleEntry.Source.AUTHOR,
    )
    _check_unique(story=story, name=name, aliases=aliases, exclude_pk=None)
    return _save(entry)


ENTRY_FIELDS = ("kind", "name", "description", "aliases", "from_chapter", "until_chapter")


def entry_update(*, entry: StoryBibleEntry, **fields: object) -> StoryBibleEntry:
    """Change an entry (any of ENTRY_FIELDS); its status stays as it was (see entry_accept)."""
    unknown = set(fields) - set(ENTRY_FIELDS)
    if unknown:
        raise ApplicationError(f"Unknown story bible field(s): {', '.join(sorted(unknown))}.")
    name = _clean_name(fields.get("name", entry.name))  # type: ignore[arg-type]
    aliases = _clean_aliases(fields.get("aliases", entry.aliases), name)  # type: ignore[arg-type]
    start, end = _clean_chapters(
        fields.get("from_chapter", entry.from_chapter), fields.get("until_chapter", entry.until_chapter)
    )
    kind = _clean_kind(str(fields.get("kind", entry.kind)))
    description = _clean_description(str(fields.get("description", entry.description)))
    if entry.status in LIVE:
        _check_unique(story=entry.story, name=name, aliases=aliases, exclude_pk=entry.pk)
    entry.kind, entry.name, entry.description, entry.aliases = kind, name, description, aliases
    entry.from_chapter, entry.until_chapter = start, end
    return _save(entry)


def entry_accept(*, entry: StoryBibleEntry) -> StoryBibleEntry:
    """A proposal (or a rejected one, after all) joins the bible: the writer's prompt may use it."""
    if entry.status == Status.ACCEPTED:
        raise ApplicationError(f"“{entry.name}” is already in the story bible.")
    _check_unique(story=entry.story, name=entry.name, aliases=entry.aliases, exclude_pk=entry.pk)
    entry.status = Status.ACCEPTED
    return _save(entry)


def entry_reject(*, entry: StoryBibleEntry) -> StoryBibleEntry:
    """A proposal the author does not want: kept as rejected, so that later proposals leave it out."""
    if entry.status != Status.PROPOSED:
        raise ApplicationError(
            f"Only a proposal can be rejected; “{entry.name}” is {entry.get_status_display().lower()}: "
            "delete it instead."
        )
    entry.status = Status.REJECTED
    entry.save(update_fields=["status", "updated_at"])
    return entry


def entry_delete(*, entry: StoryBibleEntry) -> None:
    entry.delete()


# --- Proposals from the chapters -------------------------------------------------------------------

PROPOSAL_CHAPTERS = 3  # the newest chapters the writer reads for proposals
PROPOSAL_MAX_NEW_TOKENS = 320  # the answer: a line of ~15 tokens per entry, a score of them
PROPOSAL_MAX_ENTRIES = 20  # proposals one run stores at most
PROPOSAL_DESCRIPTION_CHARS = 300
PROPOSAL_ANSWER_CHARS = 4000  # of the answer, kept on the run for the page
PROPOSAL_STALE_QUEUED = timedelta(minutes=10)  # a queued run this old lost its message

PROPOSAL_SYSTEM = (
    "You keep the story bible of a novel: a list of its characters, places and important objects, "
    "each with one line about it. You only list what the chapters you are given name."
)
PROPOSAL_FORMAT = "kind | Name | one line about it"
PROPOSAL_EXAMPLE = (
    "character | Juno Vale | a courier who never takes off her gloves\n"
    "place | Meridian Stack | the tower where the couriers live\n"
    "object | the brass key | opens the roof door"
)


@dataclass(frozen=True)
class ProposedEntry:
    kind: str
    name: str
    description: str


@dataclass
class ParsedProposals:
    entries: list[ProposedEntry] = field(default_factory=list)
    skipped_lines: int = 0  # non-empty lines that are not an entry


_KIND_WORDS = {
    "character": Kind.CHARACTER, "characters": Kind.CHARACTER, "person": Kind.CHARACTER,
    "people": Kind.CHARACTER, "who": Kind.CHARACTER, "creature": Kind.CHARACTER, "animal": Kind.CHARACTER,
    "place": Kind.PLACE, "places": Kind.PLACE, "location": Kind.PLACE, "locations": Kind.PLACE,
    "setting": Kind.PLACE, "where": Kind.PLACE,
    "object": Kind.OBJECT, "objects": Kind.OBJECT, "item": Kind.OBJECT, "items": Kind.OBJECT,
    "thing": Kind.OBJECT, "things": Kind.OBJECT, "artifact": Kind.OBJECT, "artefact": Kind.OBJECT,
    "fact": Kind.FACT, "facts": Kind.FACT, "event": Kind.FACT, "events": Kind.FACT,
}
_BULLET = re.compile(r"^(?:[-*•+>]+|\(?\d{1,3}[.):]|\(?[a-z][.)])\s*", re.IGNORECASE)
_HEADING = re.compile(r"^#{1,6}\s*")
_DASH_SPLIT = re.compile(r"\s+[-–—]+\s+|\s*[–—]\s*")
_PAREN_KIND = re.compile(r"^(?P<name>.+?)\s*[(\[](?P<kind>[A-Za-z ]+)[)\]]\s*(?P<rest>.*)$")
_EXAMPLE_DESCRIPTIONS = {line.split(" | ")[2].lower() for line in PROPOSAL_EXAMPLE.splitlines()}
_PLACEHOLDERS = {"name", "kind", "description", "one line about it", "none", "n/a", "unknown", "..."}


def _strip_marks(text: str) -> str:
    return _normal(text.replace("**", "").replace("__", "").replace("`", "")).strip(" \t*_:;,.\"'“”‘’")


def _kind_of(word: str) -> str | None:
    return _KIND_WORDS.get(_strip_marks(word).lower())


def _proposal_name(text: str) -> str | None:
    """The name part of a line, or None when it cannot be a name (a sentence, a placeholder)."""
    name = _strip_marks(text)
    words = name.split()
    if not name or len(name) > 60 or len(words) > 6 or name.lower() in _PLACEHOLDERS:
        return None
    if not any(ch.isalpha() for ch in name) or _kind_of(name):
        return None
    if not (name[0].isalnum() or name[0] in "'‘"):
        return None
    return name


def parse_proposals(answer: str) -> ParsedProposals:
    """Entries from the writer's answer, one a line, in any of the shapes small models write:
    "character | Juno | a courier", "- **Juno** (character): a courier", "Character: Juno - a courier",
    "Juno: a courier" under a "Characters:" heading. Never raises: a line that is none of these is
    skipped and counted."""
    parsed = ParsedProposals()
    current_kind: str | None = None
    for raw in (answer or "").splitlines():
        line = _HEADING.sub("", _BULLET.sub("", raw.strip())).strip()
        if not line:
            continue
        if _kind_of(line.rstrip(":")):  # a heading: "Characters:", "## Places"
            current_kind = _kind_of(line.rstrip(":"))
            continue
        entry = _parse_line(line, current_kind)
        if entry is None:
            parsed.skipped_lines += 1
        else:
            parsed.entries.append(entry)
    return parsed


def _parse_line(line: str, current_kind: str | None) -> ProposedEntry | None:
    kind: str | None = None
    name_part = description = ""
    if "|" in line:
        parts = [p.strip() for p in line.strip("|").split("|")]
        parts = [p for p in parts if p]
        if len(parts) >= 3 and _kind_of(parts[0]):
            kind, name_part, description = _kind_of(parts[0]), parts[1], " ".join(parts[2:])
        elif len(parts) >= 3 and _kind_of(parts[1]):  # "Juno | character | a courier"
            kind, name_part, description = _kind_of(parts[1]), parts[0], " ".join(parts[2:])
        elif len(parts) == 2 and not _kind_of(parts[0]):
            name_part, description = parts
        else:
            return None
    else:
        head, sep, rest = line.partition(":")
        if sep and _kind_of(head):  # "Character: Juno - a courier"
            kind = _kind_of(head)
            pieces = _DASH_SPLIT.split(rest, maxsplit=1)
            if len(pieces) != 2:
                pieces = rest.split(",", 1) if "," in rest else [rest, ""]
            name_part, description = pieces[0], pieces[1]
        else:
            paren = _PAREN_KIND.match(line)
            if paren and _kind_of(paren.group("kind")):  # "Juno (character): a courier"
                kind = _kind_of(paren.group("kind"))
                name_part, description = paren.group("name"), paren.group("rest").lstrip(":-–— ")
            elif sep:  # "Juno: a courier"
                name_part, description = head, rest
            else:
                pieces = _DASH_SPLIT.split(line, maxsplit=1)  # "Juno - a courier"
                if len(pieces) != 2:
                    return None
                name_part, description = pieces
    name = _proposal_name(name_part)
    description = _strip_marks(description)
    if name is None or not description or description.lower() in _PLACEHOLDERS | _EXAMPLE_DESCRIPTIONS:
        return None  # a line of the prompt's example, copied: about another story
    if len(description) > PROPOSAL_DESCRIPTION_CHARS:
        description = description[: PROPOSAL_DESCRIPTION_CHARS - 1].rsplit(" ", 1)[0] + "…"
    return ProposedEntry(kind=kind or current_kind or Kind.CHARACTER, name=name, description=description)


@dataclass(frozen=True)
class ChaptersRead:
    """The chapters given to the writer: their numbers (ascending), their text as the prompt holds it, and
    the rendered blocks."""

    numbers: list[int]
    texts: dict[int, str]
    blocks: list[str]


def _tail_words(text: str, room: int, count_tokens: Callable[[str], int]) -> str:
    """The longest end of `text`, from a word, that takes at most `room` tokens ("" if none)."""
    starts = [m.start() for m in re.finditer(r"\S+", text)]
    lo, hi, best = 0, len(starts) - 1, ""
    while lo <= hi:  # fewer words from a later start: the later the start, the cheaper
        mid = (lo + hi) // 2
        piece = "…" + text[starts[mid] :]
        if count_tokens(piece) <= room:
            best, hi = piece, mid - 1
        else:
            lo = mid + 1
    return best


def chapters_for_proposals(
    *, story: Story, budget_tokens: int, count_tokens: Callable[[str], int]
) -> ChaptersRead:
    """The newest PROPOSAL_CHAPTERS chapters that fit `budget_tokens`, newest first; the oldest of them
    that does not fit whole keeps its end (the newest is always read, shortened if it must be)."""
    chapters = list(Chapter.objects.filter(story=story).order_by("-number")[:PROPOSAL_CHAPTERS])
    used = 0
    kept: list[tuple[int, str, str]] = []
    for chapter in chapters:
        text = ChapterText(number=chapter.number, title=chapter.title, text=chapter.text)
        block = render_chapter(text)
        cost = count_tokens(block + "\n\n")
        if used + cost <= budget_tokens:
            kept.append((chapter.number, f"{chapter.title}\n\n{chapter.text}", block))
            used += cost
            continue
        frame = count_tokens(render_chapter(ChapterText(chapter.number, chapter.title, "…")) + "\n\n")
        tail = _tail_words(chapter.text.strip(), budget_tokens - used - frame, count_tokens)
        if tail:
            kept.append((chapter.number, f"{chapter.title}\n\n{tail}",
                         render_chapter(ChapterText(chapter.number, chapter.title, tail))))
        break
    kept.sort()
    return ChaptersRead(
        numbers=[n for n, _, _ in kept], texts={n: t for n, t, _ in kept}, blocks=[b for _, _, b in kept]
    )


# A run of capitalised words ("Gull Point", "Captain Morrow"), with "of"/"the" inside ("Duke of York") and
# the usual abbreviated titles ("Mrs. Hale").
_CANDIDATE = re.compile(
    r"(?<![\w’'])(?:(?:Mr|Mrs|Ms|Dr|St)\.\s+)?[A-Z][\w’'-]*"
    r"(?:\s+(?:(?:of|the|de|van|von)\s+)?[A-Z][\w’'-]*)*"
)
_POSSESSIVE = re.compile(r"(?:['’]s|['’])$")
# Words that open a sentence and are no part of a name after them: "Then Pip came" names Pip.
_STARTERS = frozenset(
    """
    then when after before as at in on but and so yet now still just even maybe perhaps suddenly later soon
    once while because though although since until if every each only there here what why how she he they
    we you it his her their our your for with without from by to outside inside behind across above below
    under over through meanwhile finally instead also oh ah well this that these those the a an
    """.split()
)
PROPOSAL_CANDIDATES = 24  # names given to the writer as a hint, the most frequent first


def name_candidates(texts: Mapping[int, str], *, most: int = PROPOSAL_CANDIDATES) -> list[str]:
    """Capitalised names the chapters use, most frequent first: a run of capitalised words, not a common
    word by itself ("The", "She", "Will" used as a verb), seen at least once in the middle of a sentence,
    with a possessive ("Lou's") or a title ("Mrs. Hale"): a sentence's first word is capitalised whatever
    it is ("Then Pip came" names Pip). A hint for the writer; its list decides."""
    counts: dict[str, int] = {}
    evidence: set[str] = set()
    order: dict[str, int] = {}
    for text in texts.values():
        for m in _CANDIDATE.finditer(text):
            found = _normal(m.group(0))
            words = _POSSESSIVE.sub("", found).split()
            starter = False
            while len(words) > 1 and words[0].lower() in _STARTERS:
                words, starter = words[1:], True
            name = " ".join(words)
            if len(name) < 2 or is_common_word(name) or name.lower() in _STARTERS:
                continue
            counts[name] = counts.get(name, 0) + 1
            order.setdefault(name, len(order))
            titled = "." in name.split()[0]  # "Mrs. Hale"
            if starter or titled or not found.endswith(name) or not at_sentence_start(text, m.start()):
                evidence.add(name)
    kept = [n for n in counts if n in evidence]
    kept.sort(key=lambda n: (-counts[n], order[n]))
    return kept[:most]


def proposal_messages(blocks: Sequence[str], candidates: Sequence[str] = ()) -> list[dict[str, str]]:
    """The ask: the chapters, then the task with its format, an example from another story, and the
    names the chapters use (`name_candidates`), when there are any."""
    named = (
        f"\n\nNames the chapters above use: {', '.join(candidates)}. Leave out any that is not a character, "
        "place or object of the story."
        if candidates
        else ""
    )
    user = "\n\n".join(
        [
            *blocks,
            "## Your task\n\n"
            "List the characters, places and important objects that the chapters above name, one a line, "
            f"in this form:\n\n{PROPOSAL_FORMAT}\n\n"
            f"where kind is character, place or object. For example, for another story:\n\n{PROPOSAL_EXAMPLE}"
            f"{named}\n\nWrite each name exactly as the chapters write it. Write nothing else.",
        ]
    )
    return [{"role": "system", "content": PROPOSAL_SYSTEM}, {"role": "user", "content": user}]


def _proposal_fixed_tokens(count_tokens: Callable[[str], int]) -> int:
    messages = proposal_messages([], ["Xxxxxxx Xxxxxxx"] * PROPOSAL_CANDIDATES)  # the longest the hint can be
    return sum(count_tokens(m["content"]) for m in messages) + 2 * 8  # + a few per message for the template


def bible_proposal_in_progress(*, story: Story) -> BibleProposalRun | None:
    """The story's proposal run that is queued or running, if any; a dead one (its worker gone: the run
    lock is free; or queued so long its message was lost) is failed with the reason instead."""
    from writer.tasks import bible_proposals_run_task

    for run in BibleProposalRun.objects.filter(
        story=story, status__in=(BibleProposalRun.Status.QUEUED, BibleProposalRun.Status.RUNNING)
    ):
        if run.status == BibleProposalRun.Status.RUNNING:
            with run_lock(bible_proposals_run_task.name, run.pk) as free:
                if not free:
                    return run
            bible_proposals_fail(run_id=run.pk, error="The worker reading the chapters stopped; ask again.")
        elif timezone.now() - run.created_at < PROPOSAL_STALE_QUEUED:
            return run
        else:
            bible_proposals_fail(run_id=run.pk, error="No worker took the request in time; ask again.")
    return None


def bible_proposals_request(
    *,
    story: Story,
    user: AbstractBaseUser,
    engine: str | None = None,
    max_new_tokens: int = PROPOSAL_MAX_NEW_TOKENS,
    enqueue: bool = True,
) -> BibleProposalRun:
    """Ask the writer for proposals from the newest chapters: a run row, queued on the generation queue."""
    if story.owner_id != user.pk:
        raise ApplicationError("Only the story's author can ask for story bible proposals.")
    if not Chapter.objects.filter(story=story).exists():
        raise ApplicationError("The story has no chapters yet: the writer proposes entries from its chapters.")
    if not 16 <= max_new_tokens <= settings.WRITER_CONTEXT_TOKENS // 2:
        raise ApplicationError(f"The answer's tokens must be between 16 and {settings.WRITER_CONTEXT_TOKENS // 2}.")
    engine_name = engine or settings.WRITER_ENGINE
    get_engine(engine_name)  # fails now, with the valid names, on a typo
    with transaction.atomic():
        Story.objects.select_for_update().get(pk=story.pk)  # one request at a time per story
        running = bible_proposal_in_progress(story=story)
        if running is not None:
            raise ApplicationError("The writer is already reading the chapters for proposals; wait for it to finish.")
        run = BibleProposalRun.objects.create(
            story=story, requested_by=user, engine=engine_name, max_new_tokens=max_new_tokens
        )
    if enqueue:
        from writer.tasks import bible_proposals_run_task

        run_id = run.pk
        transaction.on_commit(lambda: bible_proposals_run_task.delay(run_id), robust=True)
    return run


def _start_run(run_id: int) -> BibleProposalRun | None:
    with transaction.atomic():
        run = BibleProposalRun.objects.select_for_update().select_related("story").get(pk=run_id)
        if run.is_finished:
            return None
        run.status = BibleProposalRun.Status.RUNNING
        run.started_at = run.started_at or timezone.now()
        run.error = ""
        run.save(update_fields=["status", "started_at", "error"])
    return run


def _known_names(story: Story) -> set[str]:
    """Every name and alias of the story's entries, whatever their status (a rejected proposal is not
    proposed again), in lower case."""
    known: set[str] = set()
    for name, aliases in StoryBibleEntry.objects.filter(story=story).values_list("name", "aliases"):
        known.add(_normal(name).lower())
        known.update(_normal(a).lower() for a in aliases)
    return known


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def bible_proposals_run(*, run_id: int) -> BibleProposalRun:
    """Read the newest chapters with the writer, parse its list, store what is new as proposals.

    Idempotent: a finished run is returned as it is. Lines of the answer that are not an entry are
    skipped and counted, names the chapters read never mention (by the module's rule) are dropped and
    counted, names the bible has already (name or alias, any status, any case) are counted as duplicates.
    Raises EngineError (with `retryable`) when the writer fails; the task retries or records it."""
    run = _start_run(run_id)
    if run is None:
        return BibleProposalRun.objects.get(pk=run_id)
    story = run.story
    engine = get_engine(run.engine)
    budget = prompt_budget(context_tokens=settings.WRITER_CONTEXT_TOKENS, max_new_tokens=run.max_new_tokens)
    read = chapters_for_proposals(
        story=story, budget_tokens=budget - _proposal_fixed_tokens(engine.count_tokens),
        count_tokens=engine.count_tokens,
    )
    if not read.numbers:
        raise ApplicationError("The story's chapters do not fit the writer's context; nothing was read.")
    BibleProposalRun.objects.filter(pk=run_id).update(chapters=read.numbers)
    sampling = Sampling(
        max_tokens=run.max_new_tokens,
        temperature=0.3,  # a list of what is there, not invention
        top_p=0.9,
        seed=run.pk,  # no repetition penalty: the names it lists are the chapters' own words
    )
    # The base model (no adapter): the adapters are trained on the chapter format, not on lists.
    messages = proposal_messages(read.blocks, name_candidates(read.texts))
    result = engine.generate(messages, n=1, sampling=sampling, adapter=None)
    # PostgreSQL text cannot hold NUL; a model's answer may (and other control characters, which go too).
    answer = _CONTROL.sub("", result.completions[0].text if result.completions else "")
    parsed = parse_proposals(answer)
    matcher = BibleMatcher({i: [e.name] for i, e in enumerate(parsed.entries)})
    mentioned = matcher.scan(read.texts)
    known = _known_names(story)
    proposed = duplicates = not_in_chapters = over = 0
    for i, item in enumerate(parsed.entries):
        if item.name.lower() in known:
            duplicates += 1
            continue
        if i not in mentioned:
            not_in_chapters += 1
            continue
        if proposed >= PROPOSAL_MAX_ENTRIES:
            over += 1
            continue
        entry = StoryBibleEntry(
            story=story,
            kind=item.kind,
            name=item.name[:MAX_NAME_CHARS],
            description=item.description,
            from_chapter=mentioned[i].first,
            status=Status.PROPOSED,
            source=StoryBibleEntry.Source.WRITER,
        )
        try:
            with transaction.atomic():
                entry.save()
        except IntegrityError:  # the author saved the same name meanwhile
            duplicates += 1
            continue
        known.add(item.name.lower())
        proposed += 1
    if over:
        logger.info("Bible proposals %s: %s more than %s left out", run_id, over, PROPOSAL_MAX_ENTRIES)
    BibleProposalRun.objects.filter(pk=run_id).update(
        status=BibleProposalRun.Status.SUCCEEDED,
        proposed=proposed,
        duplicates=duplicates,
        skipped_lines=parsed.skipped_lines + over,
        not_in_chapters=not_in_chapters,
        model_name=result.model[:128],
        answer=answer[:PROPOSAL_ANSWER_CHARS],
        finished_at=timezone.now(),
    )
    run.refresh_from_db()
    return run


def bible_proposals_note_retry(*, run_id: int, error: str, delay_seconds: float) -> None:
    BibleProposalRun.objects.filter(pk=run_id).update(
        status=BibleProposalRun.Status.QUEUED, error=f"{error} Trying again in {delay_seconds:.0f} s."
    )


def bible_proposals_fail(*, run_id: int, error: str) -> None:
    """Record a failure with its reason (a finished run stays as it is)."""
    BibleProposalRun.objects.filter(pk=run_id).exclude(status=BibleProposalRun.Status.SUCCEEDED).update(
        status=BibleProposalRun.Status.FAILED,
        error=error or "The writer failed for an unknown reason.",
        finished_at=timezone.now(),
    )


def bible_proposals_requeue_dead_run(run_id: int) -> str | None:
    """For the recovery sweep (mesu_web.jobs.recovery): a `running` run whose worker died is failed with
    the reason (the author asks again with one click; the proposals already stored stay)."""
    if not BibleProposalRun.objects.filter(pk=run_id, status=BibleProposalRun.Status.RUNNING).exists():
        return None
    bible_proposals_fail(run_id=run_id, error="The worker reading the chapters stopped; ask again.")
    return "closed"

