"""Split a model's answer into its reasoning and the chapter text.

Pure text, no Django: the training pipeline's format reward uses `MATCH_FORMAT` the same way.

The strict format is the seed's regex, unchanged. It is applied with `.search`, as the seed does:
with re.MULTILINE, `^` and `$` match at any line start/end, so the answer may be preceded by other
lines (an R1-style `<think>` block, a stray preamble) as long as `<start_working_out>` starts a
line, and lines after the `</SOLUTION>` line are tolerated. `.match` would instead demand that the
answer start at the first character; the reward and the UI must agree, so both use `format_ok`.

When the strict format does not match, nothing the model wrote is dropped: the best candidate for
the chapter goes to `text`, the rest to `reasoning`, and `warning` says what went wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from writer.prompting import REASONING_END, REASONING_START, SOLUTION_END, SOLUTION_START

MATCH_FORMAT = re.compile(
    rf"^[\s]{{0,}}"
    rf"{REASONING_START}.+?{REASONING_END}.*?"
    rf"{SOLUTION_START}(.+?){SOLUTION_END}"
    rf"[\s]{{0,}}$",
    flags=re.MULTILINE | re.DOTALL,
)

# The same pattern with the reasoning captured too; kept identical otherwise so that it matches
# exactly when MATCH_FORMAT does, at the same place.
_FORMAT_GROUPS = re.compile(
    rf"^[\s]{{0,}}"
    rf"{REASONING_START}(?P<reasoning>.+?){REASONING_END}.*?"
    rf"{SOLUTION_START}(?P<text>.+?){SOLUTION_END}"
    rf"[\s]{{0,}}$",
    flags=re.MULTILINE | re.DOTALL,
)

_FORMAT_WARNING = "The model did not follow the answer format"

# Any of our tags, in any case and with stray spaces ("< SOLUTION >", "</solution>"), plus the
# <think></think> pair that R1-style models write before answering.
_TAG = re.compile(
    r"<\s*(?P<close>/?)\s*(?P<name>think|solution)\s*>|<\s*(?P<wo>start|end)_working_out\s*>",
    flags=re.IGNORECASE,
)
_THINK_BLOCK = re.compile(r"<think>(.*?)</think>", flags=re.DOTALL)


@dataclass(frozen=True)
class ParsedOutput:
    reasoning: str
    text: str
    format_ok: bool
    warning: str = ""


def parse_output(raw: str) -> ParsedOutput:
    if not raw or not raw.strip():
        return ParsedOutput(
            reasoning="", text="", format_ok=False, warning="The model returned an empty answer."
        )

    if MATCH_FORMAT.search(raw) is not None:
        m = _FORMAT_GROUPS.search(raw)
        assert m is not None  # same pattern, only with named groups
        # An R1-style think block before the answer is reasoning too; keep it, first.
        thoughts = [t.strip() for t in _THINK_BLOCK.findall(raw, 0, m.start())]
        text = m.group("text").strip()
        return ParsedOutput(
            reasoning=_join([*thoughts, m.group("reasoning").strip()]),
            text=text,
            format_ok=True,
            # The seed regex accepts a whitespace-only solution; format_ok follows it, but an empty
            # chapter must not pass silently.
            warning="" if text else f"The model's {SOLUTION_START} block is empty.",
        )
    return _salvage(raw)


def _join(parts: list[str]) -> str:
    return "\n\n".join(p for p in parts if p)


def _salvage(raw: str) -> ParsedOutput:
    """Walk the tags with a small state machine and sort every stretch of text into a bucket."""
    reasoning: list[str] = []  # inside <start_working_out>/<think> blocks
    solution: list[str] = []  # inside <SOLUTION>
    before: list[str] = []  # outside any block, before the first closed reasoning block
    after: list[str] = []  # outside any block, after a closed reasoning block
    problems: list[str] = []

    state = "outside"
    reasoning_closed = solution_seen = solution_closed = think_seen = False
    closed_with = REASONING_END  # the tag that ended the reasoning, for the warning
    tags_seen: list[str] = []
    pos = 0

    def put(chunk: str) -> None:
        if state == "reasoning":
            reasoning.append(chunk)
        elif state == "solution":
            solution.append(chunk)
        elif reasoning_closed or solution_closed:
            after.append(chunk)
        else:
            before.append(chunk)

    for tag in _TAG.finditer(raw):
        put(raw[pos : tag.start()])
        pos = tag.end()
        tags_seen.append(tag.group(0))
        name = (tag.group("name") or "").lower()
        opens = _opens(tag)
        if name == "solution":
            if opens:
                state, solution_seen = "solution", True
            elif state == "solution":
                state, solution_closed = "outside", True
        else:  # a reasoning tag: <start_working_out>/<end_working_out> or <think>/</think>
            think_seen = think_seen or name == "think"
            if opens and state != "solution":
                state = "reasoning"
            elif not opens and state == "reasoning":
                state, reasoning_closed, closed_with = "outside", True, tag.group(0)
            elif not opens and state == "outside" and not reasoning_closed and not reasoning:
                # A closing tag with no opening one: the opening was in the prompt (a prefill, or
                # a chat template that starts the answer with <think>). What came before is reasoning.
                reasoning.extend(before)
                before.clear()
                reasoning_closed, closed_with = True, tag.group(0)
    put(raw[pos:])

    if not tags_seen:
        return ParsedOutput(
            reasoning="",
            text=raw.strip(),
            format_ok=False,
            warning=f"{_FORMAT_WARNING}: no {SOLUTION_START} block; showing its raw output.",
        )

    if _wrong_case(tags_seen):
        problems.append("its tags are not written exactly as asked (letter case or spaces)")
    if think_seen:
        problems.append(f"it reasoned in <think> instead of {REASONING_START}")

    reasoning_text = _join([_clean(p) for p in reasoning])
    before_text = _join([_clean(p) for p in before])
    after_text = _join([_clean(p) for p in after])
    solution_text = _join([_clean(p) for p in solution])

    if solution_seen and solution_text:
        if not solution_closed:
            problems.append(f"its {SOLUTION_START} block was never closed (the answer may be cut off)")
        if not reasoning_text:
            problems.append(f"it gave no {REASONING_START} reasoning")
        elif not reasoning_closed:
            problems.append(f"its reasoning was never closed with {REASONING_END}")
        if before_text or after_text:
            problems.append(f"it wrote text outside {SOLUTION_START}, kept with the reasoning")
        return ParsedOutput(
            reasoning=_join([before_text, reasoning_text, after_text]),
            text=solution_text,
            format_ok=False,
            warning=_warning(problems, f"showing the text inside its {SOLUTION_START} tag"),
        )

    if solution_seen:
        problems.insert(0, f"its {SOLUTION_START} block is empty")
    else:
        problems.insert(0, f"no {SOLUTION_START} block")

    if reasoning_closed and after_text:
        # The usual small-model slip: reasoning, then the chapter without the SOLUTION tags.
        return ParsedOutput(
            reasoning=_join([before_text, reasoning_text]),
            text=after_text,
            format_ok=False,
            warning=_warning(problems, f"showing the text after {closed_with}"),
        )
    if reasoning_closed:
        # Only reasoning: it is kept, but it is not a chapter; the empty text says so honestly.
        return ParsedOutput(
            reasoning=_join([before_text, reasoning_text]),
            text="",
            format_ok=False,
            warning=_warning(problems, "it wrote only its reasoning and no chapter text"),
        )
    # Reasoning never closed (often: ran out of tokens) or only stray tags: the whole output, tags
    # removed, is the best guess at the chapter.
    if reasoning and not reasoning_closed:
        problems.append(f"its reasoning was never closed with {REASONING_END}")
    return ParsedOutput(
        reasoning="",
        text=_clean(raw),
        format_ok=False,
        warning=_warning(problems, "showing its raw output"),
    )


# -- writing the format (the two-phase answer of writer.engines) -----------------------------------

# A sentence ends at . ! ? or … (a run of them), then any closing quotes or brackets, then a space or
# the end: '"Run!" she said.' ends twice, "3.5" never.
SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s|$)")
# What most sentences end with when more text follows on their line. An answer asked to stop after one
# sentence stops after the first of these (or at a line break); three, as vLLM takes at most four stop
# texts with the line break. A sentence that ends in a closing quote ('"Go." She') runs on to the next
# one, and the dot of "Mr. " stops it too: first_sentence_end finds where the first sentence really ends.
SENTENCE_STOPS = (". ", "! ", "? ")
# Words that end in a dot without ending the sentence ("Mr. Hale"): a cut is never made after them,
# nor after an initial ("J. Vale").
_NO_END_BEFORE = frozenset({"mr", "mrs", "ms", "dr", "st", "mt", "prof", "sr", "jr", "vs"})
# What an empty reasoning or chapter becomes: the format asks for at least one character in a block.
_EMPTY_BLOCK = "\n"


def strip_tags(text: str) -> str:
    """`text` without any of the answer's tags (in any case or spacing), so that a piece the model
    wrote cannot open or close a block of the answer it is put into."""
    return _TAG.sub("", text)


def _ends_sentence(text: str, m: re.Match[str]) -> bool:
    """Whether SENTENCE_END's match `m` in `text` ends a sentence (not the dot of "Mr." or "J.")."""
    if m.group(0).rstrip("\"'”’)]") != ".":
        return True
    before = text[: m.start()].rsplit(None, 1)
    word = before[-1].lstrip("\"'“‘(").lower() if before else ""
    return not (word in _NO_END_BEFORE or (len(word) == 1 and word.isalpha()))


def sentence_ends(text: str) -> list[int]:
    """Where each sentence of `text` ends (the index after its end mark and closing quotes), in order;
    the dot of "Mr." or of an initial ends none."""
    return [m.end() for m in SENTENCE_END.finditer(text) if _ends_sentence(text, m)]


def first_sentence_end(text: str) -> int | None:
    """Where the first sentence of `text` ends (the index after its end mark and closing quotes), or
    None when no sentence ends in it."""
    return next((m.end() for m in SENTENCE_END.finditer(text) if _ends_sentence(text, m)), None)


def shorten_to_sentence(text: str) -> str | None:
    """`text` cut after its last complete sentence (trailing space dropped), or None when it has
    no sentence end at all (one unfinished sentence: nothing sensible to keep)."""
    ends = sentence_ends(text)
    return text[: ends[-1]].rstrip() if ends else None


def reasoning_block(reasoning: str) -> str:
    """The answer up to where its chapter starts: the reasoning, closed, and the chapter's tag opened.

    The reasoning is the model's own text with any tag taken out (an empty one still gives the block
    the one character the format asks for)."""
    body = strip_tags(reasoning).rstrip() or _EMPTY_BLOCK
    return f"{REASONING_START}{body}{REASONING_END}\n{SOLUTION_START}"


def answer_text(block: str, chapter: str) -> str:
    """The whole answer: `block` (from reasoning_block) and the chapter, closed. Always `format_ok`."""
    body = strip_tags(chapter).rstrip() or _EMPTY_BLOCK
    return f"{block}{body}{SOLUTION_END}"


def _opens(tag: re.Match[str]) -> bool:
    if tag.group("wo"):
        return tag.group("wo").lower() == "start"
    return tag.group("close") == ""


def _wrong_case(tags: list[str]) -> bool:
    exact = {REASONING_START, REASONING_END, SOLUTION_START, SOLUTION_END, "<think>", "</think>"}
    return any(t not in exact for t in tags)


def _clean(chunk: str) -> str:
    return _TAG.sub("", chunk).strip()


def _warning(problems: list[str], showing: str) -> str:
    return f"{_FORMAT_WARNING}: {'; '.join(problems)}; {showing}."
