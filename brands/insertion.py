"""Write first, then place: the pieces that put a brand asset into a chapter written without it.

GEM-Bench found that readers prefer an advert inserted into an ad-free draft over one asked for in the
prompt. So a branded option is written like any other, and then: the passage where the asset fits best is
chosen (sentence embeddings of the draft's passages against the asset), the writer rewrites only that
passage so that it names the asset by one of its exact terms, and the result is checked (the term is
there, the rewrite is about as long as the passage, the brand's cap holds) before it replaces the passage.
Everything outside the passage stays the draft's, character for character, by construction.

Two styles of rewrite (BRAND_PLACEMENT_STYLE):
- "sentence" (the default): the passage stays as written and the writer adds one sentence at its end,
  continuing the chapter from the asset's term (the answer is prefilled with the chapter up to the
  passage's end and the term). Measured on SmolLM2-135M: a small model does not follow "rewrite this so
  that it names X" (2 of 27 candidates named the asset), but it continues a sentence it is given.
- "passage": the writer rewrites the whole passage from instructions (a larger writer's job).
Of the candidates that pass the checks, the one nearest in meaning to the passage as written wins.

Pure text, no Django: `brands.matching` runs it with the writer's engine and the brand's embedder.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from brands.placements import find_mentions
from writer.parsing import SENTENCE_STOPS, first_sentence_end, sentence_ends
from writer.quality import rouge_l

PASSAGE_REWRITE_TOKENS = 320  # a passage of at most MAX_PASSAGE_WORDS words, rewritten
SENTENCE_TOKENS = 48  # one added sentence
SENTENCE_WORDS = (6, 40)  # an added sentence of fewer words is a fragment; of more, a run-on
CONTINUE_CONTEXT_CHARS = 1200  # the chapter before the added sentence, in the prefilled answer
SIMILARITY_CONTEXT_CHARS = 600  # BERTScore compares the rewritten passage with this much text either side
PASSAGE_OPEN, PASSAGE_CLOSE = "<PASSAGE>", "</PASSAGE>"
MIN_PASSAGE_WORDS = 12  # shorter paragraphs (a line of dialogue) are joined with the next
MAX_PASSAGE_WORDS = 120  # longer ones are cut at sentence ends: a rewrite of a short passage stays close
LENGTH_RANGE = (0.6, 1.8)  # the rewrite's words against the passage's: outside it, the model wrote something else

_PARAGRAPH = re.compile(r"\S(?:.*?\S)?(?=\n\s*\n|\s*\Z)", re.DOTALL)
# A sentence: up to its end mark (and a closing quote or bracket), or the end of the text.
_SENTENCE = re.compile(r"[^.!?…]*(?:[.!?…]+[\"'”’)\]]*|$)")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Passage:
    start: int  # character offsets into the draft
    end: int
    text: str

    @property
    def words(self) -> int:
        return len(_WORD.findall(self.text))


def passages(draft: str) -> list[Passage]:
    """The draft cut into passages of MIN..MAX_PASSAGE_WORDS words: its paragraphs, short ones joined to
    the next, long ones cut at sentence ends. Offsets index the draft, so a passage can be replaced
    without touching anything around it."""
    pieces: list[Passage] = []
    for match in _PARAGRAPH.finditer(draft):
        pieces += _cut_long(draft, match.start(), match.end())
    joined: list[Passage] = []
    for piece in pieces:
        if joined and joined[-1].words < MIN_PASSAGE_WORDS:
            last = joined.pop()
            piece = Passage(last.start, piece.end, draft[last.start : piece.end])
        joined.append(piece)
    if len(joined) > 1 and joined[-1].words < MIN_PASSAGE_WORDS:
        tail = joined.pop()
        last = joined.pop()
        joined.append(Passage(last.start, tail.end, draft[last.start : tail.end]))
    return joined


def _cut_long(draft: str, start: int, end: int) -> list[Passage]:
    """A paragraph of more than MAX_PASSAGE_WORDS words, cut at sentence ends into pieces of about half
    that (the last piece takes what is left)."""
    text = draft[start:end]
    if len(_WORD.findall(text)) <= MAX_PASSAGE_WORDS:
        return [Passage(start, end, text)]
    cuts: list[Passage] = []
    piece_start = 0
    for sentence in _SENTENCE.finditer(text):
        if len(_WORD.findall(text[piece_start : sentence.end()])) >= MAX_PASSAGE_WORDS // 2:
            cuts.append(Passage(start + piece_start, start + sentence.end(), text[piece_start : sentence.end()]))
            rest = text[sentence.end() :]
            piece_start = sentence.end() + len(rest) - len(rest.lstrip())
    if piece_start < len(text):
        cuts.append(Passage(start + piece_start, end, text[piece_start:]))
    return cuts


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def ranked_passages(
    candidates: Sequence[Passage], asset_text: str, *, embed: Callable[[list[str]], list[list[float]]]
) -> list[tuple[int, float]]:
    """(index, cosine similarity) of the passages, nearest in meaning to the asset (its kind, name and
    description) first. The first passage of a chapter sets the scene: it comes after the others, unless
    it is the only one. A passage that does not end in a sentence of prose (a list of one-word lines, a
    heading) comes after every one that does: the writer goes on in the form it is given, so after
    "Sky. / Blue Eagle. / Marble." it adds another item, never a sentence (measured on SmolLM2: every
    candidate of every round)."""
    if not candidates:
        raise ValueError("a draft with no passage cannot carry a placement")
    vectors = embed([asset_text, *(p.text for p in candidates)])
    scores = [_cosine(vectors[0], v) for v in vectors[1:]]

    def rank(i: int) -> tuple[bool, bool, float, int]:
        return (ends_in_prose(candidates[i].text), i != 0 or len(candidates) == 1, scores[i], -i)

    return [(i, scores[i]) for i in sorted(range(len(candidates)), key=rank, reverse=True)]


def ends_in_prose(text: str) -> bool:
    """Whether the last line of `text` is prose that a sentence can follow: at least SENTENCE_WORDS[0]
    words, ending with a sentence's end mark."""
    last_line = text.rstrip().rsplit("\n", 1)[-1]
    return sentence_ends(last_line)[-1:] == [len(last_line)] and len(_WORD.findall(last_line)) >= SENTENCE_WORDS[0]


def closest(reference: str, texts: Sequence[str], *, embed: Callable[[list[str]], list[list[float]]]) -> int:
    """The index of the text of `texts` nearest in meaning to `reference`."""
    vectors = embed([reference, *texts])
    return max(range(len(texts)), key=lambda i: _cosine(vectors[0], vectors[i + 1]))


def best_passage(
    candidates: Sequence[Passage], asset_text: str, *, embed: Callable[[list[str]], list[list[float]]]
) -> tuple[int, float]:
    """The first of `ranked_passages`: the index of the passage where the asset fits best, and its score."""
    return ranked_passages(candidates, asset_text, embed=embed)[0]


@dataclass(frozen=True)
class RewritePrompt:
    """What the writer is asked for one placement: the chat, the text its answer starts with (the writer
    continues it), and where the answer ends."""

    messages: list[dict[str, str]]
    prefill: str = ""
    max_tokens: int = PASSAGE_REWRITE_TOKENS
    stop: tuple[str, ...] = (PASSAGE_CLOSE,)
    stop_after: tuple[str, ...] = ()  # the answer ends after one of these, kept (Sampling.stop_after)
    one_line: bool = False  # the answer never breaks its line (Sampling.one_line)


def sentence_prompt(*, draft: str, passage: Passage, term: str) -> RewritePrompt:
    """Ask the writer to go on from the end of `passage` with a sentence that starts with `term`."""
    system = "You are a novelist. You continue the chapter in its own voice."
    before = draft[: passage.end]
    excerpt = before[-CONTINUE_CONTEXT_CHARS:]
    if len(excerpt) < len(before):  # start the excerpt at a word
        excerpt = excerpt[excerpt.find(" ") + 1 :]
    return RewritePrompt(
        messages=[{"role": "system", "content": system}, {"role": "user", "content": "Continue the chapter."}],
        prefill=f"{excerpt} {term}",
        max_tokens=SENTENCE_TOKENS,
        stop=("\n",),
        stop_after=SENTENCE_STOPS,  # one sentence is all that is used: the writer stops at its end
        # SmolLM2 ended half its candidates with a line break straight after the term (a line of its
        # own, "never ended"): the sentence must go on on its line.
        one_line=True,
    )


def added_sentence(answer: str, prompt: RewritePrompt, term: str) -> str:
    """The sentence a `sentence_prompt` answer adds: the term and the writer's words up to the first
    sentence end ("" when the sentence never ends). A provider that did not continue the prefilled
    answer wrote a fresh one: its first sentence that names the term, if any."""
    if answer.startswith(prompt.prefill):
        rest = answer[len(prompt.prefill) :]
        end = first_sentence_end(f"{term}{rest}")
        return f"{term}{rest}"[:end].strip() if end else ""
    for sentence in _SENTENCE.finditer(answer):
        if term in sentence.group(0) and first_sentence_end(sentence.group(0)):
            return sentence.group(0).strip()
    return ""


def rewrite_messages(
    *, passage: Passage, before: str, after: str, term: str, asset_line: str, brand_line: str, hint: str
) -> list[dict[str, str]]:
    """The chat that asks the writer to rewrite only `passage` so that it names the asset as `term`."""
    system = (
        "You are a fiction editor. You rewrite one passage of a chapter so that it mentions a product "
        "naturally, in the story's own voice, without changing what happens. Answer with the rewritten "
        f"passage only, between {PASSAGE_OPEN} and {PASSAGE_CLOSE}."
    )
    user = (
        f"The chapter so far ends with:\n{before[-600:]}\n\n"
        f"The passage to rewrite:\n{PASSAGE_OPEN}{passage.text}{PASSAGE_CLOSE}\n\n"
        f"It is followed by:\n{after[:300]}\n\n"
        f"Rewrite the passage so that it names {term!r} exactly once ({asset_line}). {brand_line} "
        f"{hint} Keep the same events, characters and length; add no new scene; no advertising tone."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def rewritten_passage(answer: str) -> str:
    """The passage inside the answer's tags (a missing closing tag: up to the end); "" when the answer
    has no opening tag and is not plain prose either."""
    opened = answer.find(PASSAGE_OPEN)
    body = answer[opened + len(PASSAGE_OPEN) :] if opened >= 0 else answer
    closed = body.find(PASSAGE_CLOSE)
    body = body[:closed] if closed >= 0 else body
    return body.strip()


@dataclass(frozen=True)
class Placed:
    text: str  # the draft with the passage replaced
    passage: Passage  # the draft's passage that was replaced
    rewrite: str  # what replaced it
    spans: list[list[int]]  # [[start, end]] of the asset's mentions in `text`


def place(
    draft: str,
    passage: Passage,
    rewrite: str,
    *,
    terms: Sequence[str],
    cap: int,
    length_range: tuple[float, float] = LENGTH_RANGE,
) -> Placed:
    """`draft` with `passage` replaced by `rewrite`, checked: the rewrite names the asset (an exact term;
    a near miss is not a placement a brand approved), is 0.6-1.8x the passage's length, and the whole
    text names it at most `cap` times. ValueError saying what failed."""
    rewrite = rewrite.strip()
    if not rewrite:
        raise ValueError("the writer returned no passage")
    ratio = len(_WORD.findall(rewrite)) / max(passage.words, 1)
    if not length_range[0] <= ratio <= length_range[1]:
        raise ValueError(f"the rewrite is {ratio:.1f}x the passage's length")
    if not any(m.exact for m in find_mentions(rewrite, terms)):
        raise ValueError("the rewrite does not name the asset")
    text = draft[: passage.start] + rewrite + draft[passage.end :]
    mentions = [m for m in find_mentions(text, terms) if m.exact]
    if len(mentions) > cap:
        raise ValueError(f"the chapter would name the brand {len(mentions)} times; its cap is {cap}")
    return Placed(text=text, passage=passage, rewrite=rewrite, spans=[[m.start, m.end] for m in mentions])


def add_sentence(draft: str, passage: Passage, sentence: str, *, terms: Sequence[str], cap: int) -> Placed:
    """`draft` with `sentence` added at the end of `passage` (the passage itself kept), checked: the
    sentence names the asset by an exact term, has SENTENCE_WORDS words, and the whole text names it at
    most `cap` times. ValueError saying what failed."""
    sentence = " ".join(sentence.split())
    if not sentence:
        raise ValueError("the writer's sentence never ended")
    words = len(_WORD.findall(sentence))
    if not SENTENCE_WORDS[0] <= words <= SENTENCE_WORDS[1]:
        raise ValueError(f"the added sentence has {words} words")
    rewrite = f"{passage.text.rstrip()} {sentence}"
    return place(draft, passage, rewrite, terms=terms, cap=cap, length_range=(0.0, math.inf))


def placement_similarity(
    *, text: str, draft: str, passage: tuple[int, int], bertscore: Callable[[str, str], float]
) -> dict[str, float]:
    """How close the placed chapter stays to its draft: ROUGE-L F1 of the whole texts, and BERTScore F1
    (`bertscore(candidate, reference)`) of the rewritten passage with SIMILARITY_CONTEXT_CHARS either
    side against the same stretch of the draft (BERTScore's MiniLM reads ~380 words: over a whole
    chapter it would miss a passage near the end; the text outside the window is the draft's anyway).
    `passage` is the [start, end) of the rewrite in `text`; the draft's passage starts at the same place."""
    start, end = passage
    draft_end = len(draft) - (len(text) - end)
    left = max(0, start - SIMILARITY_CONTEXT_CHARS)
    window = text[left : end + SIMILARITY_CONTEXT_CHARS]
    draft_window = draft[left : draft_end + SIMILARITY_CONTEXT_CHARS]
    return {"rouge_l": round(rouge_l(text, draft), 4), "bertscore": round(bertscore(window, draft_window), 4)}
