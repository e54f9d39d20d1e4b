"""The writer-engine interface: (messages, n, sampling, adapter) -> n completions; and
(messages, choices, adapter) -> the log-probability of each choice as the answer's first token
(`choice_logprobs`, for a judge that must not be read from one greedy letter).

With `Sampling.reasoning_tokens`, an engine writes the answer in two phases (`write_answers`): the
reasoning, at most that many tokens, stopping at the reasoning's end tag; then the chapter, prefilled
with the closed reasoning and the chapter's opening tag, at most `max_tokens`, stopping at its closing
tag. The answer is put together from the pieces, so it is in the format by construction
(`writer.parsing.answer_text`), and the reasoning cannot eat the chapter's tokens.
"""

from __future__ import annotations

import inspect
import math
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from writer.parsing import answer_text, reasoning_block, shorten_to_sentence
from writer.prompting import REASONING_END, REASONING_START, SOLUTION_END, SOLUTION_START

# The tags the two-phase answer puts before its chapter: "<start_working_out>" is 7 SmolLM2 tokens and
# "<end_working_out>\n<SOLUTION>" 13; 24 leaves room for a tokenizer that splits them more finely.
ANSWER_TAG_TOKENS = 24

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}
# Called with the number of new tokens generated so far (all options); a callback that takes a `texts`
# keyword also gets the answers' text so far, one per option in order (the request page's live text,
# writer.live), as often as the engine has them. `takes_texts` tells which kind a callback is.
ProgressCallback = Callable[..., None]


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 512  # new tokens per option
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int | None = None
    # Text the answer must start with (e.g. the reasoning tag). Engines return it as part of the text.
    # Not used by the two-phase answer, which writes its own tags.
    prefill: str = ""
    # Repetition control. repetition_penalty (vLLM and transformers alike): the logit of every token
    # already in the prompt or the answer is divided by it (multiplied when negative); 1.0 is off.
    repetition_penalty: float = 1.0
    # OpenAI's: subtracted from a token's logit once per earlier use in the answer / once if used at all.
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    # The local engine only (transformers): never repeat an n-gram of this many tokens; 0 is off.
    no_repeat_ngram_size: int = 0
    # > 0: the two-phase answer (see the module's docstring), with at most this many reasoning tokens;
    # max_tokens is then the chapter's. 0: one phase of max_tokens, as the model writes it.
    reasoning_tokens: int = 0
    # One phase only: the answer ends before the first of these texts (not included); the two-phase
    # answer stops at its own tags.
    stop: tuple[str, ...] = ()
    # One phase only: the answer ends after the first of these texts, which it keeps (a sentence's end:
    # writer.parsing.SENTENCE_STOPS). vLLM gets them with its include_stop_str_in_output; a provider
    # that refuses that extension is not sent them, and its answer runs on to `stop` or max_tokens.
    stop_after: tuple[str, ...] = ()
    # The answer never breaks its line: every token that holds a line break is banned (OpenAI's
    # logit_bias on vLLM, from the model's tokenizer; bad_words_ids locally). For an added sentence,
    # which a small model otherwise ends at once with a line break after the term it was given.
    one_line: bool = False

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if self.temperature < 0:
            raise ValueError("temperature must not be negative")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be positive (1.0 is off)")
        if not (-2 <= self.frequency_penalty <= 2 and -2 <= self.presence_penalty <= 2):
            raise ValueError("frequency_penalty and presence_penalty must be in [-2, 2], as OpenAI's")
        if self.no_repeat_ngram_size < 0 or self.reasoning_tokens < 0:
            raise ValueError("no_repeat_ngram_size and reasoning_tokens must not be negative")
        if self.stop_after and self.reasoning_tokens:
            raise ValueError("stop_after is for one-phase answers (reasoning_tokens=0)")

    @property
    def answer_tokens(self) -> int:
        """Tokens an answer may take in the model's context: the chapter's, and in two phases the
        reasoning's and the tags between them (ANSWER_TAG_TOKENS)."""
        if not self.reasoning_tokens:
            return self.max_tokens
        return self.reasoning_tokens + ANSWER_TAG_TOKENS + self.max_tokens


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter: the name the server knows it by, and the folder it is loaded from."""

    name: str
    path: Path


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: int  # new tokens of this option (the reasoning's and the chapter's)
    finish_reason: str = "stop"  # of the chapter, in the two-phase answer
    # What the engine changed in the answer, for the reader of the option ("" when nothing): e.g. a
    # chapter cut by its token limit and shortened to its last complete sentence.
    warning: str = ""


@dataclass
class GenerationResult:
    completions: list[Completion]
    model: str  # the base model or adapter name that produced them
    prompt_tokens: int = 0
    extra: dict = field(default_factory=dict)


# The letters a pairwise judge answers with (training.judge).
JUDGE_CHOICES: tuple[str, ...] = ("A", "B")
# What a token may carry around a choice and still spell it: white space (" A", "A\n"), Markdown bold
# ("**A"), quotes and parentheses ("(A", "'B'"). Anything else ("A.", "AB", "a") is not the choice.
CHOICE_TOKEN_STRIP = string.whitespace + "*\"'()\u201c\u201d\u2018\u2019"


@dataclass(frozen=True)
class ChoiceLogprobs:
    """The log-probability of each choice as the assistant's first answer token: the logsumexp over
    every token that spells it (`token_choice`). Unnormalised: the choices' mass need not sum to 1
    (the model may mean to answer with something else), and a choice the engine could not see (a
    provider's top log-probs left it out) has a floor, not its value, and is named in `absent`."""

    logprobs: dict[str, float]
    model: str  # the base model or adapter name that scored them
    absent: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)


def token_choice(token: str, choices: Iterable[str]) -> str | None:
    """The choice a token's text spells (case-sensitive, once CHOICE_TOKEN_STRIP is stripped from both
    ends: " A", "**A", "(B"), or None."""
    text = token.strip(CHOICE_TOKEN_STRIP)
    return text if text and text in choices else None


def logsumexp(values: Iterable[float]) -> float:
    """log(sum(exp(v))) without overflow; -inf for no values (or only -inf)."""
    values = list(values)
    top = max(values, default=-math.inf)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))


# (id(tokenizer), choices) -> (the tokenizer, {choice: its token ids}); the tokenizer is kept, as above.
_choice_ids: dict[tuple[int, tuple[str, ...]], tuple[object, dict[str, list[int]]]] = {}


def choice_token_ids(tokenizer, choices: Sequence[str]) -> dict[str, list[int]]:  # noqa: ANN001
    """Per choice, the ids of the tokenizer's tokens that spell it (`token_choice`: "A", " A" and the
    like), special tokens left out; cached per tokenizer (one decode of the vocabulary, ~1 s)."""
    key = (id(tokenizer), tuple(choices))
    cached = _choice_ids.get(key)
    if cached is None or cached[0] is not tokenizer:
        special = set(tokenizer.all_special_ids)
        ids: dict[str, list[int]] = {c: [] for c in choices}
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        for i, text in enumerate(texts):
            choice = token_choice(text, choices) if i not in special else None
            if choice is not None:
                ids[choice].append(i)
        cached = _choice_ids[key] = (tokenizer, ids)
    return cached[1]


class WriterEngine(Protocol):
    name: str

    def generate(
        self,
        messages: list[Message],
        *,
        n: int,
        sampling: Sampling,
        adapter: Adapter | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> GenerationResult: ...

    def count_tokens(self, text: str) -> int: ...

    def choice_logprobs(
        self,
        messages: list[Message],
        choices: Sequence[str] = JUDGE_CHOICES,
        *,
        adapter: Adapter | None = None,
    ) -> ChoiceLogprobs:
        """Each choice's log-probability as the first token of the assistant's answer to `messages`
        (after the chat template's generation prompt): see ChoiceLogprobs."""
        ...


# -- progress ----------------------------------------------------------------------------------------


def takes_texts(callback: ProgressCallback | None) -> bool:
    """Whether a progress callback takes the answers' text so far (a `texts` keyword, or **kwargs)."""
    if callback is None:
        return False
    try:
        params = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: called with the tokens only
        return False
    return any(p.name == "texts" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def report_progress(
    callback: ProgressCallback | None, tokens: int, texts: Callable[[], Sequence[str]], *, with_texts: bool
) -> None:
    """`callback(tokens)`, or `callback(tokens, texts=texts())` when `with_texts` (`takes_texts(callback)`,
    asked once per call by the caller; `texts` is only computed then)."""
    if callback is None:
        return
    if with_texts:
        callback(tokens, texts=list(texts()))
    else:
        callback(tokens)


def progress_part(
    callback: ProgressCallback | None,
    *,
    before: int = 0,
    whole: Callable[[Sequence[str]], Sequence[str] | Mapping[int, str]] | None = None,
) -> ProgressCallback | None:
    """The callback for one part of the work (a phase, one prefix of several): its tokens counted after
    the `before` tokens of the parts already done, and its pieces' texts made the whole answers' by
    `whole` (the prefixes put back in front, the other parts' pieces around them). It takes texts only
    where `callback` does, so an engine decodes partial texts only for a callback that wants them."""
    if callback is None:
        return None
    if not takes_texts(callback):
        return lambda tokens: callback(before + tokens)

    def part(tokens: int, texts: Sequence[str] | None = None) -> None:
        if texts is None:
            callback(before + tokens)
        else:
            callback(before + tokens, texts=whole(texts) if whole is not None else list(texts))

    return part


# -- the two-phase answer ----------------------------------------------------------------------------

# Where the reasoning stops: its end tag, or a chapter tag written without closing the reasoning
# (the usual slip of a small model). The stop text itself is not part of the piece.
REASONING_STOPS = (REASONING_END, SOLUTION_START, SOLUTION_END)
CHAPTER_STOPS = (SOLUTION_END,)

# write(prefixes, n_each, max_tokens, stop, on_progress) -> len(prefixes) * n_each pieces, the pieces
# of the first prefix first: each the text the model wrote after its prefix (the assistant message
# so far), up to a stop text or max_tokens. `on_progress` gets the new tokens of this call so far.
WriteFn = Callable[[Sequence[str], int, int, Sequence[str], ProgressCallback | None], list[Completion]]


def shortened_warning(max_tokens: int) -> str:
    return f"The chapter reached its limit of {max_tokens} tokens and ends at its last complete sentence."


def write_answers(
    write: WriteFn, *, n: int, sampling: Sampling, on_progress: ProgressCallback | None = None
) -> list[Completion]:
    """n answers in two phases, one `write` call each: n reasonings from the prompt, then one chapter
    after each closed reasoning. The texts always parse as `format_ok` (writer.parsing.parse_output)."""
    # The texts reported while writing are the answers so far: the reasoning after its opening tag, then
    # each closed reasoning block with its chapter so far (what the finished answer starts with).
    thoughts = write(
        [REASONING_START],
        n,
        sampling.reasoning_tokens,
        REASONING_STOPS,
        progress_part(on_progress, whole=lambda pieces: [REASONING_START + p for p in pieces]),
    )
    blocks = []
    for thought in thoughts:
        reasoning = thought.text
        if thought.finish_reason == "length":  # cut by its budget: keep its complete sentences
            reasoning = shorten_to_sentence(reasoning) or reasoning
        blocks.append(reasoning_block(reasoning))
    done = sum(t.tokens for t in thoughts)
    chapters = write(
        blocks,
        1,
        sampling.max_tokens,
        CHAPTER_STOPS,
        progress_part(
            on_progress, before=done, whole=lambda pieces: [b + p for b, p in zip(blocks, pieces, strict=True)]
        ),
    )
    answers = []
    for thought, block, chapter in zip(thoughts, blocks, chapters, strict=True):
        text, warning = chapter.text, ""
        if chapter.finish_reason == "length":
            shortened = shorten_to_sentence(text)
            if shortened:
                text, warning = shortened, shortened_warning(sampling.max_tokens)
            else:
                warning = (
                    f"The chapter reached its limit of {sampling.max_tokens} tokens in its first sentence; "
                    "it is shown as written."
                )
        answers.append(
            Completion(
                text=answer_text(block, text),
                tokens=thought.tokens + chapter.tokens,
                finish_reason=chapter.finish_reason,
                warning=warning,
            )
        )
    return answers


_LINE_BREAKS = ("\n", "\r", "\u2028", "\u2029")
# id(tokenizer) -> (the tokenizer, its ids): the tokenizer is kept, so its id is never reused by another.
_line_break_ids: dict[int, tuple[object, list[int]]] = {}


def line_break_token_ids(tokenizer) -> list[int]:  # noqa: ANN001 (a PreTrainedTokenizerBase)
    """The ids of the tokens whose text holds a line break (131 of SmolLM2's 49,152), per tokenizer."""
    cached = _line_break_ids.get(id(tokenizer))
    if cached is None or cached[0] is not tokenizer:
        ids = [i for i in range(len(tokenizer)) if any(b in tokenizer.decode([i]) for b in _LINE_BREAKS)]
        cached = _line_break_ids[id(tokenizer)] = (tokenizer, ids)
    return cached[1]
