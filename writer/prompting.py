"""Build the writer's chat prompt from a story, within a token budget.

Pure text: no Django, no tokenizer import. The caller passes `count_tokens` (the engine's own
tokenizer), so the same code budgets prompts in a web request, a Celery task and the training
pipeline's dataset builder.

Layout of the user message (every part is markdown):

    ## Chapter 0: About the story        <- metadata, always whole
    ## Story bible                        <- optional: entries the chapters below mention (see below)
    [Chapters 1–40 are omitted for length.]   <- only when chapters had to be left out
    ## Chapter 41: ...  ```text ... ```   <- existing chapters, oldest first
    ## Author's note                      <- optional, always whole (see below)
    ## The reader's preference            <- optional, always whole
    ## Brand brief                        <- optional, always whole
    ## Your task                          <- the instruction, always whole

Budget rule: the fixed parts are kept whole; chapters are taken newest-first while they fit whole;
the first one that does not fit is shortened at sentence boundaries with a visible marker; every
older chapter is then omitted (the omitted chapters are always a contiguous run of the oldest ones,
so the model never sees a gap in the middle of the story).

Story bible (`bible=`, a selector from writer.bible): it gets at most BIBLE_SHARE of the budget. The
chapters are planned first with that share held back; the selector is given the text of the chapters in
that plan and the share, and returns the entries they mention that fit it; the chapters then get every
token the section did not use. More room never drops a chapter or a sentence of one, so every entry in
the section is mentioned by a chapter in the prompt. The report names the entries that went in and those
left out for length.

Author's note (`author_note=`, the story's short steering text, e.g. "keep the tone wry; Juno should not
learn the secret yet"): kept until the author changes it, it steers every request of the story, the
author's and the readers'. It sits after the chapters, near the task, where steering works best for small
models, and is a fixed part like the preference: whole or not at all, so the chapters are shortened first.
An empty note leaves the prompt exactly as it was without one; the report counts its tokens.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from mesu_web.errors import ApplicationError

REASONING_START = "<start_working_out>"
REASONING_END = "<end_working_out>"
SOLUTION_START = "<SOLUTION>"
SOLUTION_END = "</SOLUTION>"

SYSTEM_PROMPT = (
    "You are an AI Writer, retaining author's original creative intent. Think about the existing "
    "chapters, roles, characteristics, plots, hints, scenes, locations. Place it between "
    f"{REASONING_START} and {REASONING_END}. Then, provide your solution between "
    f"{SOLUTION_START}{SOLUTION_END}"
)

PROMPT_SAFETY_TOKENS = 32  # room for the chat template's own tokens around the messages

# The story bible's share of the prompt budget, at most: the chapters keep the rest (and whatever the
# section does not use). 15 % of a 4,096-token context's ~3,500-token budget is ~520 tokens: a dozen
# entries of a line or two each.
BIBLE_SHARE = 0.15


def prompt_budget(*, context_tokens: int, max_new_tokens: int) -> int:
    """Tokens the messages of a prompt may take: the model's context less the answer and the template."""
    return context_tokens - max_new_tokens - PROMPT_SAFETY_TOKENS


# Between the top-level parts of the user message. Counted as part of the piece before it.
_SEP = "\n\n"
# The marker that opens the most recent chapter when only its end is kept.
BEGINNING_SHORTENED = "[… the beginning of this chapter is shortened for length …]"
# Ellipsis put at a cut that is not a sentence boundary (the word-boundary fallback).
_WORD_CUT = "…"


def rest_shortened_marker(number: int) -> str:
    """The marker that closes an older chapter when only its opening is kept."""
    return f"[… rest of chapter {number} shortened for length …]"


@dataclass(frozen=True)
class StoryMeta:
    title: str
    author_name: str = ""
    summary: str = ""
    genre: str = ""
    tags: tuple[str, ...] = ()
    characters: str = ""
    setting: str = ""
    intent_notes: str = ""


@dataclass(frozen=True)
class ChapterText:
    number: int
    title: str
    text: str


@dataclass
class BudgetReport:
    budget_tokens: int
    used_tokens: int
    whole: list[int]  # chapter numbers kept whole, ascending
    shortened: list[int]  # chapter numbers kept in part (with a visible marker)
    omitted: list[int]  # chapter numbers left out; always the oldest ones
    # The story bible: names of the entries in the section (in its order), of those in force and
    # mentioned but left out for length, and the section's tokens (with its separator).
    bible: list[str] = field(default_factory=list)
    bible_omitted: list[str] = field(default_factory=list)
    bible_tokens: int = 0
    # The author's note: its section's tokens (with its separator); 0 when the story has none.
    author_note_tokens: int = 0

    def to_dict(self) -> dict:
        # Only the dataclass fields, so BudgetReport(**report.to_dict()) round-trips through JSON.
        return asdict(self)

    def summary(self) -> str:
        """One sentence for the UI, e.g. "Chapters 1-150 omitted and 151 shortened to fit 3584 tokens",
        then what the story bible added ("; story bible: Juno, Static (Oki left out for length)") and
        whether the author's note went in ("; author's note included")."""
        note = "; author's note included" if self.author_note_tokens else ""
        return self._chapters_summary() + self._bible_summary() + note

    def _bible_summary(self, most: int = 8) -> str:
        if not self.bible and not self.bible_omitted:
            return ""

        def names(items: list[str]) -> str:
            shown = ", ".join(items[:most])
            return shown + (f" and {len(items) - most} more" if len(items) > most else "")

        text = f"; story bible: {names(self.bible)}" if self.bible else "; story bible: no entry fits"
        if self.bible_omitted:
            text += f" ({names(self.bible_omitted)} left out for length)"
        return text

    def _chapters_summary(self) -> str:
        if not self.omitted and not self.shortened:
            if not self.whole:
                return f"No chapters yet; the prompt uses {self.used_tokens} of {self.budget_tokens} tokens"
            count = len(self.whole)
            noun = "chapter fits" if count == 1 else f"{count} chapters fit"
            return (
                f"{'The' if count == 1 else 'All'} {noun} whole "
                f"({self.used_tokens} of {self.budget_tokens} tokens)"
            )
        parts: list[str] = []
        if self.omitted:
            parts.append(f"{_chapters_word(self.omitted)} {_ranges(self.omitted, '-')} omitted")
        if self.shortened:
            numbers = _ranges(self.shortened, "-")
            parts.append(numbers if parts else f"{_chapters_word(self.shortened)} {numbers}")
            parts[-1] += " shortened"
        return " and ".join(parts) + f" to fit {self.budget_tokens} tokens"


@dataclass
class BuiltPrompt:
    messages: list[dict[str, str]]
    report: BudgetReport


@dataclass(frozen=True)
class BibleEntryText:
    """A story bible entry as the prompt shows it (writer.models.StoryBibleEntry, without Django)."""

    name: str
    description: str = ""
    kind: str = "fact"  # character | place | object | fact
    aliases: tuple[str, ...] = ()


@dataclass
class BibleSelection:
    """What a bible selector chose: the entries in the section (in its order), the names mentioned but
    left out for length, and the section itself with its separator ("" when no entry)."""

    entries: list[BibleEntryText] = field(default_factory=list)
    omitted: list[str] = field(default_factory=list)
    block: str = ""


# (the kept text of each chapter in the prompt, by number; the tokens the section may take) -> selection
BibleSelector = Callable[[Mapping[int, str], int], BibleSelection]


def _chapters_word(numbers: Sequence[int]) -> str:
    return "Chapter" if len(numbers) == 1 else "Chapters"


def _ranges(numbers: Sequence[int], dash: str) -> str:
    """[1, 2, 3, 5, 7, 8] -> "1-3, 5, 7-8" (runs of consecutive numbers collapsed)."""
    out: list[str] = []
    ordered = sorted(numbers)
    start = prev = ordered[0]
    for n in [*ordered[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(str(start) if start == prev else f"{start}{dash}{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(out)


def omitted_line(numbers: Sequence[int]) -> str:
    """The one visible line that stands for the chapters left out of the prompt."""
    if len(numbers) == 1:
        return f"[Chapter {numbers[0]} is omitted for length.]"
    return f"[Chapters {_ranges(numbers, '–')} are omitted for length.]"


# ---------------------------------------------------------------------------------------------
# Rendering


def render_metadata(meta: StoryMeta) -> str:
    """The story's metadata as "chapter 0": what the model reads before any chapter."""
    facts = [("Title", meta.title.strip())]
    facts += [("Author", meta.author_name.strip()), ("Genre", meta.genre.strip())]
    tags = ", ".join(t.strip() for t in meta.tags if t.strip())
    facts.append(("Tags", tags))
    lines = ["## Chapter 0: About the story", ""]
    lines += [f"- **{label}:** {value}" for label, value in facts if value]
    for heading, body in (
        ("Summary", meta.summary),
        ("Characters", meta.characters),
        ("Setting", meta.setting),
        ("The author's intent", meta.intent_notes),
    ):
        if body.strip():
            lines += ["", f"### {heading}", "", body.strip()]
    return "\n".join(lines)


_FENCE_RUN = re.compile(r"`{3,}")


def _escape_fences(text: str) -> str:
    # A run of 3+ backticks inside the text could close the ```text block and let the chapter's
    # text pose as prompt structure. Spaced-out backticks read the same to a person but can never
    # form a fence.
    return _FENCE_RUN.sub(lambda m: " ".join("`" * len(m.group(0))), text)


def _chapter_heading(number: int, title: str) -> str:
    title = " ".join(title.split())
    plain = f"Chapter {number}"
    # Imported chapters are often titled just "Chapter 3"; don't print "Chapter 3: Chapter 3".
    if not title or title.lower() == plain.lower():
        return plain
    return f"{plain}: {title}"


def _block(number: int, title: str, body: str) -> str:
    return f"## {_chapter_heading(number, title)}\n\n```text\n{body}\n```"


def render_chapter(ch: ChapterText) -> str:
    """A chapter as a markdown ```text block headed "Chapter N: title"."""
    return _block(ch.number, ch.title, _escape_fences(ch.text.strip()))


BIBLE_HEADING = "## Story bible"
_BIBLE_GROUPS = (
    ("character", "Characters"),
    ("place", "Places"),
    ("object", "Objects"),
    ("fact", "Facts"),
)


def _one_line(text: str) -> str:
    # One line per entry: an entry's text can never open a heading or a fence of its own.
    return _escape_fences(" ".join(text.split()))


def render_bible_entry(entry: BibleEntryText) -> str:
    """One line: "- **Juno Vale** (also: Juno, the courier): A courier in Meridian Stack." """
    line = f"- **{_one_line(entry.name)}**"
    aliases = [_one_line(a) for a in entry.aliases if a.strip()]
    if aliases:
        line += f" (also: {', '.join(aliases)})"
    description = _one_line(entry.description)
    return f"{line}: {description}" if description else line


def _bible_kind(entry: BibleEntryText) -> str:
    return entry.kind if entry.kind in dict(_BIBLE_GROUPS) else "fact"


def bible_order(entries: Sequence[BibleEntryText]) -> list[BibleEntryText]:
    """The entries in the section's order: characters, places, objects, facts; each kind in the order
    given (a selector gives the most relevant first)."""
    rank = {kind: i for i, (kind, _) in enumerate(_BIBLE_GROUPS)}
    return sorted(entries, key=lambda e: rank[_bible_kind(e)])


def render_bible(entries: Sequence[BibleEntryText]) -> str:
    """The "## Story bible" section: the entries grouped by kind (`bible_order`), one line each.
    "" for no entries."""
    if not entries:
        return ""
    lines = [
        BIBLE_HEADING,
        "",
        "What the author's story bible says about who and what the chapters below mention, as it stands "
        "for the chapter you write. Keep to it.",
    ]
    for kind, heading in _BIBLE_GROUPS:
        group = [e for e in entries if _bible_kind(e) == kind]
        if group:
            lines += ["", f"### {heading}", ""]
            lines += [render_bible_entry(e) for e in group]
    return "\n".join(lines)


def bible_block(entries: Sequence[BibleEntryText]) -> str:
    """The section as the prompt holds it (with the separator after it): what a selector must count."""
    section = render_bible(entries)
    return section + _SEP if section else ""


AUTHOR_NOTE_HEADING = "## Author's note"


def render_author_note(note: str) -> str:
    """The "## Author's note" section; "" for an empty note."""
    if not note.strip():
        return ""
    return (
        f"{AUTHOR_NOTE_HEADING}\n\n"
        "The story's author asks this of the chapter you write; keep to it:\n\n"
        f"{note.strip()}"
    )


def _render_preference(preference: str) -> str:
    return (
        "## The reader's preference\n\n"
        "The reader who asked for this chapter would like:\n\n"
        f"{preference.strip()}\n\n"
        "Follow it where it fits the story; the author's intent comes first."
    )


def _render_brand_brief(brand_brief: str) -> str:
    return (
        "## Brand brief\n\n"
        f"{brand_brief.strip()}\n\n"
        "Work this in only where it feels natural to the story and its characters."
    )


def _render_instruction(meta: StoryMeta, next_number: int, last_number: int | None) -> str:
    title = " ".join(meta.title.split())
    if last_number is None:
        context = "It is the opening chapter: start the story the details above describe."
    else:
        context = (
            f"Continue from where Chapter {last_number} ends. Keep the characters, their voices, "
            "the setting and the open plot threads consistent with the chapters above."
        )
    return (
        f'## Your task\n\nWrite Chapter {next_number} of "{title}". {context} '
        f"Think it through between {REASONING_START} and {REASONING_END}, then write the whole "
        f"chapter text between {SOLUTION_START} and {SOLUTION_END}."
    )


# ---------------------------------------------------------------------------------------------
# Sentence splitting: spans into the original text, so a kept part is an exact slice of it.

# Sentence-ending punctuation (with closing quotes/brackets/emphasis) then whitespace; or a line
# break, which ends dialogue lines and headings that carry no full stop.
_BOUNDARY = re.compile(r"""(?P<punct>[.!?…]+["'”’»)\]*_]*)\s+|[ \t]*\n\s*""")
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "mt", "vs", "etc", "e.g", "i.e"}
)
_WORD = re.compile(r"\S+")


def _is_abbreviation(text: str, dot: int) -> bool:
    """Whether the full stop at `dot` ends "Mr", "e.g" or an initial ("J. K. Rowling")."""
    # Only the word before the dot matters: look back a bounded window (40 characters), not the whole
    # text so far, or splitting a long chapter costs the square of its length.
    before = text[max(0, dot - 40) : dot].rsplit(None, 1)
    word = before[-1].lstrip("\"'“‘(") if before else ""
    return word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isupper())


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of `text` (already stripped); ends exclude the whitespace."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        nxt = m.end()
        if nxt >= len(text):
            break
        punct = m.group("punct")
        if punct:
            # '"Run!" she said.' and 'Mr. Hale' are one sentence each.
            if text[nxt].islower():
                continue
            if punct == "." and _is_abbreviation(text, m.start()):
                continue
            end = m.start() + len(punct)
        else:
            end = m.start()
        if end > start:
            spans.append((start, end))
        start = nxt
    spans.append((start, len(text)))
    return spans


def _largest_fitting(lo: int, hi: int, fits: Callable[[int], bool]) -> int:
    """The largest k in [lo, hi] with fits(k), or lo - 1 if none (fits is assumed monotone)."""
    best = lo - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if fits(mid):
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def _shortened_block(
    ch: ChapterText, *, keep_end: bool, room: int, count_tokens: Callable[[str], int]
) -> str | None:
    """The chapter cut at sentence boundaries to fit `room` tokens (block + separator), or None.

    keep_end=True keeps the last sentences (the most recent chapter: the model continues from its
    end); otherwise the opening sentences (an older chapter: how it starts tells what it is about).
    """
    text = _escape_fences(ch.text.strip())
    spans = _sentence_spans(text)
    n = len(spans)

    def cost(body: str) -> int:
        return count_tokens(_block(ch.number, ch.title, body) + _SEP)

    if keep_end:

        def body_sentences(k: int) -> str:
            return f"{BEGINNING_SHORTENED}\n\n{text[spans[n - k][0] :]}"

        last_start, last_end = spans[-1]
    else:
        marker = rest_shortened_marker(ch.number)

        def body_sentences(k: int) -> str:
            return f"{text[: spans[k - 1][1]]}\n\n{marker}"

        last_start, last_end = spans[0]

    # k = n would be the whole chapter plus a marker: it cannot fit where the whole did not.
    k = _largest_fitting(1, n - 1, lambda k: cost(body_sentences(k)) <= room)
    if k >= 1:
        return _block(ch.number, ch.title, body_sentences(k))

    # Not even one sentence fits: cut that sentence at a word boundary, still with the marker,
    # and an ellipsis where the sentence is cut.
    words = [m.span() for m in _WORD.finditer(text, last_start, last_end)]
    if keep_end:

        def body_words(w: int) -> str:
            return f"{BEGINNING_SHORTENED}\n\n{_WORD_CUT}{text[words[-w][0] :]}"
    else:

        def body_words(w: int) -> str:
            return f"{text[: words[w - 1][1]]}{_WORD_CUT}\n\n{marker}"

    # A marker with no words of the chapter says no more than the omitted line: require a word.
    w = _largest_fitting(1, len(words) - 1, lambda w: cost(body_words(w)) <= room)
    if w >= 1:
        return _block(ch.number, ch.title, body_words(w))
    return None


# ---------------------------------------------------------------------------------------------
# Budgeting


@dataclass
class _Plan:
    whole: list[int]  # indexes into the sorted chapters
    shortened: dict[int, str]  # index -> shortened block
    omitted: list[int]


def build_prompt(
    *,
    meta: StoryMeta,
    chapters: Sequence[ChapterText],
    count_tokens: Callable[[str], int],
    budget_tokens: int,
    preference: str = "",
    brand_brief: str = "",
    next_number: int | None = None,
    bible: BibleSelector | None = None,
    author_note: str = "",
) -> BuiltPrompt:
    """The system + user messages for writing the next chapter, within `budget_tokens`.

    `bible`: picks the story bible's entries for the chapters in the prompt, within BIBLE_SHARE of the
    budget (see the module's docstring); None: no story bible section.

    `author_note`: the story's steering text, put whole after the chapters (before the preference, brand
    brief and task); "" (the default, and the training pipeline's dataset): no section, the prompt as before.

    Tokens are counted with `count_tokens` over the system prompt and the user message (chat
    template tokens are not included: leave room for them in the budget). Raises ApplicationError
    when the metadata, author's note, preference, brand brief and instruction alone do not fit.
    """
    ordered = sorted(chapters, key=lambda c: c.number)
    numbers = [c.number for c in ordered]
    last_number = numbers[-1] if numbers else None
    if next_number is None:
        next_number = (last_number or 0) + 1

    head = render_metadata(meta) + _SEP
    tail_parts: list[str] = []
    note_section = render_author_note(author_note)
    if note_section:
        tail_parts.append(note_section)
    if preference.strip():
        tail_parts.append(_render_preference(preference))
    if brand_brief.strip():
        tail_parts.append(_render_brand_brief(brand_brief))
    tail_parts.append(_render_instruction(meta, next_number, last_number))
    tail = _SEP.join(tail_parts)

    system_tokens = count_tokens(SYSTEM_PROMPT)
    note_tokens = count_tokens(note_section + _SEP) if note_section else 0
    fixed = system_tokens + count_tokens(head) + count_tokens(tail)
    if fixed > budget_tokens:
        raise _too_big(fixed, budget_tokens)

    # The omitted line is only known once the plan is; reserve the longest it can be (all but the
    # newest chapter omitted) whenever a plan might need it.
    reserve = count_tokens(omitted_line(numbers[:-1]) + _SEP) if len(numbers) > 1 else 0

    whole_blocks: dict[int, str] = {}
    whole_costs: dict[int, int] = {}

    def whole_cost(i: int) -> int:
        # Each chapter is rendered and counted once, however many times we re-plan.
        if i not in whole_costs:
            whole_blocks[i] = render_chapter(ordered[i])
            whole_costs[i] = count_tokens(whole_blocks[i] + _SEP)
        return whole_costs[i]

    def plan(avail: int) -> _Plan:
        used = 0
        whole: list[int] = []
        shortened: dict[int, str] = {}
        for i in reversed(range(len(ordered))):
            has_older = i > 0
            if used + whole_cost(i) + (reserve if has_older else 0) <= avail:
                whole.append(i)
                used += whole_cost(i)
                continue
            room = avail - used - (reserve if has_older else 0)
            block = _shortened_block(
                ordered[i], keep_end=(i == len(ordered) - 1), room=room, count_tokens=count_tokens
            )
            if block is not None:
                shortened[i] = block
                return _Plan(sorted(whole), shortened, list(range(i)))
            return _Plan(sorted(whole), shortened, list(range(i + 1)))
        return _Plan(sorted(whole), shortened, [])

    def kept_texts(p: _Plan) -> dict[int, str]:
        """The words of each chapter in the plan that the prompt holds (title and text; the kept part of
        a shortened one, without its marker)."""
        texts: dict[int, str] = {}
        for i in p.whole:
            texts[numbers[i]] = f"{ordered[i].title}\n\n{ordered[i].text}"
        for i, block in p.shortened.items():
            body = block[block.index("```text\n") + len("```text\n") : -len("\n```")]
            body = body.replace(BEGINNING_SHORTENED, "").replace(rest_shortened_marker(numbers[i]), "")
            texts[numbers[i]] = f"{ordered[i].title}\n\n{body}"
        return dict(sorted(texts.items()))

    no_bible = BibleSelection()
    bible_cap = 0
    if bible is not None:
        bible_cap = max(0, min(int(budget_tokens * BIBLE_SHARE), budget_tokens - fixed))

    def choose_bible(room: int) -> BibleSelection:
        """The entries mentioned by the chapters that fit `room` less the bible's share."""
        if bible is None or bible_cap == 0:
            return no_bible
        return bible(kept_texts(plan(room - bible_cap)), bible_cap)

    def assemble(p: _Plan, bible_text: str = "") -> str:
        pieces = [head, bible_text]
        if p.omitted:
            pieces.append(omitted_line([numbers[i] for i in p.omitted]) + _SEP)
        kept_whole = set(p.whole)
        for i in range(len(ordered)):
            if i in p.shortened:
                pieces.append(p.shortened[i] + _SEP)
            elif i in kept_whole:
                pieces.append(whole_blocks[i] + _SEP)
        pieces.append(tail)
        return "".join(pieces)

    # Pieces are counted one by one, but a tokenizer may merge across the seams, so the real count
    # of the joined message can differ by a few tokens. Count the final strings exactly; if they
    # overshoot, take the overshoot off the room for chapters and plan again (converges in 1-2).
    slack = 0
    for _ in range(8):
        chosen = choose_bible(budget_tokens - fixed - slack)
        bible_tokens = count_tokens(chosen.block) if chosen.block else 0
        if bible_tokens > bible_cap:  # then a chapter of the plan it chose for could lose its mention
            raise ValueError(f"the story bible took {bible_tokens} tokens, over its share of {bible_cap}")
        # The chapters get what the section left of its share: the plan above, or more.
        p = plan(budget_tokens - fixed - slack - bible_tokens)
        user = assemble(p, chosen.block)
        used = system_tokens + count_tokens(user)
        if used <= budget_tokens:
            break
        slack += used - budget_tokens
    else:
        chosen, bible_tokens = no_bible, 0
        p = _Plan([], {}, list(range(len(ordered))))
        user = assemble(p)
        used = system_tokens + count_tokens(user)
        if used > budget_tokens:
            raise _too_big(used, budget_tokens)

    report = BudgetReport(
        budget_tokens=budget_tokens,
        used_tokens=used,
        whole=[numbers[i] for i in p.whole],
        shortened=sorted(numbers[i] for i in p.shortened),
        omitted=[numbers[i] for i in p.omitted],
        bible=[e.name for e in chosen.entries],
        bible_omitted=list(chosen.omitted),
        bible_tokens=bible_tokens,
        author_note_tokens=note_tokens,
    )
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user},
    ]
    return BuiltPrompt(messages=messages, report=report)


def _too_big(needed: int, budget: int) -> ApplicationError:
    return ApplicationError(
        f"The story details, author's note, reader preference, brand brief and instructions alone take "
        f"{needed} tokens, {needed - budget} more than the prompt budget of {budget} tokens. Shorten the "
        "story's summary, characters, setting or notes (or the author's note, or the preference) and try "
        "again.",
        {"needed_tokens": needed, "budget_tokens": budget, "over_by": needed - budget},
    )
