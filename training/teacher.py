"""The distillation teacher: a reasoning model asked one chat question at a time, over HTTP (Venice.AI's
DeepSeek R1, the project's own vLLM server, any OpenAI-compatible endpoint) or in-process (the
writer's local engine). `training.distill` is the pipeline that asks it about every pair.

Importable without Django (the local teacher alone needs it: it goes through `writer.engines`).

Why this module talks to the teacher itself instead of reusing `writer.engines.vllm`: the writer's
engine returns only `content` (a provider's separate `reasoning_content` is dropped), asks for n
options with a prefilled reasoning tag, streams, loads adapters, and words its errors as "the writer
server". A teacher needs one plain call, the R1-style thinking wherever the provider puts it, the
`usage` of every call, and a different failure policy (a 401/402/403/404 stops the whole run, other
4xx fail one pair). So, following "one module per external engine", this is the teacher's engine
module: the settings dataclass, a cached getter (`get_teacher`) and the only `openai` use for the
teacher. What a status means and the message of an error body are the providers' shared ones
(`mesu_web.errors`: `is_retryable_status`, `error_body_message`), as the writer's engine and the
embedder use them. The `local` teacher reuses the writer's in-process engine (`get_engine("local")`).
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from mesu_web.errors import (
    ApplicationError,
    EngineError,
    error_body_message,
    is_retryable_status,
    redact,
    safe_cause,
    secret_free,
)

logger = logging.getLogger(__name__)

ENGINES = ("openai", "local")
# Statuses that would fail every pair the same way (bad key, no credit, no access, wrong URL or model
# name): the run stops at the first one instead of paying for nothing N times.
FATAL_STATUSES = frozenset({401, 402, 403, 404})
RETRY_AFTER_MAX = 60.0  # seconds: the longest Retry-After header we honour

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
        out["base_url"] = url_without_credentials(self.base_url)
        return out


def url_without_credentials(url: str) -> str:
    """`url` to show or log: without a user:password part, a query or a fragment (where a key may hide)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment=""))


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
        return f"The teacher at {url_without_credentials(self.settings.base_url)}"

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
                f"{self._where} sent a malformed answer: no choices in {preview(str(response))}.",
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
            message = redact(error_body_message(exc.body) or exc.message, self.settings.api_key)
            retryable = is_retryable_status(status)
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
                f"{self._where} {verb} (HTTP {status}): {preview(message, 300)}.{hint}",
                retryable=retryable,
                fatal=fatal,
                extra=extra,
            )
        if isinstance(exc, openai.APIResponseValidationError | ValueError):
            # ValueError: a 200 whose body is not JSON (json.JSONDecodeError is one).
            return TeacherError(
                f"{self._where} sent a malformed answer: {preview(redact(str(exc), self.settings.api_key))}.",
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


def _retry_after(exc: Any) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:  # an HTTP date: rare from these APIs; the backoff is used instead
        return None


def preview(text: str, limit: int = 120) -> str:
    """A short, printable quote of `text` for a failure reason (control characters escaped): how a
    teacher's error and a rejected answer quote what the teacher sent."""
    short = text[:limit] + ("…" if len(text) > limit else "")
    return repr(short)
