"""Pairwise judge: which of two candidate next chapters is closer to the one the author really wrote?

For each held-out pair, a judge model reads the story so far (the pair's prompt chapters, trimmed to
a budget), the REAL chapter k+1 and two candidates, and names the one closer to the real chapter in
plot, characters and voice. Each pair is asked twice, the candidates swapped (target shown as A, then
as B), to cancel the judge's position bias. Two modes read the answers:

**logprobs** (the default). The judge's first answer token is not generated but scored: the engine's
`choice_logprobs` gives the log-probability of "A" and of "B" (each summed over the tokens that spell
it, " A" too) right after the chat template's generation prompt. Per order, p = P(target's letter) /
(P(A) + P(B)), with the target's letter A in the first order and B in the second; the pair's
`preference` is the mean of the two orders' p (`pair_preference`). A judge that adds the same
probability to whichever letter is shown first adds it to one order's p and takes it from the other's,
so the bias cancels and a slight preference for the target still shows: a win when the preference is
above 0.5 + PREFERENCE_EPS, a loss below 0.5 - PREFERENCE_EPS, a tie between (`preference_outcome`).
An order where the engine saw neither letter (a provider's top log-probs hold neither) has no verdict,
and neither has its pair. The verdicts keep each order's normalised P(A) and P(B), and the summary the
`mean_preference`, the `mean_letter_mass` (P(A) + P(B) before normalising: how much the judge meant to
answer with a letter at all) and `letters_absent` (letters the engine could not see, given a floor).
Serve the judge in float32: a bfloat16 server's log-probabilities come in steps (the gap between "A"
and "B" moved by 0.125 at a time on the GPU run of 2026-12-07), so two chapters the judge tells apart a
little get the same gap in both orders, a tie (49 of 79 pairs there).

**letters** (the judge's generated answer, `parse_verdict`; what the first GPU run used, where the
judge named whichever candidate was shown first in 100 % of answers, so that every pair was a tie):

- both orders pick the target: a win; both pick the baseline: a loss;
- the orders disagree (the judge picked a position, not a chapter): a tie;
- either answer has no verdict (no "A"/"B" found, see `parse_verdict`): the pair has no verdict. A
  single order cannot cancel position bias, so half an answer decides nothing; the unreadable answers
  are counted too (`answers_no_verdict`).

In both modes the win rate is wins / (wins + losses), over the decisive pairs, with a 95 % Wilson score
interval (`wilson_interval`); ties are reported apart (and `win_rate_ties_half` counts them as half a
win over wins + losses + ties, for readers who want that convention). `first_position_share` is the
share of orders that favoured whichever candidate was shown first (letters: the readable answers that
named A; logprobs: the orders where P(A) > P(B)): ~0.5 for an unbiased judge.

The judge runs through the writer engine interface (`WriterEngine.choice_logprobs`, or `generate` for
letters), so a vLLM server (GPU or CPU), an OpenAI-compatible provider that returns log-probabilities
(else use letters) or the in-process transformers engine can judge; letters are greedy (temperature 0)
with a few tokens of answer. Importable without Django: the prompt, the verdict parsing, the
preference and the statistics are pure functions.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from mesu_web.errors import ApplicationError
from training.dataset import Pair
from training.distill import existing_chapters_of
from training.evaluation import map_ordered
from writer.engines.base import (
    JUDGE_CHOICES,
    Adapter,
    ChoiceLogprobs,
    Message,
    Sampling,
    WriterEngine,
    logsumexp,
)
from writer.parsing import parse_output
from writer.prompting import ChapterText, render_chapter

Verdict = Literal["A", "B"]
Outcome = Literal["win", "loss", "tie", "no_verdict"]
Mode = Literal["logprobs", "letters"]
MODES: tuple[Mode, ...] = ("logprobs", "letters")
# A preference this close to 0.5 is a tie: the two orders' float sums cannot tell the candidates apart.
PREFERENCE_EPS = 1e-6

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile: a two-sided 95 % interval
# Budgets in the judge's tokens. The story, the real chapter and two candidates must fit the judge's
# window with room to spare: 1200 + 3 x 600 + ~250 of instructions = ~3250 of the writer's 4096.
STORY_TOKENS = 1200
CHAPTER_TOKENS = 600
VERDICT_TOKENS = 8  # "A", "Candidate B", "**A**": a verdict needs a few tokens, never a paragraph
# Of the story's budget, the share kept from its start (chapter 0: title, summary, characters); the
# rest goes to its end (the latest chapters, which the next one continues).
STORY_HEAD_SHARE = 0.25

JUDGE_SYSTEM_PROMPT = (
    "You are an experienced fiction editor. You compare two candidate next chapters of a story with "
    "the chapter its author really wrote next, and say which candidate is closer to it. You answer "
    "with a single letter."
)
_TASK = (
    "# Your task\n\n"
    "Which candidate, A or B, is closer to the chapter the author really wrote next, in plot (what "
    "happens), characters (who appears and how they act) and voice (style, tone, point of view)? "
    "Ignore length and polish. Answer with one letter only: A or B."
)


# ---------------------------------------------------------------------------------------------
# The prompt


def _words(text: str) -> list[re.Match[str]]:
    return list(re.finditer(r"\S+", text))


def _largest(lo: int, hi: int, fits: Callable[[int], bool]) -> int:
    """The largest w in [lo, hi] with fits(w), given fits is monotone and fits(lo) (binary search)."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def words_count_tokens(text: str) -> int:
    """A tokenizer-free estimate: 4 tokens per 3 words (English prose in a BPE tokenizer)."""
    return math.ceil(len(text.split()) * 4 / 3)


def trim_head(text: str, budget: int, count_tokens: Callable[[str], int] = words_count_tokens) -> str:
    """`text` whole when it fits `budget` tokens, else its first words that fit, and a marker."""
    text = text.strip()
    if count_tokens(text) <= budget:
        return text
    words = _words(text)

    def cut(w: int) -> str:
        return f"{text[: words[w - 1].end()] if w else ''} […]".strip()

    return cut(_largest(0, len(words), lambda w: w == 0 or count_tokens(cut(w)) <= budget))


def trim_story(
    text: str,
    budget: int,
    count_tokens: Callable[[str], int] = words_count_tokens,
    head_share: float = STORY_HEAD_SHARE,
) -> str:
    """The story so far within `budget` tokens: whole when it fits, else its start (`head_share` of
    the budget: the metadata) and its end (the latest chapters), with a marker where words were left
    out."""
    text = text.strip()
    if count_tokens(text) <= budget:
        return text
    words = _words(text)
    head_budget = int(budget * head_share)
    head_words = _largest(
        0, len(words), lambda w: w == 0 or count_tokens(text[: words[w - 1].end()]) <= head_budget
    )
    head = text[: words[head_words - 1].end()] if head_words else ""

    def joined(tail_words: int) -> str:
        left_out = len(words) - head_words - tail_words
        tail = text[words[len(words) - tail_words].start() :] if tail_words else ""
        return f"{head}\n\n[… {left_out} words left out …]\n\n{tail}".strip()

    tail_words = _largest(0, len(words) - head_words, lambda w: w == 0 or count_tokens(joined(w)) <= budget)
    return joined(tail_words)


def judge_messages(*, story: str, real: str, first: str, second: str, next_number: int) -> list[Message]:
    """The judge's chat: the story so far (as the writer's prompt renders it: chapter 0's notes and
    the chapters in fenced blocks), the real chapter `next_number`, candidate A (`first`) and
    candidate B (`second`), then the question. `render_chapter` keeps a chapter's own backticks from
    closing its block."""
    parts = [
        "# The story so far\n\n" + story.strip(),
        "# The chapters to compare",
        render_chapter(ChapterText(next_number, "what the author really wrote", real)),
        render_chapter(ChapterText(next_number, "candidate A", first)),
        render_chapter(ChapterText(next_number, "candidate B", second)),
        _TASK,
    ]
    return [
        {"role": "system", "content": JUDGE_SYSTEM_PROMPT},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


# ---------------------------------------------------------------------------------------------
# The verdict

# Only the start of an answer is read: a verdict comes first, and a long answer that mentions both
# letters further on is an essay, not a verdict.
VERDICT_READ_CHARS = 200
# "Candidate B", "Answer: A", "option (b)", "Chapter A" (the letter in any case after a label).
_LABELLED = re.compile(
    r"\b(?:candidate|answer|option|chapter|verdict|choice)\s*[:\-]?\s*[\(\[\"'*]*([ab])\b", re.IGNORECASE
)
# A capital A or B standing alone ("B", "**A**", "(B).", "A is closer").
_LONE = re.compile(r"(?<![A-Za-z0-9])([AB])(?![A-Za-z0-9])")
# After a lone capital A, these words make it the article ("A close call", "A chapter that ..."),
# unless the word is one a verdict goes on with ("A is closer", "A, because ...").
_VERDICT_WORDS = frozenset(
    "is was wins seems matches fits follows reads stays keeps captures better closer and or because".split()
)


def parse_verdict(answer: str) -> Verdict | None:
    """The verdict, "A" or "B", from a judge's short answer, None when it gives neither: a lone letter
    in any case, else the first labelled letter ("Candidate B", "Answer: a") or capital A or B standing
    alone that is not the article "A" ("A close call"), in the answer's first VERDICT_READ_CHARS
    characters."""
    head = (answer or "")[:VERDICT_READ_CHARS]
    whole = re.sub(r"[\W_]+", "", head)
    if whole in ("a", "b"):  # a lone lowercase letter is the whole answer ("b.")
        return whole.upper()  # type: ignore[return-value]
    labelled = _LABELLED.search(head)
    lone = None
    for m in _LONE.finditer(head):
        if m.group(1) == "A":
            after = re.match(r"\s+([a-z]+)", head[m.end() :])
            if after and after.group(1) not in _VERDICT_WORDS:
                continue  # the article
        lone = m
        break
    found = [m for m in (labelled, lone) if m is not None]
    if not found:
        return None
    first = min(found, key=lambda m: m.start(1))
    return first.group(1).upper()  # type: ignore[return-value]


def pair_outcome(target_first: Verdict | None, target_second: Verdict | None) -> Outcome:
    """The pair's outcome from its two answers: `target_first` answered with the target shown as A,
    `target_second` with it shown as B (see the module docstring)."""
    if target_first is None or target_second is None:
        return "no_verdict"
    picked_target = (target_first == "A", target_second == "B")
    if all(picked_target):
        return "win"
    if not any(picked_target):
        return "loss"
    return "tie"


# ---------------------------------------------------------------------------------------------
# The preference (logprobs mode)


def letter_probabilities(logprobs: Mapping[str, float]) -> tuple[float, float] | None:
    """P(A), P(B) normalised over the two letters from their log-probabilities; None when neither has
    any (both -inf or not finite): the order has no verdict."""
    a, b = logprobs["A"], logprobs["B"]
    if math.isnan(a) or math.isnan(b):
        return None
    total = logsumexp([a, b])
    if not math.isfinite(total):
        return None
    return math.exp(a - total), math.exp(b - total)


def pair_preference(
    target_first: tuple[float, float] | None, target_second: tuple[float, float] | None
) -> float | None:
    """The judge's preference for the target, 0..1: the mean over the two orders of P(target's letter)
    (normalised (P(A), P(B)) of each order: the target is A in `target_first`, B in `target_second`).
    None when either order has no verdict."""
    if target_first is None or target_second is None:
        return None
    return (target_first[0] + target_second[1]) / 2


def preference_outcome(preference: float | None, eps: float = PREFERENCE_EPS) -> Outcome:
    """A win above 0.5 + eps, a loss below 0.5 - eps, a tie between; no verdict without a preference."""
    if preference is None:
        return "no_verdict"
    if preference > 0.5 + eps:
        return "win"
    if preference < 0.5 - eps:
        return "loss"
    return "tie"


def favoured_letter(probabilities: tuple[float, float] | None) -> Verdict | None:
    """The letter an order gives the higher probability; None without a verdict or when both are equal."""
    if probabilities is None or probabilities[0] == probabilities[1]:
        return None
    return "A" if probabilities[0] > probabilities[1] else "B"


# ---------------------------------------------------------------------------------------------
# The statistics


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion successes / n (Wilson 1927; Newcombe 1998, method 3,
    without continuity correction). (0.0, 1.0) when n is 0: nothing is known."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError("successes must be between 0 and n")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # At 0 or n successes the bound is exactly 0 or 1; the float sum would miss it by an ulp.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def summarize(
    outcomes: Sequence[Outcome],
    answers: Sequence[Verdict | None] = (),
    preferences: Sequence[float | None] | None = None,
) -> dict[str, Any]:
    """The summary of a judged run: counts, the win rate over decisive pairs and its 95 % Wilson
    interval (None, None when no pair was decisive), the ties-as-half rate, and from the single
    `answers` (in the order they were shown: A then B for each pair's two questions, target first)
    the unreadable ones and the share that chose the first position. In logprobs mode, `answers` are
    each order's `favoured_letter` and `preferences` each pair's `pair_preference`: their mean (over
    the pairs with one; None when none has) is `mean_preference`."""
    wins, losses, ties = (sum(o == kind for o in outcomes) for kind in ("win", "loss", "tie"))
    decisive = wins + losses
    rate = round(wins / decisive, 4) if decisive else None
    ci = [round(v, 4) for v in wilson_interval(wins, decisive)] if decisive else None
    judged = decisive + ties
    readable = [a for a in answers if a is not None]
    summary = {
        "pairs": len(outcomes),
        "wins": wins,
        "losses": losses,
        "ties": ties,
        "no_verdict": sum(o == "no_verdict" for o in outcomes),
        "win_rate": rate,
        "ci95": ci,
        "win_rate_ties_half": round((wins + ties / 2) / judged, 4) if judged else None,
        "answers_no_verdict": sum(a is None for a in answers),
        "first_position_share": (
            round(sum(a == "A" for a in readable) / len(readable), 4) if readable else None
        ),
    }
    if preferences is not None:
        known = [p for p in preferences if p is not None]
        summary["mean_preference"] = round(sum(known) / len(known), 4) if known else None
    return summary


# ---------------------------------------------------------------------------------------------
# The run


def read_answers(path: Path | str) -> dict[tuple[str, int], str]:
    """The answers file of one target (`evaluate_adapter --answers-out`): a JSON object a line with
    `book`, `k` (an integer) and `text`, keyed by (book, k). ApplicationError naming the line on a bad
    one, or on a pair answered twice."""
    path = Path(path)
    if not path.is_file():
        raise ApplicationError(f"No answers file at {path}.")
    answers: dict[tuple[str, int], str] = {}
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
                book, k, text = str(row["book"]), row["k"], row["text"]
                if not isinstance(k, int) or isinstance(k, bool) or not isinstance(text, str):
                    raise ValueError("`k` must be an integer and `text` a string")
            except (ValueError, KeyError) as exc:
                raise ApplicationError(f"{path}, line {number}: not an answer ({exc}).") from exc
            if (book, k) in answers:
                raise ApplicationError(f"{path}, line {number}: {book} k={k} is answered twice.")
            answers[(book, k)] = text
    return answers


def matched_candidates(
    pairs: Sequence[Pair], answers_a: dict[tuple[str, int], str], answers_b: dict[tuple[str, int], str]
) -> tuple[list[Pair], list[str], list[str]]:
    """The pairs both targets answered, in the pairs' order, with the two answers of each."""
    kept = [p for p in pairs if (p.book, p.k) in answers_a and (p.book, p.k) in answers_b]
    return kept, [answers_a[(p.book, p.k)] for p in kept], [answers_b[(p.book, p.k)] for p in kept]


@dataclass
class JudgeResult:
    # Per pair: book, k, each order's record (letters: the raw answer and its verdict; logprobs: the
    # normalised p_a, p_b, the letters' logprobs and mass), the preference (logprobs) and the outcome.
    verdicts: list[dict[str, Any]]
    summary: dict[str, Any]  # `summarize`'s (logprobs: with mean_letter_mass and letters_absent)
    model: str = ""
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    mode: Mode = "logprobs"


def judge_engine(*, engine: str | None = None, model: str | None = None) -> WriterEngine:
    """The judge as the JUDGE_* settings give it (needs Django settings): `engine` ("vllm" or "local",
    default JUDGE_ENGINE) and `model` (a served name for vllm, a model folder for local; default
    JUDGE_MODEL / JUDGE_MODEL_PATH) override them. A new engine with its own settings: the Django
    settings, and the writer's engine of this process, stay as they are."""
    from django.conf import settings

    from writer.engines import get_engine

    name = engine or settings.JUDGE_ENGINE
    # The process's engine of that kind (ApplicationError naming the choices on a typo): its class, and
    # its settings from the WRITER_* ones, which the judge shares but for what it names itself.
    writer = get_engine(name)
    if name == "local":
        folder = Path(model) if model else Path(settings.JUDGE_MODEL_PATH)
        changes: dict[str, Any] = {
            "model_path": str(folder),
            "model_name": folder.name if model else settings.JUDGE_MODEL,
        }
    else:
        base_url = settings.JUDGE_BASE_URL.rstrip("/")
        api_key = settings.JUDGE_API_KEY
        if not api_key and base_url == settings.WRITER_BASE_URL.rstrip("/"):
            api_key = settings.WRITER_API_KEY  # the writer's server, the writer's key; never another host's
        judge_path = Path(settings.JUDGE_MODEL_PATH)
        changes = {
            "base_url": base_url,
            "api_key": api_key,
            "model": model or settings.JUDGE_MODEL,
            "tokenizer_path": (
                settings.WRITER_TOKENIZER_PATH if judge_path == Path(settings.WRITER_MODEL_PATH) else str(judge_path)
            ),
        }
    return type(writer)(replace(writer.settings, **changes))


def judge_sampling(max_tokens: int = VERDICT_TOKENS, seed: int = 0) -> Sampling:
    """Greedy decoding of a few tokens: the judge's answer is a letter, and the same every run."""
    return Sampling(max_tokens=max_tokens, temperature=0.0, top_p=1.0, seed=seed)


def chapter_of(answer: str) -> str:
    """A candidate's chapter: the SOLUTION part of a writer's answer (or what parse_output salvages
    from it; plain text stays as it is)."""
    return parse_output(answer).text.strip()


def _order_record(scored: ChoiceLogprobs) -> tuple[dict[str, Any], tuple[float, float] | None]:
    """One order's record in logprobs mode, and its normalised (P(A), P(B)) (None: no verdict, the
    engine saw neither letter)."""
    logprobs = {c: scored.logprobs[c] for c in JUDGE_CHOICES}
    seen_none = all(c in scored.absent for c in JUDGE_CHOICES)
    probabilities = None if seen_none else letter_probabilities(logprobs)
    mass = logsumexp(logprobs.values())
    record = {
        "p_a": probabilities[0] if probabilities else None,
        "p_b": probabilities[1] if probabilities else None,
        "logprob_a": logprobs["A"] if math.isfinite(logprobs["A"]) else None,
        "logprob_b": logprobs["B"] if math.isfinite(logprobs["B"]) else None,
        "letter_mass": math.exp(mass) if math.isfinite(mass) else 0.0,
        "absent": list(scored.absent),
    }
    return record, probabilities


def judge_pairs(
    pairs: Sequence[Pair],
    candidates_a: Sequence[str],
    candidates_b: Sequence[str],
    engine: WriterEngine,
    *,
    mode: Mode = "logprobs",
    adapter: Adapter | None = None,
    story_tokens: int = STORY_TOKENS,
    chapter_tokens: int = CHAPTER_TOKENS,
    max_tokens: int = VERDICT_TOKENS,
    count_tokens: Callable[[str], int] | None = None,
    on_pair: Callable[[int, dict[str, Any]], None] | None = None,
    concurrency: int = 1,
) -> JudgeResult:
    """Judge target A (`candidates_a[i]`, a writer's answer or plain chapter text) against baseline B
    (`candidates_b[i]`) on every pair, in both orders (two engine calls a pair), by `mode` (see the
    module docstring; `max_tokens` is the letters' answer budget). `count_tokens` measures the budgets
    (default: the engine's tokenizer); `concurrency` questions go to the engine at the same time (a
    vLLM server batches them). Engine errors propagate: a half-judged run must not look like a
    finished one."""
    if mode not in MODES:
        raise ApplicationError(f"Unknown judge mode {mode!r}; choose one of: {', '.join(MODES)}.")
    if not pairs:
        raise ApplicationError("There are no pairs to judge.")
    if not len(pairs) == len(candidates_a) == len(candidates_b):
        raise ApplicationError(
            f"{len(pairs)} pairs but {len(candidates_a)} A and {len(candidates_b)} B candidates."
        )
    if story_tokens < 1 or chapter_tokens < 1 or max_tokens < 1:
        raise ApplicationError("The story, chapter and answer budgets must each be at least 1 token.")
    if mode == "logprobs" and not callable(getattr(engine, "choice_logprobs", None)):
        raise ApplicationError(
            f"The {getattr(engine, 'name', 'judge')} engine cannot score choices; use --mode letters."
        )
    count = count_tokens or engine.count_tokens
    sampling = judge_sampling(max_tokens)
    started = time.monotonic()
    verdicts: list[dict[str, Any]] = []
    outcomes: list[Outcome] = []
    answers: list[Verdict | None] = []
    preferences: list[float | None] = []
    masses: list[float] = []
    absent = 0
    model = ""

    def chats(pair: Pair, a: str, b: str) -> list[list[dict[str, str]]]:  # target first, then second
        story = trim_story(existing_chapters_of(pair.prompt), story_tokens, count)
        real = trim_head(pair.answer, chapter_tokens, count)
        target = trim_head(chapter_of(a), chapter_tokens, count)
        baseline = trim_head(chapter_of(b), chapter_tokens, count)
        return [
            judge_messages(story=story, real=real, first=first, second=second, next_number=pair.k + 1)
            for first, second in ((target, baseline), (baseline, target))
        ]

    def ask(messages: list[Message]) -> Any:
        if mode == "logprobs":
            return engine.choice_logprobs(messages, JUDGE_CHOICES, adapter=adapter)
        return engine.generate(messages, n=1, sampling=sampling, adapter=adapter)

    asked = [m for pair, a, b in zip(pairs, candidates_a, candidates_b, strict=True) for m in chats(pair, a, b)]
    results = iter(map_ordered(ask, asked, concurrency))
    for index, pair in enumerate(pairs, start=1):
        orders: dict[str, dict[str, Any]] = {}
        probabilities: dict[str, tuple[float, float] | None] = {}
        for name in ("target_first", "target_second"):
            result = next(results)
            model = result.model or model
            if mode == "logprobs":
                orders[name], probabilities[name] = _order_record(result)
                answers.append(favoured_letter(probabilities[name]))
                masses.append(orders[name]["letter_mass"])
                absent += len(result.absent)
            else:
                raw = result.completions[0].text if result.completions else ""
                verdict = parse_verdict(raw)
                answers.append(verdict)
                orders[name] = {"answer": raw, "verdict": verdict}
        if mode == "logprobs":
            preference = pair_preference(probabilities["target_first"], probabilities["target_second"])
            preferences.append(preference)
            outcome = preference_outcome(preference)
            record = {"book": pair.book, "k": pair.k, **orders, "preference": preference, "outcome": outcome}
        else:
            outcome = pair_outcome(orders["target_first"]["verdict"], orders["target_second"]["verdict"])
            record = {"book": pair.book, "k": pair.k, **orders, "outcome": outcome}
        outcomes.append(outcome)
        verdicts.append(record)
        if on_pair is not None:
            on_pair(index, record)
    seconds = time.monotonic() - started
    if mode == "logprobs":
        summary = summarize(outcomes, answers, preferences)
        summary["mean_letter_mass"] = round(sum(masses) / len(masses), 4)
        summary["letters_absent"] = absent
    else:
        summary = summarize(outcomes, answers)
    return JudgeResult(verdicts=verdicts, summary=summary, model=model, seconds=seconds, mode=mode)
