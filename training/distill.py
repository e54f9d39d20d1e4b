"""Distil reasoning: ask a teacher model WHY each real next chapter is the way it is.

For every pair {chapter 0 + chapters 1..k -> chapter k+1} of a `build_dataset` folder, a reasoning
model (Venice.AI's DeepSeek R1, the project's own vLLM server, any OpenAI-compatible endpoint, or the
in-process local engine) reads the story so far AND the chapter the author really wrote next, and
explains the choices behind it (plot, characters, intent, pacing) as the plan a writer would make
before writing it. The result is a triple {existing_chapters, output_chapter, reasoning}, and a
`completion` that is a whole training target in the writer's format:

    <start_working_out>\n{reasoning}\n<end_working_out>\n<SOLUTION>\n{the real chapter k+1}\n</SOLUTION>

Importable without Django (the local teacher alone needs it: it goes through `writer.engines`), so a
management command, a Celery task or a GPU box run the same code.

Why this module talks to the teacher itself instead of reusing `writer.engines.vllm`: the writer's
engine returns only `content` (a provider's separate `reasoning_content` is dropped), asks for n
options with a prefilled reasoning tag, streams, loads adapters, and words its errors as "the writer
server". A teacher needs one plain call, the R1-style thinking wherever the provider puts it, the
`usage` of every call, and a different failure policy (a 401/402/403/404 stops the whole run, other
4xx fail one pair). So, following "one module per external engine", this is the teacher's engine
module: the settings dataclass, a cached getter (`get_teacher`) and the only `openai` use for the
teacher. The `local` teacher reuses the writer's in-process engine (`get_engine("local")`) as is.

Files (defaults; `out_dir` and `cache_dir` move them):
- `<dataset>/distilled/train.jsonl`, `test.jsonl`: the original fields of each row that got its
  reasoning, plus `existing_chapters`, `output_chapter`, `reasoning` (tagged), `completion`, `teacher`;
  pairs that failed are left out and listed in the summary;
- `<dataset>/distilled/distill_summary.json`: counts (done, cached, failed with reasons), tokens,
  teacher calls, seconds, and the teacher's settings without its key;
- `<dataset>/distill_cache/<key>.json`: one file per answered pair, written atomically, where
  key = sha256(prompt version, teacher model, prompt, answer). A rerun (after a crash, a Ctrl-C or a
  failure) reads these and asks the teacher only for pairs that have none: a pair is never paid twice.
  Failures are not cached, so a rerun asks again for them only.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from mesu_web.errors import ApplicationError, EngineError, redact, safe_cause, secret_free
from training.dataset import read_rows, write_rows
from writer.prompting import (
    REASONING_END,
    REASONING_START,
    SOLUTION_END,
    SOLUTION_START,
    ChapterText,
    render_chapter,
)

logger = logging.getLogger(__name__)

# Part of every cache key: change it whenever the teacher prompt or the answer checks change, so that
# old answers are not reused for a question that is no longer the one asked.
PROMPT_VERSION = "distill-why-v1"
SPLITS = ("train", "test")
SUMMARY_FILENAME = "distill_summary.json"
ENGINES = ("openai", "local")
# HTTP statuses worth another try: timeout, conflict, rate limit; and every 5xx.
RETRYABLE_STATUSES = frozenset({408, 409, 429})
# Statuses that would fail every pair the same way (bad key, no credit, no access, wrong URL or model
# name): the run stops at the first one instead of paying for nothing N times.
FATAL_STATUSES = frozenset({401, 402, 403, 404})
RETRY_AFTER_MAX = 60.0  # seconds: the longest Retry-After header we honour
# An explanation of a chapter shorter than this is no explanation ("Because." / "OK, sure").
MIN_REASONING_WORDS = 5
# A share of letters among the non-space characters below this is not prose: prose is ~80% letters.
MIN_LETTER_SHARE = 0.5
# Control, surrogate, private-use and unassigned code points, and U+FFFD (a decoding failure): more
# than 1% of them and the answer is binary garbage, not text with a stray character.
MAX_BINARY_SHARE = 0.01
# A refusal is short; a long analysis that happens to start with "I can't help noticing" is not one.
REFUSAL_MAX_WORDS = 60
_REFUSAL = re.compile(
    r"^\W*(?:i['’]?m sorry|i am sorry|sorry[,.!]|i apologi[sz]e|i can(?:['’]?t|not)\b|i am unable|"
    r"i['’]?m unable|i['’]?m not able|i won['’]?t|i will not|as an ai\b|unfortunately,? i)",
    flags=re.IGNORECASE,
)
# A SOLUTION block in the teacher's answer is a chapter (re-)written, not reasoning: dropped whole,
# up to its end or the end of the answer when it is never closed.
_SOLUTION_BLOCK = re.compile(
    r"<\s*solution\s*>.*?(?:<\s*/\s*solution\s*>|\Z)", flags=re.IGNORECASE | re.DOTALL
)
# The writer's tags, in any case and spacing: an answer that writes them would break the format of
# the completion it becomes part of (its `<end_working_out>` would end the reasoning early).
_WRITER_TAG = re.compile(r"<\s*/?\s*solution\s*>|<\s*(?:start|end)_working_out\s*>", flags=re.IGNORECASE)
_THINK_TAG = re.compile(r"<\s*(?P<close>/?)\s*think\s*>", flags=re.IGNORECASE)
_BLANK_LINES = re.compile(r"\n{3,}")
_WORDS = re.compile(r"[^\W\d_]{2,}")  # words of 2+ letters, any script
_TASK_HEADING = "## Your task"  # writer.prompting's instruction part, always last in the user message

TEACHER_SYSTEM_PROMPT = (
    "You are a seasoned fiction editor who explains an author's craft. You are shown a story so far "
    "and the chapter its author wrote next. You explain why that chapter is the way it is, given the "
    "earlier chapters and the author's intent, as the reasoning a writer would go through before "
    "writing it."
)


def teacher_messages(
    *, existing_chapters: str, output_chapter: str, next_number: int
) -> list[dict[str, str]]:
    """The teacher's chat: the story so far (chapter 0 + chapters 1..k, as the pair's prompt holds
    them), the real chapter k+1, and the question WHY it is the way it is."""
    chapter = render_chapter(ChapterText(number=next_number, title="", text=output_chapter))
    user = (
        "# The story so far\n\n"
        f"{existing_chapters.strip()}\n\n"
        "# The chapter the author wrote next\n\n"
        f"{chapter}\n\n"
        "# Your task\n\n"
        f"Explain why Chapter {next_number} is the way it is, given Chapter 0 (what the story is about "
        "and what its author intends) and the chapters before it:\n"
        "- plot: which open threads it picks up, advances or resolves, and what it sets up next;\n"
        "- characters: what each one wants here, how they change, how their voices stay the same;\n"
        "- intent: how it serves the story's themes, tone and the author's stated intent;\n"
        "- pacing and structure: where it starts and ends, what it lingers on or skips, and why.\n\n"
        "Write it as the reasoning a writer goes through before writing this chapter: plain prose in "
        f'your own words, planning ahead ("Chapter {next_number} should open on ... because ..."). '
        "Do not rewrite or quote the chapter at length, do not say that you were shown it, and do not "
        f"use tags such as {REASONING_START} or {SOLUTION_START}."
    )
    return [{"role": "system", "content": TEACHER_SYSTEM_PROMPT}, {"role": "user", "content": user}]


# ---------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class TeacherSettings:
    base_url: str = ""  # the OpenAI-compatible root ending in /v1 (openai engine only)
    api_key: str = field(default="", repr=False)  # a provider's key; "" for your own vLLM server
    model: str = ""  # the teacher's model name at that endpoint (openai engine only)
    timeout: float = 600.0  # seconds per call: an R1 thinking through a long prompt takes minutes
    max_retries: int = 3  # further attempts after a timeout, a 5xx, a 408/409/429 or a lost connection
    backoff: float = 2.0  # seconds before the first retry, doubled for each further one
    max_tokens: int = 2048  # new tokens per answer, R1's <think> section included
    temperature: float = 0.6  # DeepSeek's advice for R1 is 0.5-0.7; 0 = greedy (local, tests)
    concurrency: int = 4  # pairs asked at the same time
    engine: str = "openai"  # "openai" (any OpenAI-compatible endpoint) or "local" (in-process)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ApplicationError(
                f"Unknown teacher engine {self.engine!r}; choose one of: {', '.join(ENGINES)}."
            )
        if self.engine == "openai":
            if not self.base_url.startswith(("http://", "https://")):
                raise ApplicationError(
                    f"The teacher's base URL must be an http(s) URL ending in /v1, not {self.base_url!r}."
                )
            if not self.model.strip():
                raise ApplicationError(
                    "The teacher's model name is empty; set TEACHER_MODEL or --teacher-model."
                )
        if self.timeout <= 0:
            raise ApplicationError(f"The teacher's timeout must be positive, got {self.timeout}.")
        if self.max_retries < 0 or self.backoff < 0:
            raise ApplicationError("The teacher's max_retries and backoff must not be negative.")
        if self.max_tokens < 1:
            raise ApplicationError(f"The teacher's max_tokens must be at least 1, got {self.max_tokens}.")
        if self.temperature < 0:
            raise ApplicationError(f"The teacher's temperature must not be negative, got {self.temperature}.")
        if self.concurrency < 1:
            raise ApplicationError(f"The concurrency must be at least 1, got {self.concurrency}.")

    @classmethod
    def from_django(cls, **overrides: Any) -> TeacherSettings:
        """TEACHER_* from the Django settings, with `overrides` (e.g. model=..., concurrency=...)."""
        from django.conf import settings

        values: dict[str, Any] = {
            "base_url": settings.TEACHER_BASE_URL.rstrip("/"),
            "api_key": settings.TEACHER_API_KEY,
            "model": settings.TEACHER_MODEL,
            "timeout": float(settings.TEACHER_TIMEOUT),
            "max_retries": int(settings.TEACHER_MAX_RETRIES),
            "backoff": float(settings.TEACHER_RETRY_BACKOFF),
            "max_tokens": int(settings.TEACHER_MAX_TOKENS),
            "temperature": float(settings.TEACHER_TEMPERATURE),
            "concurrency": int(settings.TEACHER_CONCURRENCY),
            "engine": settings.TEACHER_ENGINE,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def public(self) -> dict[str, Any]:
        """The settings as JSON for a summary or a log: never the key, only whether there is one."""
        out = asdict(self)
        del out["api_key"]
        out["api_key_set"] = bool(self.api_key)
        out["base_url"] = _safe_url(self.base_url)
        return out


def _safe_url(url: str) -> str:
    """`url` without a user:password part, which must not reach a log or a summary."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


# ---------------------------------------------------------------------------------------------
# Teachers


class TeacherError(EngineError):
    """A teacher call failed. `fatal`: every pair would fail the same way, so the run stops."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        fatal: bool = False,
        attempts: int = 1,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, retryable=retryable, extra=extra)
        self.fatal = fatal
        self.attempts = attempts


@dataclass
class TeacherAnswer:
    content: str  # the answer text as sent (an R1's <think> section may be inside)
    reasoning_content: str = ""  # the thinking a provider sends apart (`reasoning_content` / `reasoning`)
    refusal: str = ""  # OpenAI's structured refusal, when the provider uses it
    finish_reason: str = "unknown"  # "stop", "length" (cut at max_tokens), ...
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_reported: bool = True  # False: the provider sent no usage, the counts are 0
    attempts: int = 1  # calls made for this answer, retries included


class Teacher(Protocol):
    settings: TeacherSettings

    @property
    def model_id(self) -> str:
        """The model as named in the cache key (a different teacher asks the question anew)."""
        ...

    def ask(self, messages: list[dict[str, str]]) -> TeacherAnswer:
        """One answer; TeacherError when there is none (after the retries)."""
        ...


class OpenAITeacher:
    """Any OpenAI-compatible chat-completions endpoint: vLLM, Venice.AI, DeepSeek, OpenAI."""

    def __init__(self, settings: TeacherSettings) -> None:
        import openai

        self.settings = settings
        self._openai = openai
        # Retries are ours (backoff, readable errors, calls counted), so the client makes none.
        self._client = openai.OpenAI(
            base_url=settings.base_url,
            api_key=settings.api_key or "EMPTY",  # the client insists on a key; vLLM ignores it
            max_retries=0,
            timeout=settings.timeout,
        )

    @property
    def model_id(self) -> str:
        return self.settings.model

    @property
    def _where(self) -> str:
        return f"The teacher at {_safe_url(self.settings.base_url)}"

    def ask(self, messages: list[dict[str, str]]) -> TeacherAnswer:
        s = self.settings
        attempts = s.max_retries + 1
        for attempt in range(attempts):
            try:
                answer = self._ask_once(messages)
                answer.attempts = attempt + 1
                return answer
            except TeacherError as error:
                secret_free(error, s.api_key)  # a provider may quote the key back: not in a message
                error.__cause__ = safe_cause(error.__cause__, s.api_key)  # nor in a logged traceback
                error.attempts = attempt + 1
                if not error.retryable or attempt + 1 >= attempts:
                    if error.retryable and attempts > 1:
                        error.message = f"{error.message.rstrip('.')} (after {attempts} attempts)."
                        error.args = (error.message,)
                    raise
                delay = s.backoff * 2**attempt  # seconds: 2, 4, 8 with the default 2 s
                retry_after = error.extra.get("retry_after")
                if retry_after is not None:
                    delay = max(delay, min(float(retry_after), RETRY_AFTER_MAX))
                logger.warning(
                    "%s; retrying in %.1f s (attempt %d of %d)", error.message, delay, attempt + 2, attempts
                )
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _ask_once(self, messages: list[dict[str, str]]) -> TeacherAnswer:
        s = self.settings
        try:
            response = self._client.chat.completions.create(
                model=s.model, messages=messages, max_tokens=s.max_tokens, temperature=s.temperature
            )
        except Exception as exc:
            error = self._classify(exc)
            if error is None:
                raise
            raise error from exc
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise TeacherError(
                f"{self._where} sent a malformed answer: no choices in {_preview(str(response))}.",
                retryable=False,
            )
        choice = choices[0]
        message = getattr(choice, "message", None)
        usage = getattr(response, "usage", None)
        return TeacherAnswer(
            content=_as_text(getattr(message, "content", None)),
            # DeepSeek and most providers: `reasoning_content`; newer vLLM reasoning parsers: `reasoning`.
            reasoning_content=_as_text(getattr(message, "reasoning_content", None))
            or _as_text(getattr(message, "reasoning", None)),
            refusal=_as_text(getattr(message, "refusal", None)),
            finish_reason=str(getattr(choice, "finish_reason", None) or "unknown"),
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            usage_reported=usage is not None,
        )

    def _classify(self, exc: Exception) -> TeacherError | None:
        """A TeacherError for a failure we understand; None for a bug of ours (raised as is)."""
        import httpx

        openai = self._openai
        timeout = f"{self.settings.timeout:g} s"
        if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
            return TeacherError(f"{self._where} did not answer within {timeout}.", retryable=True)
        if isinstance(exc, openai.APIConnectionError | httpx.TransportError):
            cause = exc.__cause__ or exc
            return TeacherError(f"{self._where} could not be reached ({cause}).", retryable=True)
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            message = redact(_error_body_message(exc.body) or exc.message, self.settings.api_key)
            retryable = status in RETRYABLE_STATUSES or status >= 500
            fatal = status in FATAL_STATUSES
            verb = "failed" if status >= 500 else "refused the request"
            hint = ""
            if status in (401, 403):
                hint = " Check the teacher's API key (TEACHER_API_KEY or --teacher-key-env)."
            elif status == 404:
                hint = f" Check the base URL (it ends in /v1) and the model name {self.settings.model!r}."
            elif status == 402:
                hint = " The provider's account may be out of credit."
            extra: dict[str, Any] = {"status": status}
            retry_after = _retry_after(exc)
            if retry_after is not None:
                extra["retry_after"] = retry_after
            return TeacherError(
                f"{self._where} {verb} (HTTP {status}): {_preview(message, 300)}.{hint}",
                retryable=retryable,
                fatal=fatal,
                extra=extra,
            )
        if isinstance(exc, openai.APIResponseValidationError | ValueError):
            # ValueError: a 200 whose body is not JSON (json.JSONDecodeError is one).
            return TeacherError(
                f"{self._where} sent a malformed answer: {_preview(redact(str(exc), self.settings.api_key))}.",
                retryable=False,
            )
        if isinstance(exc, openai.APIError):  # e.g. an error object inside a 200 answer
            return TeacherError(f"{self._where} failed while answering: {exc.message}.", retryable=True)
        return None


class LocalTeacher:
    """The writer's in-process engine (transformers on the CPU) as the teacher; needs Django settings
    (WRITER_MODEL_PATH, WRITER_LOCAL_THREADS). No retries: nothing transient can go wrong in-process."""

    def __init__(self, settings: TeacherSettings) -> None:
        from writer.engines import get_engine

        self.settings = settings
        self._engine = get_engine("local")

    @property
    def model_id(self) -> str:
        return f"local:{self._engine.settings.model_name}"

    def ask(self, messages: list[dict[str, str]]) -> TeacherAnswer:
        from writer.engines.base import Sampling

        s = self.settings
        try:
            result = self._engine.generate(
                messages, n=1, sampling=Sampling(max_tokens=s.max_tokens, temperature=s.temperature)
            )
        except EngineError as exc:
            raise TeacherError(f"The local teacher failed: {exc.message}", retryable=False) from exc
        completion = result.completions[0]
        return TeacherAnswer(
            content=completion.text,
            finish_reason=completion.finish_reason,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=completion.tokens,
        )


@functools.lru_cache(maxsize=4)
def get_teacher(settings: TeacherSettings) -> Teacher:
    """The process's teacher for these settings (its HTTP client, or the loaded local model, is kept)."""
    if settings.engine == "local":
        return LocalTeacher(settings)
    return OpenAITeacher(settings)


def reset_caches() -> None:
    """Forget the teachers and their clients (for tests)."""
    get_teacher.cache_clear()


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):  # content parts: [{"type": "text", "text": ...}]
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in value)
    return str(value)


def _error_body_message(body: object) -> str:
    """The human message of an OpenAI-style error body ({"message"}, {"error": {"message"}}, {"detail"})."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
        if isinstance(body.get("detail"), str):
            return body["detail"]
    if isinstance(body, str):
        return body
    return ""


def _retry_after(exc: Any) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:  # an HTTP date: rare from these APIs; the backoff is used instead
        return None


def _preview(text: str, limit: int = 120) -> str:
    """A short, printable quote of `text` for a failure reason (control characters escaped)."""
    short = text[:limit] + ("…" if len(text) > limit else "")
    return repr(short)


# ---------------------------------------------------------------------------------------------
# Reading the teacher's answer


@dataclass(frozen=True)
class TeacherOutput:
    thinking: str  # the R1-style <think> section(s) and any separate reasoning_content
    answer: str  # the rest: the explanation asked for
    unclosed_think: bool = False  # a <think> that never closed (the answer is cut off, or missing)


def split_teacher_output(content: str, reasoning_content: str = "") -> TeacherOutput:
    """Separate an R1-style answer into its thinking and its answer.

    Handles `<think>…</think>answer`, several think blocks, a `</think>` without its opening tag (a
    chat template that starts the answer inside <think>: what comes before is thinking), an unclosed
    `<think>` (what follows it is thinking, there is no answer after it), and the thinking sent
    apart as `reasoning_content`.
    """
    thinking: list[str] = [reasoning_content.strip()] if reasoning_content.strip() else []
    answer: list[str] = []
    tags = list(_THINK_TAG.finditer(content))
    # A closing tag first: the opening one was in the prompt, so the text starts inside.
    inside = bool(tags) and tags[0].group("close") == "/"
    pos = 0
    for tag in tags:
        (thinking if inside else answer).append(content[pos : tag.start()])
        pos = tag.end()
        inside = tag.group("close") != "/"
    (thinking if inside else answer).append(content[pos:])
    return TeacherOutput(
        thinking=_tidy("\n\n".join(t.strip() for t in thinking if t.strip())),
        answer=_tidy("".join(answer)),
        unclosed_think=inside,
    )


def _tidy(text: str) -> str:
    return _BLANK_LINES.sub("\n\n", text).strip()


def check_reasoning(answer: TeacherAnswer, *, max_tokens: int | None = None) -> tuple[str, str, str]:
    """(reasoning, thinking, "") for a usable answer, or ("", thinking, why not) for one that is not:
    empty, only a <think> section, an unclosed <think>, binary garbage, no prose, or a refusal.

    The writer's own tags are removed from the reasoning (it is wrapped in them later), and a
    <SOLUTION> block with them (a chapter the teacher wrote is no reasoning)."""
    out = split_teacher_output(answer.content, answer.reasoning_content)
    cut = ""
    if answer.finish_reason == "length":
        limit = f" ({max_tokens})" if max_tokens else ""
        cut = f"; it stopped at max_tokens{limit}, so raise --max-tokens"
    if answer.refusal.strip():
        return "", out.thinking, f"The teacher refused: {_preview(answer.refusal.strip())}."
    text = _tidy(_WRITER_TAG.sub("", _SOLUTION_BLOCK.sub("", out.answer)))
    if not text:
        if out.unclosed_think:
            why = "its <think> section was never closed, so there is no answer after it"
        elif out.thinking:
            why = "it wrote only its <think> section and no answer"
        else:
            why = "it returned an empty answer"
        return "", out.thinking, f"The teacher gave no reasoning: {why}{cut}."
    binary = sum(
        1
        for ch in text
        if ch == "\ufffd" or (unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") and ch not in "\n\r\t")
    )
    if binary and binary / len(text) > MAX_BINARY_SHARE:
        return (
            "",
            out.thinking,
            (
                f"The teacher's answer is not text: {binary} of its {len(text)} characters are control "
                f"or undecodable characters ({_preview(text, 60)})."
            ),
        )
    if binary:  # a stray one or two in real prose: drop them, keep the prose
        text = "".join(
            ch
            for ch in text
            if not (
                ch == "\ufffd"
                or (unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") and ch not in "\n\r\t")
            )
        )
    words = _WORDS.findall(text)
    visible = [ch for ch in text if not ch.isspace()]
    letters = sum(ch.isalpha() for ch in visible)
    if len(words) < MIN_REASONING_WORDS or letters / max(len(visible), 1) < MIN_LETTER_SHARE:
        return (
            "",
            out.thinking,
            (
                f"The teacher's answer is not prose ({len(words)} words, "
                f"{letters / max(len(visible), 1):.0%} letters): {_preview(text, 80)}{cut}."
            ),
        )
    if len(words) <= REFUSAL_MAX_WORDS and _REFUSAL.match(text):
        return "", out.thinking, f"The teacher refused: {_preview(text)}."
    return text, out.thinking, ""


# ---------------------------------------------------------------------------------------------
# Rows, keys and the cache


def tag_reasoning(reasoning: str) -> str:
    """The reasoning as the writer writes it: between <start_working_out> and <end_working_out>."""
    return f"{REASONING_START}\n{reasoning.strip()}\n{REASONING_END}"


def full_completion(reasoning: str, chapter: str) -> str:
    """A whole target in the writer's format: the tagged reasoning, then the chapter in SOLUTION tags
    (`writer.parsing.parse_output` reads it back with format_ok and the chapter as its text)."""
    return f"{tag_reasoning(reasoning)}\n{SOLUTION_START}\n{chapter.strip()}\n{SOLUTION_END}"


def existing_chapters_of(prompt: list[dict[str, Any]]) -> str:
    """Chapter 0 + chapters 1..k of a pair's prompt: its user message without the writer's task."""
    users = [m for m in prompt if m.get("role") == "user"]
    if not users:
        raise ApplicationError("The pair's prompt has no user message.")
    content = str(users[-1].get("content", ""))
    # The instruction is always the last part (writer.prompting); a chapter that happens to contain
    # the heading is inside a ```text block before it, so cut at the LAST one.
    cut = content.rfind(f"\n{_TASK_HEADING}")
    return (content[:cut] if cut >= 0 else content).strip()


def pair_key(*, model: str, prompt: list[dict[str, Any]], answer: str) -> str:
    """The cache key of a pair for a teacher: sha256 of the prompt version, model, prompt and answer."""
    blob = json.dumps(
        {"version": PROMPT_VERSION, "model": model, "prompt": prompt, "answer": answer},
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def read_cached(cache_dir: Path, key: str) -> dict[str, Any] | None:
    """The cached answer of a pair, or None (missing, or unreadable: asked again and overwritten)."""
    path = cache_dir / f"{key}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("Ignoring the unreadable cache file %s (%s); asking the teacher again", path, exc)
        return None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("reasoning"), str)
        or not data["reasoning"].strip()
    ):
        logger.warning("Ignoring the cache file %s: it holds no reasoning", path)
        return None
    return data


def write_cached(cache_dir: Path, key: str, data: dict[str, Any]) -> Path:
    """Write the cache file atomically: a temporary file, fsynced, then renamed over the real name."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{key}.json"
    tmp = cache_dir / f".{key}.{uuid.uuid4().hex}.tmp"
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(json.dumps(data, ensure_ascii=False, indent=1) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a build_dataset JSONL file, every field kept, with what a teacher needs to see."""
    rows = read_rows(path)
    for number, row in enumerate(rows, start=1):
        problem = ""
        if not any(m["role"] == "user" for m in row["prompt"]):
            problem = "prompt has no user message"
        elif not isinstance(row["answer"], str) or not row["answer"].strip():
            problem = "answer is not a chapter's text"
        if problem:
            raise ApplicationError(f"{path.name} pair {number} is not a training pair: {problem}.")
    return rows


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class _Job:
    key: str
    messages: list[dict[str, str]]
    rows: list[tuple[str, int]] = field(default_factory=list)  # (split, index) of the rows it answers
    book: str = ""
    k: int = 0


@dataclass
class _Result:
    status: str  # "done" | "failed"
    reasoning: str = ""
    reason: str = ""
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_reported: bool = True
    finish_reason: str = ""
    fatal: bool = False


def _ask(teacher: Teacher, job: _Job, cache_dir: Path) -> _Result:
    """Ask for one pair and cache a usable answer; every failure becomes a reason, never an exception
    (except a bug of ours, which the caller records too)."""
    try:
        answer = teacher.ask(job.messages)
    except TeacherError as exc:
        return _Result(status="failed", reason=exc.message, calls=exc.attempts, fatal=exc.fatal)
    except EngineError as exc:
        return _Result(status="failed", reason=exc.message, calls=1)
    paid = {
        "calls": answer.attempts,
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "usage_reported": answer.usage_reported,
        "finish_reason": answer.finish_reason,
    }
    reasoning, thinking, problem = check_reasoning(answer, max_tokens=teacher.settings.max_tokens)
    if problem:
        return _Result(status="failed", reason=problem, **paid)
    write_cached(
        cache_dir,
        job.key,
        {
            "key": job.key,
            "prompt_version": PROMPT_VERSION,
            "teacher": teacher.model_id,
            "book": job.book,
            "k": job.k,
            "reasoning": reasoning,  # untagged: tags are added when rows are written
            "teacher_thinking": thinking,
            "finish_reason": answer.finish_reason,
            "usage": {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    return _Result(status="done", reasoning=reasoning, **paid)


def distill_dataset(
    dataset_dir: Path | str,
    out_dir: Path | str | None = None,
    *,
    teacher: Teacher | TeacherSettings,
    limit: int | None = None,
    concurrency: int | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    cache_dir: Path | str | None = None,
) -> dict[str, Any]:
    """Distil the reasoning of every pair of a `build_dataset` folder (train first, then test; the first
    `limit` pairs in all when given), `concurrency` pairs at a time (default: the teacher's setting).

    Writes `out_dir` (default `<dataset>/distilled`)/train.jsonl, test.jsonl and distill_summary.json,
    and returns the summary. `on_progress` is called in this thread after each pair with
    {"finished", "total", "done", "cached", "failed", "tokens"}. A pair that fails is recorded with
    its reason and left out; a fatal teacher error (bad key, wrong URL or model) stops the run with an
    ApplicationError after the summary is written. Answers already cached are never asked again."""
    started = time.monotonic()
    dataset = Path(dataset_dir)
    out = Path(out_dir) if out_dir is not None else dataset / "distilled"
    cache = Path(cache_dir) if cache_dir is not None else dataset / "distill_cache"
    if isinstance(teacher, TeacherSettings):
        teacher = get_teacher(teacher)
    workers = concurrency if concurrency is not None else teacher.settings.concurrency
    if workers < 1:
        raise ApplicationError(f"The concurrency must be at least 1, got {workers}.")
    if limit is not None and limit < 0:
        raise ApplicationError(f"The limit must not be negative, got {limit}.")

    if not (dataset / "train.jsonl").is_file():
        raise ApplicationError(
            f"{dataset} has no train.jsonl: give the folder `manage.py build_dataset --out` wrote."
        )
    rows: dict[str, list[dict[str, Any]]] = {}
    for split in SPLITS:
        path = dataset / f"{split}.jsonl"
        rows[split] = _read_rows(path) if path.is_file() else []
    order = [(split, i) for split in SPLITS for i in range(len(rows[split]))]
    if limit is not None:
        order = order[:limit]

    # One job per distinct key: two identical pairs are asked (and paid) once.
    jobs: dict[str, _Job] = {}
    for split, i in order:
        row = rows[split][i]
        key = pair_key(model=teacher.model_id, prompt=row["prompt"], answer=row["answer"])
        if key not in jobs:
            jobs[key] = _Job(
                key=key,
                messages=teacher_messages(
                    existing_chapters=existing_chapters_of(row["prompt"]),
                    output_chapter=row["answer"],
                    next_number=row["k"] + 1,
                ),
                book=str(row["book"]),
                k=row["k"],
            )
        jobs[key].rows.append((split, i))

    reasoning_of: dict[str, str] = {}
    results: dict[str, _Result] = {}
    cached_keys: list[str] = []
    cached_tokens = 0
    for key in jobs:
        hit = read_cached(cache, key)
        if hit is not None:
            reasoning_of[key] = hit["reasoning"]
            cached_keys.append(key)
            usage = hit.get("usage") or {}
            cached_tokens += int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
    todo = [job for key, job in jobs.items() if key not in reasoning_of]

    counts = {"done": 0, "failed": 0, "cached": sum(len(jobs[k].rows) for k in cached_keys)}
    tokens = {"prompt": 0, "completion": 0}
    finished = counts["cached"]
    total = len(order)
    aborted = ""

    def report() -> None:
        if on_progress is not None:
            on_progress(
                {
                    "finished": finished,
                    "total": total,
                    **counts,
                    "tokens": tokens["prompt"] + tokens["completion"],
                }
            )

    report()
    summary: dict[str, Any] = {}
    stop = threading.Event()
    runner = _run_jobs(teacher, todo, cache, workers, stop)
    try:
        for job, result in runner:
            results[job.key] = result
            tokens["prompt"] += result.prompt_tokens
            tokens["completion"] += result.completion_tokens
            n = len(job.rows)
            finished += n
            if result.status == "done":
                reasoning_of[job.key] = result.reasoning
                counts["done"] += n
            else:
                counts["failed"] += n
                logger.warning("Pair %s k=%d failed: %s", job.book, job.k, result.reason)
                if result.fatal and not aborted:
                    # Ask nothing new; the calls in flight finish and are counted (and cached).
                    aborted = result.reason
                    stop.set()
            report()
    finally:
        runner.close()  # an interrupt or a failing on_progress: wait for the calls in flight
        # Written however the run ends (an interrupt included), so what was spent is never unknown.
        summary = _summary(
            dataset=dataset,
            out=out,
            cache=cache,
            teacher=teacher,
            jobs=jobs,
            results=results,
            rows=rows,
            total=total,
            counts=counts,
            tokens=tokens,
            cached_tokens=cached_tokens,
            seconds=time.monotonic() - started,
            aborted=aborted,
            workers=workers,
        )
        out.mkdir(parents=True, exist_ok=True)
        (out / SUMMARY_FILENAME).write_text(
            json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    if aborted:
        raise ApplicationError(
            f"Distillation stopped: {aborted} Every pair would fail the same way; "
            f"{counts['done']} new answer(s) were cached and a rerun resumes from them.",
            {"summary": summary},
        )

    by_row = {row: key for key, job in jobs.items() for row in job.rows}
    for split in SPLITS:
        kept = []
        for i, row in enumerate(rows[split]):
            key = by_row.get((split, i))
            if key is None or key not in reasoning_of:
                continue
            reasoning = reasoning_of[key]
            kept.append(
                {
                    **row,
                    "existing_chapters": existing_chapters_of(row["prompt"]),
                    "output_chapter": row["answer"],
                    "reasoning": tag_reasoning(reasoning),
                    "completion": full_completion(reasoning, row["answer"]),
                    "teacher": teacher.model_id,
                }
            )
        write_rows(kept, out / f"{split}.jsonl")
        summary["splits"][split]["written"] = len(kept)
    (out / SUMMARY_FILENAME).write_text(
        json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return summary


def _run_jobs(
    teacher: Teacher, jobs: list[_Job], cache: Path, workers: int, stop: threading.Event
) -> Iterator[tuple[_Job, _Result]]:
    """(job, result) as each finishes, at most `workers` in flight. A job is submitted only when a
    worker is free and `stop` is not set, so stopping (a fatal error, an interrupt) asks nothing new."""
    if not jobs:
        return
    pending = iter(jobs)
    running: dict[Future[_Result], _Job] = {}

    def guarded(job: _Job) -> _Result:
        try:
            return _ask(teacher, job, cache)
        except Exception as exc:  # a bug of ours: one pair's reason, with the trace in the log
            logger.exception("Distilling %s k=%d failed unexpectedly", job.book, job.k)
            return _Result(status="failed", reason=f"Unexpected error: {type(exc).__name__}: {exc}")

    def submit_next() -> None:
        job = None if stop.is_set() else next(pending, None)
        if job is not None:
            running[executor.submit(guarded, job)] = job

    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="distill")
    try:
        for _ in range(workers):
            submit_next()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                yield job, future.result()
                submit_next()
    finally:
        # In-flight calls finish (their answers are cached: already paid for); nothing new starts.
        executor.shutdown(wait=True, cancel_futures=True)


def _summary(
    *,
    dataset: Path,
    out: Path,
    cache: Path,
    teacher: Teacher,
    jobs: dict[str, _Job],
    results: dict[str, _Result],
    rows: dict[str, list[dict[str, Any]]],
    total: int,
    counts: dict[str, int],
    tokens: dict[str, int],
    cached_tokens: int,
    seconds: float,
    aborted: str,
    workers: int,
) -> dict[str, Any]:
    failures = []
    for key, result in results.items():
        if result.status != "failed":
            continue
        for split, i in jobs[key].rows:
            row = rows[split][i]
            failures.append(
                {"split": split, "line": i + 1, "book": row["book"], "k": row["k"], "reason": result.reason}
            )
    failures.sort(key=lambda f: (SPLITS.index(f["split"]), f["line"]))
    reasons: dict[str, int] = {}
    for f in failures:
        reasons[f["reason"]] = reasons.get(f["reason"], 0) + 1
    new = [r for r in results.values() if r.status == "done"]
    return {
        "dataset": str(dataset),
        "out": str(out),
        "cache": str(cache),
        "prompt_version": PROMPT_VERSION,
        "teacher": {**teacher.settings.public(), "model": teacher.model_id},
        "concurrency": workers,
        "pairs": total,
        "done": counts["done"],
        "cached": counts["cached"],
        "failed": counts["failed"],
        "not_asked": total - counts["done"] - counts["cached"] - counts["failed"],
        "failures": failures,
        "failure_reasons": reasons,
        "truncated": sum(1 for r in new if r.finish_reason == "length"),  # answers cut at max_tokens
        "calls": sum(r.calls for r in results.values()),  # teacher requests made, retries included
        "tokens": {
            "prompt": tokens["prompt"],
            "completion": tokens["completion"],
            "total": tokens["prompt"] + tokens["completion"],
            # calls whose provider sent no `usage`: their tokens are not in the counts above
            "unreported_calls": sum(1 for r in results.values() if r.calls and not r.usage_reported),
            "cached": cached_tokens,  # what the cached answers cost when they were asked (not this run)
        },
        "seconds": round(seconds, 3),
        "aborted": aborted,
        "splits": {split: {"rows": len(rows[split]), "written": 0} for split in SPLITS},
    }
