"""The writer engine for vLLM's OpenAI-compatible server and any OpenAI-compatible provider.

The only module that imports `openai`. Each phase of a `generate` is one call for all n options, so
the prompt is processed once: the reasoning (or the one-phase answer) is one chat-completions call
with `n=`; the chapters of the two-phase answer (writer.engines.base.write_answers), one per
reasoning, are one /v1/completions call with a list of prompts, each the conversation with the
assistant's answer so far as rendered by the server's /tokenize (vLLM's prefix cache shares the story
between them). LoRA adapters are loaded into a vLLM server at runtime (POST /v1/load_lora_adapter) and
then addressed by name, like a model.

vLLM's parameters beyond OpenAI's (`EXTENSIONS`: repetition_penalty, continuing an assistant message)
are sent unless WRITER_VLLM_EXTENSIONS is off; a server that refuses one with HTTP 400 (a plain
OpenAI-compatible API) gets the request again without it, once, and never again from this process.

`choice_logprobs` (the pairwise judge's) is one chat completion of one token, greedy, with
`logprobs` and the TOP_LOGPROBS most likely first tokens: each choice's log-probability is the
logsumexp over those of its tokens (`token_choice`: "A", " A", "**A"; case-sensitive, so the article
"a" never counts as a choice). A choice none of whose tokens is among them gets a floor
(`top_choice_logprobs`) and is named `absent`. A provider that returns no log-probabilities is a clear
error: judge with letters (`judge_pairs --mode letters`) there.

Provider notes: a hosted provider (e.g. Venice.AI) needs WRITER_BASE_URL and WRITER_API_KEY; it may
not continue an assistant message (detected, or turn WRITER_PREFILL_REASONING off: the chapter is then
asked for in a user turn after the reasoning, one call per option), has no /tokenize (token counts
fall back to the local tokenizer or an estimate) and cannot load adapters.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai

from mesu_web.errors import (
    EngineError,
    error_body_message,
    is_retryable_status,
    response_message,
    safe_cause,
    secret_free,
)
from writer.engines.base import (
    JUDGE_CHOICES,
    Adapter,
    ChoiceLogprobs,
    Completion,
    GenerationResult,
    Message,
    ProgressCallback,
    Sampling,
    line_break_token_ids,
    logsumexp,
    progress_part,
    report_progress,
    takes_texts,
    token_choice,
    write_answers,
)
from writer.prompting import SOLUTION_END, SOLUTION_START

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Without a tokenizer, ~4 characters of English prose per token (SmolLM2's BPE gives 4.2-4.6 on
# novel text); rounded up so a prompt budget errs on the short side.
CHARS_PER_TOKEN_ESTIMATE = 4

# vLLM's request parameters beyond OpenAI's, by the name a refusal is remembered under. A plain
# OpenAI-compatible API answers HTTP 400 to them ("Unrecognized request argument supplied: ...").
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "repetition_penalty": ("repetition_penalty",),
    "continue_final_message": ("continue_final_message", "add_generation_prompt"),
    "include_stop_str_in_output": ("include_stop_str_in_output",),  # for Sampling.stop_after
}
# The most likely first tokens `choice_logprobs` asks for: vLLM's default --max-logprobs, and OpenAI's
# own limit for top_logprobs.
TOP_LOGPROBS = 20
NO_LOGPROBS_HINT = "judge with `manage.py judge_pairs --mode letters` instead"
# To a server that cannot continue an assistant message, the closed reasoning is the assistant's turn
# and this is the user's next one: the chapter is then a new answer.
CHAPTER_REQUEST = f"Now write the chapter itself, starting right after {SOLUTION_START} and ending with {SOLUTION_END}."
# What vLLM says on every request once its engine process has died (EngineDeadError): the server
# stays down until restarted.
DEAD_ENGINE_MARKERS = ("EngineCore encountered an issue", "EngineDeadError", "Engine loop is not running")


@dataclass(frozen=True)
class VLLMSettings:
    base_url: str  # the OpenAI-compatible root, ending in /v1 (e.g. http://127.0.0.1:8001/v1)
    api_key: str = field(repr=False)  # empty for a local vLLM server; a provider's key otherwise
    model: str  # the served base model name
    timeout: float  # seconds: one HTTP request, and the whole of one streamed generation
    max_retries: int  # further attempts after a transient failure
    retry_backoff: float  # seconds before the first retry, doubled for each further one
    stream: bool  # stream tokens (live progress) instead of one response at the end
    tokenizer_path: str  # a Hugging Face folder with the model's tokenizer, for count_tokens
    extensions: bool = True  # send vLLM's EXTENSIONS (a server that refuses one is detected anyway)
    continue_final: bool = True  # the server may continue an assistant message (vLLM does)
    send_seed: bool = True  # send a Sampling's seed (see WRITER_SEND_SEED)

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, not {self.base_url!r}")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.max_retries < 0 or self.retry_backoff < 0:
            raise ValueError("max_retries and retry_backoff must not be negative")

    @classmethod
    def from_django(cls) -> VLLMSettings:
        from django.conf import settings

        return cls(
            base_url=settings.WRITER_BASE_URL.rstrip("/"),
            api_key=settings.WRITER_API_KEY,
            model=settings.WRITER_MODEL,
            timeout=float(settings.WRITER_TIMEOUT),
            max_retries=int(settings.WRITER_MAX_RETRIES),
            retry_backoff=float(settings.WRITER_RETRY_BACKOFF),
            stream=bool(settings.WRITER_STREAM),
            tokenizer_path=str(settings.WRITER_TOKENIZER_PATH),
            extensions=bool(settings.WRITER_VLLM_EXTENSIONS),
            continue_final=bool(settings.WRITER_PREFILL_REASONING),
            send_seed=bool(settings.WRITER_SEND_SEED),
        )

    @property
    def server_root(self) -> str:
        """The server's root, where vLLM serves /health and /tokenize (outside /v1)."""
        url = self.base_url.rstrip("/")
        return url[: -len("/v1")] if url.endswith("/v1") else url


@functools.lru_cache(maxsize=8)
def _openai_client(settings: VLLMSettings) -> openai.OpenAI:
    # Retries are ours (with backoff and a readable error), so the client must not retry as well.
    return openai.OpenAI(
        base_url=settings.base_url,
        api_key=settings.api_key or "EMPTY",  # the client insists on a key; vLLM ignores it
        max_retries=0,
        timeout=settings.timeout,
    )


@functools.lru_cache(maxsize=8)
def _http_client(settings: VLLMSettings) -> httpx.Client:
    """For the vLLM endpoints the openai client does not know: adapters, /tokenize, /health."""
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    return httpx.Client(timeout=settings.timeout, headers=headers)


@functools.lru_cache(maxsize=4)
def _local_tokenizer(path: str):  # -> PreTrainedTokenizerBase | None
    folder = Path(path)
    if not path or not (folder / "tokenizer_config.json").is_file():
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(folder)
    except Exception:  # a broken folder must not stop generation: the server can still count
        logger.warning(
            "Could not load the tokenizer at %s; counting tokens another way", folder, exc_info=True
        )
        return None


# Adapters known to be loaded, as (base_url, adapter name): checked once per process, not per call.
_loaded_adapters: set[tuple[str, str]] = set()
# Servers found to have no /tokenize (hosted providers): not asked again.
_no_tokenize: set[str] = set()
# base_url -> the EXTENSIONS it refused with HTTP 400: not sent to it again.
_refused: dict[str, set[str]] = {}


def reset_caches() -> None:
    """Forget the engine, clients, tokenizers and loaded adapters (for tests)."""
    get_vllm_engine.cache_clear()
    _openai_client.cache_clear()
    _http_client.cache_clear()
    _local_tokenizer.cache_clear()
    _loaded_adapters.clear()
    _no_tokenize.clear()
    _refused.clear()


class _StreamTimeout(Exception):
    """A streamed generation ran past the settings' timeout (seconds, whole call)."""


@dataclass
class _Call:
    """What one phase's call (or calls, from a provider without /tokenize) brought back."""

    pieces: list[Completion]  # the text after each prefix, prefix-major
    prompt_tokens: int
    completion_tokens: int | None  # the server's count over all pieces, when it gave one
    continued: bool  # whether the server continued the prefix (else the pieces are new answers)


def _choice_text(choice: Any, *, delta: bool) -> str | None:
    """The text of a chat choice (message or delta) or of a completions choice."""
    if hasattr(choice, "text"):
        return choice.text
    part = choice.delta if delta else choice.message
    return part.content if part is not None else None


def _extensions_in(built: tuple[dict[str, Any], bool] | dict[str, Any]) -> set[str]:
    """The EXTENSIONS a built request carries."""
    request = built[0] if isinstance(built, tuple) else built
    extra = request.get("extra_body") or {}
    return {name for name, params in EXTENSIONS.items() if any(p in extra for p in params)}


def _without_stop(text: str, stop: Sequence[str]) -> str:
    """`text` without the stop text it ends with, if any: a request with `stop_after` keeps every stop
    text in the answer (include_stop_str_in_output), but `stop` is the one the answer leaves out."""
    for s in stop:
        if s and text.endswith(s):
            return text[: -len(s)]
    return text


def _first_token_top_logprobs(response: Any) -> list[tuple[str, float]]:
    """(token text, log-probability) of the most likely first tokens of a chat completion's first
    choice (`choices[0].logprobs.content[0].top_logprobs`, and the token it chose when those leave it
    out); [] when the response carries none."""
    choices = getattr(response, "choices", None) or []
    logprobs = getattr(choices[0], "logprobs", None) if choices else None
    content = getattr(logprobs, "content", None) or []
    if not content:
        return []
    first = content[0]
    top = [
        (t.token, float(t.logprob))
        for t in (getattr(first, "top_logprobs", None) or [])
        if getattr(t, "token", None) is not None and getattr(t, "logprob", None) is not None
    ]
    chosen = getattr(first, "token", None)
    known = {token for token, _ in top}
    if chosen is not None and getattr(first, "logprob", None) is not None and chosen not in known:
        top.append((chosen, float(first.logprob)))
    return [(token, lp) for token, lp in top if not math.isnan(lp)]


def top_choice_logprobs(
    top: Sequence[tuple[str, float]], choices: Sequence[str]
) -> tuple[dict[str, float], tuple[str, ...]]:
    """Each choice's log-probability from the most likely first tokens `top` ((token text, logprob),
    at least one): the logsumexp over the tokens that spell it (`token_choice`). A choice with no
    token among them is `absent` (the second value) and gets a floor: it is less likely than every
    token shown, and than what they leave over, so log(min(p_min / 2, 1 - sum(p))) (p_min / 2 when
    rounding leaves nothing over). The floor is a guess within those bounds, never above them."""
    if not top:
        raise ValueError("top must hold at least one token")
    found: dict[str, list[float]] = {c: [] for c in choices}
    for token, lp in top:
        choice = token_choice(token, choices)
        if choice is not None:
            found[choice].append(lp)
    smallest = min(lp for _, lp in top)
    floor = smallest - math.log(2)
    left_over = 1.0 - sum(math.exp(lp) for _, lp in top)
    if left_over > 0:
        floor = min(floor, math.log(left_over))
    absent = tuple(c for c in choices if not found[c])
    return {c: logsumexp(found[c]) if found[c] else floor for c in choices}, absent


class VLLMEngine:
    name = "vllm"

    def __init__(self, settings: VLLMSettings | None = None) -> None:
        # None: read the Django settings at each call (8 attribute reads), so a changed setting takes
        # effect at once; the clients are cached per settings value, not per engine.
        self._settings = settings

    @property
    def settings(self) -> VLLMSettings:
        return self._settings if self._settings is not None else VLLMSettings.from_django()

    # -- generation ---------------------------------------------------------------------------

    def generate(
        self,
        messages: list[Message],
        *,
        n: int,
        sampling: Sampling,
        adapter: Adapter | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> GenerationResult:
        """n options, one call per phase. With `sampling.prefill` (one phase), each text starts with
        the prefill where the server continued it; with `sampling.reasoning_tokens`, the two-phase answer.

        A retry after a failure mid-stream starts that call over, so `on_progress` may go back.
        """
        if n < 1:
            raise ValueError("n must be at least 1")
        return self._with_adapter(
            adapter,
            lambda: self._generate(
                messages, n=n, sampling=sampling, adapter=adapter, on_progress=on_progress
            ),
        )

    def _with_adapter(self, adapter: Adapter | None, fn: Callable[[], T]) -> T:
        """`fn()` with `adapter` loaded on the server; once more, loading it again, when the server
        answers HTTP 404 (it restarted since we loaded it, and forgot it)."""
        settings = self.settings
        for attempt in range(2):
            if adapter is not None:
                self.ensure_adapter(adapter)
            try:
                return fn()
            except EngineError as exc:
                # The server forgot the adapter (it restarted since we loaded it): load it again once.
                if adapter is not None and attempt == 0 and exc.extra.get("status") == 404:
                    logger.info(
                        "Adapter %s is gone from %s; loading it again", adapter.name, settings.base_url
                    )
                    _loaded_adapters.discard((settings.base_url, adapter.name))
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _generate(
        self,
        messages: list[Message],
        *,
        n: int,
        sampling: Sampling,
        adapter: Adapter | None,
        on_progress: ProgressCallback | None,
    ) -> GenerationResult:
        settings = self.settings
        model = adapter.name if adapter is not None else settings.model
        calls: list[_Call] = []

        def write(
            prefixes: Sequence[str], n_each: int, max_tokens: int, stop: Sequence[str], progress: ProgressCallback | None
        ) -> list[Completion]:
            call = self._call(
                lambda: self._write(messages, model, prefixes, n_each, max_tokens, stop, sampling, progress),
                what="generate",
            )
            calls.append(call)
            return call.pieces

        if sampling.reasoning_tokens:
            completions = write_answers(write, n=n, sampling=sampling, on_progress=on_progress)
        else:
            pieces = write(
                [sampling.prefill],
                n,
                sampling.max_tokens,
                sampling.stop,
                progress_part(on_progress, whole=lambda texts: [sampling.prefill + t for t in texts]),
            )
            prefill = sampling.prefill if calls[0].continued else ""
            completions = [
                Completion(text=prefill + _without_stop(p.text, sampling.stop), tokens=p.tokens, finish_reason=p.finish_reason)
                for p in pieces
            ]
        # The last report is the count the options say. Without streaming it is the only one
        # (re-tokenised text can differ by a token or two from what the server generated).
        report_progress(
            on_progress,
            sum(c.tokens for c in completions),
            lambda: [c.text for c in completions],
            with_texts=takes_texts(on_progress),
        )
        counted = [c.completion_tokens for c in calls]
        return GenerationResult(
            completions=completions,
            model=model,
            prompt_tokens=calls[0].prompt_tokens,
            extra={
                "completion_tokens": None if None in counted else sum(counted),
                "phases": len(calls),
                "base_url": settings.base_url,
            },
        )

    # -- the judge's choice ---------------------------------------------------------------------

    def choice_logprobs(
        self,
        messages: list[Message],
        choices: Sequence[str] = JUDGE_CHOICES,
        *,
        adapter: Adapter | None = None,
    ) -> ChoiceLogprobs:
        """Each choice's log-probability as the answer's first token (see the module's docstring):
        one call, `max_tokens=1`, temperature 0, the TOP_LOGPROBS most likely tokens."""
        if not choices:
            raise ValueError("choices must not be empty")
        settings = self.settings
        model = adapter.name if adapter is not None else settings.model
        request = {
            "model": model,
            "messages": list(messages),
            "max_tokens": 1,
            "temperature": 0.0,
            "n": 1,
            "logprobs": True,
            "top_logprobs": TOP_LOGPROBS,
        }
        client = _openai_client(settings)
        try:
            response = self._with_adapter(
                adapter,
                lambda: self._call(
                    lambda: client.chat.completions.create(**request), what="score the choices"
                ),
            )
        except EngineError as exc:
            # A server that refuses the log-probabilities themselves (e.g. vLLM started with a smaller
            # --max-logprobs, or a provider without them): say what to do instead.
            if exc.extra.get("status") == 400 and "logprob" in exc.message.lower():
                exc.message = f"{exc.message} ({NO_LOGPROBS_HINT}, or serve more log-probabilities)"
                exc.args = (exc.message, *exc.args[1:])
            raise
        top = _first_token_top_logprobs(response)
        if not top:
            raise EngineError(
                f"The server at {settings.base_url} returned no log-probabilities for {model}: it (or "
                f"its provider) does not support them; {NO_LOGPROBS_HINT}.",
                retryable=False,
            )
        logprobs, absent = top_choice_logprobs(top, choices)
        usage = getattr(response, "usage", None)
        return ChoiceLogprobs(
            logprobs=logprobs,
            model=model,
            absent=absent,
            extra={
                "base_url": settings.base_url,
                "prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
                "top": [[token, round(lp, 4)] for token, lp in top],
            },
        )

    # -- one phase: pieces after prefixes ------------------------------------------------------

    def _write(
        self,
        messages: list[Message],
        model: str,
        prefixes: Sequence[str],
        n_each: int,
        max_tokens: int,
        stop: Sequence[str],
        sampling: Sampling,
        on_progress: ProgressCallback | None,
    ) -> _Call:
        """n_each pieces after each prefix (the assistant's answer so far), the first prefix's first."""
        settings = self.settings
        if len(prefixes) == 1:
            return self._send(
                "chat",
                lambda allowed: self._chat_request(
                    messages, model, prefixes[0], n_each, max_tokens, stop, sampling, allowed
                ),
                n=n_each,
                max_tokens=max_tokens,
                on_progress=on_progress,
            )
        if self._continues(self._allowed()) and n_each == 1:
            rendered = self._rendered(messages, prefixes)
            if rendered is not None:
                # One call: a prompt per prefix, as the server renders the continued conversation.
                return self._send(
                    "completions",
                    lambda allowed: self._sampling_request(model, max_tokens, stop, sampling, allowed)
                    | {"prompt": rendered, "n": 1},
                    n=len(prefixes),
                    max_tokens=max_tokens,
                    on_progress=on_progress,
                    continued=True,
                )
        # A provider without /tokenize: a call per prefix.
        calls: list[_Call] = []
        for k, prefix in enumerate(prefixes):
            done = sum(c.tokens for call in calls for c in call.pieces)
            written = [c.text for call in calls for c in call.pieces]
            after = [""] * ((len(prefixes) - k - 1) * n_each)  # the prefixes still to write
            calls.append(
                self._write(
                    messages,
                    model,
                    [prefix],
                    n_each,
                    max_tokens,
                    stop,
                    sampling,
                    progress_part(
                        on_progress,
                        before=done,
                        whole=lambda texts, written=written, after=after: [*written, *texts, *after],
                    ),
                )
            )
        counted = [c.completion_tokens for c in calls]
        logger.debug("Wrote %d prefixes in %d calls to %s", len(prefixes), len(calls), settings.base_url)
        return _Call(
            pieces=[piece for call in calls for piece in call.pieces],
            prompt_tokens=calls[0].prompt_tokens,
            completion_tokens=None if None in counted else sum(counted),
            continued=all(c.continued for c in calls),
        )

    def _allowed(self) -> set[str]:
        """The EXTENSIONS this server may be sent now."""
        settings = self.settings
        if not settings.extensions:
            return set()
        return set(EXTENSIONS) - _refused.get(settings.base_url, set())

    def _continues(self, allowed: set[str]) -> bool:
        return self.settings.continue_final and "continue_final_message" in allowed

    def _sampling_request(
        self, model: str, max_tokens: int, stop: Sequence[str], sampling: Sampling, allowed: set[str]
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": model,
            "max_tokens": max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        extra: dict[str, Any] = {}
        stops = list(stop)
        if sampling.stop_after and "include_stop_str_in_output" in allowed:
            stops += sampling.stop_after  # kept in the answer: vLLM then keeps every stop text
            extra["include_stop_str_in_output"] = True
        if stops:
            request["stop"] = stops
        if sampling.one_line:
            tokenizer = _local_tokenizer(self.settings.tokenizer_path)
            if tokenizer is not None:  # without the model's tokenizer, `stop` ends the line instead
                request["logit_bias"] = {str(i): -100 for i in line_break_token_ids(tokenizer)}
        if sampling.seed is not None and self.settings.send_seed:
            request["seed"] = sampling.seed
        # OpenAI's own penalties: sent only when set, as some providers reject even these.
        if sampling.frequency_penalty:
            request["frequency_penalty"] = sampling.frequency_penalty
        if sampling.presence_penalty:
            request["presence_penalty"] = sampling.presence_penalty
        if sampling.repetition_penalty != 1.0 and "repetition_penalty" in allowed:
            extra["repetition_penalty"] = sampling.repetition_penalty
        if extra:
            request["extra_body"] = extra
        return request

    def _chat_request(
        self,
        messages: list[Message],
        model: str,
        prefix: str,
        n: int,
        max_tokens: int,
        stop: Sequence[str],
        sampling: Sampling,
        allowed: set[str],
    ) -> tuple[dict[str, Any], bool]:
        """The chat request for n pieces after `prefix`, and whether the server continues the prefix."""
        request = self._sampling_request(model, max_tokens, stop, sampling, allowed)
        request["messages"] = list(messages)
        request["n"] = n
        continued = bool(prefix) and self._continues(allowed)
        if continued:
            # The answer continues this assistant message instead of starting a new one.
            request["messages"].append({"role": "assistant", "content": prefix})
            request["extra_body"] = {
                **request.get("extra_body", {}),
                "continue_final_message": True,
                "add_generation_prompt": False,
            }
        elif prefix.endswith(SOLUTION_START):
            # The two-phase chapter from a server that does not continue: the closed reasoning is the
            # assistant's turn, and the user asks for the chapter. (Any other prefix is left out.)
            request["messages"] += [
                {"role": "assistant", "content": prefix},
                {"role": "user", "content": CHAPTER_REQUEST},
            ]
        return request, continued

    def _rendered(self, messages: list[Message], prefixes: Sequence[str]) -> list[list[int]] | None:
        """The token ids of each conversation continued with its prefix, as the server renders them
        (vLLM's /tokenize with messages); None from a server without it."""
        settings = self.settings
        if settings.server_root in _no_tokenize:
            return None
        client = _http_client(settings)
        rendered = []
        for prefix in prefixes:
            response = client.post(
                f"{settings.server_root}/tokenize",
                json={
                    "model": settings.model,
                    "messages": [*messages, {"role": "assistant", "content": prefix}],
                    "add_generation_prompt": False,
                    "continue_final_message": True,
                },
            )
            if response.status_code in (404, 405):
                _no_tokenize.add(settings.server_root)
                return None
            response.raise_for_status()  # classified by _call: a 5xx is retried, a 400 is permanent
            rendered.append([int(t) for t in response.json()["tokens"]])
        return rendered

    def _send(
        self,
        kind: str,
        build: Callable[[set[str]], tuple[dict[str, Any], bool] | dict[str, Any]],
        *,
        n: int,
        max_tokens: int,
        on_progress: ProgressCallback | None,
        continued: bool = False,
    ) -> _Call:
        """Send `build(allowed extensions)`. On HTTP 400 to a request that carries extensions, send it
        again without the ones the error names (all, when it names none), until it goes through or
        carries none; the refused ones are remembered for the server once a request goes through."""
        settings = self.settings
        allowed = self._allowed()
        dropped: set[str] = set()
        while True:
            built = build(allowed - dropped)
            request, cont = built if isinstance(built, tuple) else (built, continued)
            try:
                call = self._create(kind, request, n=n, max_tokens=max_tokens, on_progress=on_progress, continued=cont)
            except openai.BadRequestError as exc:
                sent = _extensions_in(request)
                if not sent:
                    raise
                message = error_body_message(exc.body) or exc.message or ""
                dropped |= {name for name in sent if any(p in message for p in EXTENSIONS[name])} or sent
                continue
            if dropped:
                _refused.setdefault(settings.base_url, set()).update(dropped)
                logger.warning(
                    "The writer server at %s refused %s (HTTP 400); not sending %s to it again",
                    settings.base_url,
                    ", ".join(sorted(dropped)),
                    "it" if len(dropped) == 1 else "them",
                )
            return call

    def _create(
        self,
        kind: str,
        request: dict[str, Any],
        *,
        n: int,
        max_tokens: int,
        on_progress: ProgressCallback | None,
        continued: bool,
    ) -> _Call:
        settings = self.settings
        client = _openai_client(settings)
        api = client.chat.completions if kind == "chat" else client.completions
        if settings.stream:
            texts, tokens, finish, usage = self._stream(api, request, n=n, on_progress=on_progress)
        else:
            texts, tokens, finish, usage = self._complete(api, request, n=n)
        # Cut at max_tokens, a piece has exactly max_tokens new tokens, whatever the count said.
        pieces = [
            Completion(text=texts[i], tokens=max_tokens if finish[i] == "length" else tokens[i], finish_reason=finish[i])
            for i in range(n)
        ]
        return _Call(
            pieces=pieces,
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", None),
            continued=continued,
        )

    def _stream(
        self, api: Any, request: dict[str, Any], *, n: int, on_progress: ProgressCallback | None
    ) -> tuple[list[str], list[int], list[str], Any]:
        settings = self.settings
        # The client's timeout bounds each read; this bounds the whole call (seconds).
        deadline = time.monotonic() + settings.timeout
        parts: list[list[str]] = [[] for _ in range(n)]
        # vLLM sends one token per content chunk, so chunks count tokens. A chunk may carry two when
        # a character spans tokens (some CJK, emoji): the count is then slightly low.
        tokens = [0] * n
        finish: list[str | None] = [None] * n
        seen: set[int] = set()
        usage = None
        total = 0
        with_texts = takes_texts(on_progress)  # the options' text so far too (the page's live text)
        stream = api.create(stream=True, stream_options={"include_usage": True}, **request)
        try:
            for chunk in stream:
                if getattr(chunk, "usage", None) is not None:
                    usage = chunk.usage
                progressed = False
                for choice in chunk.choices or []:
                    i = choice.index
                    if not 0 <= i < n:
                        raise self._malformed(f"an option numbered {i} (asked for {n})")
                    seen.add(i)
                    content = _choice_text(choice, delta=True)
                    if content:
                        parts[i].append(content)
                        tokens[i] += 1
                        total += 1
                        progressed = True
                    if choice.finish_reason:
                        finish[i] = choice.finish_reason
                if progressed:
                    report_progress(on_progress, total, lambda: ["".join(p) for p in parts], with_texts=with_texts)
                if time.monotonic() > deadline:
                    raise _StreamTimeout()
        finally:
            stream.close()
        if len(seen) < n:
            raise self._malformed(f"{len(seen)} option(s) where {n} were asked for", retryable=False)
        reasons = []
        for i in range(n):
            if finish[i] is None:
                logger.warning("Option %d from %s ended without a finish reason", i, settings.base_url)
            reasons.append(finish[i] or "unknown")
        return ["".join(p) for p in parts], tokens, reasons, usage

    def _complete(self, api: Any, request: dict[str, Any], *, n: int) -> tuple[list[str], list[int], list[str], Any]:
        response = api.create(**request)
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise self._malformed("no options", retryable=False)
        by_index = {choice.index: choice for choice in choices}
        if any(i not in by_index for i in range(n)):
            raise self._malformed(f"{len(by_index)} option(s) where {n} were asked for", retryable=False)
        texts = [_choice_text(by_index[i], delta=False) or "" for i in range(n)]
        usage = getattr(response, "usage", None)
        if n == 1 and usage is not None and usage.completion_tokens is not None:
            tokens = [usage.completion_tokens]  # exact; with n > 1 the server only gives the sum
        else:
            tokens = [self.count_tokens(text) for text in texts]
        return texts, tokens, [by_index[i].finish_reason or "unknown" for i in range(n)], usage

    def _malformed(self, what: str, *, retryable: bool = False) -> EngineError:
        return EngineError(
            f"The writer server at {self.settings.base_url} sent a malformed answer: {what}.",
            retryable=retryable,
        )

    # -- adapters -----------------------------------------------------------------------------

    def ensure_adapter(self, adapter: Adapter) -> None:
        """Make the server serve `adapter` under its name, loading it from adapter.path if needed.

        The path is read by the server, so it must exist on the server's machine. A name is loaded
        once: vLLM keeps the first weights loaded under a name, so a retrained adapter needs a new name.
        """
        settings = self.settings
        key = (settings.base_url, adapter.name)
        if key in _loaded_adapters:
            return
        if adapter.name not in self.list_models():
            self._call(lambda: self._load_adapter(adapter), what=f"load the adapter {adapter.name!r}")
        _loaded_adapters.add(key)

    def _load_adapter(self, adapter: Adapter) -> None:
        settings = self.settings
        response = _http_client(settings).post(
            f"{settings.base_url}/load_lora_adapter",
            json={"lora_name": adapter.name, "lora_path": str(adapter.path)},
        )
        message = response_message(response)
        if response.status_code == 400 and "already been loaded" in message:
            return  # another worker loaded it between our check and our request
        if is_retryable_status(response.status_code):
            response.raise_for_status()  # classified as transient by _call
        if response.status_code >= 400:
            hint = ""
            if message == "Not Found":  # the route itself is missing, not the adapter
                hint = " (start the server with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)"
            error = EngineError(
                f"The writer server at {settings.base_url} could not load the adapter {adapter.name!r} "
                f"from {adapter.path} (HTTP {response.status_code}): {message}{hint}",
                retryable=False,
                extra={"status": response.status_code},
            )
            raise secret_free(error, settings.api_key)
        logger.info("Loaded adapter %s from %s into %s", adapter.name, adapter.path, settings.base_url)

    # -- helpers ------------------------------------------------------------------------------

    def list_models(self) -> list[str]:
        """The names the server serves: the base model and every loaded adapter."""
        page = self._call(lambda: _openai_client(self.settings).models.list(), what="list models")
        return [model.id for model in page.data]

    def health(self) -> bool:
        """Whether the server answers now (one quick try, no retries; never raises)."""
        settings = self.settings
        client = _http_client(settings)
        try:
            response = client.get(f"{settings.server_root}/health", timeout=min(settings.timeout, 5.0))
            if response.status_code == 404:  # a provider without /health
                response = client.get(f"{settings.base_url}/models", timeout=min(settings.timeout, 5.0))
            return response.status_code == 200
        except httpx.HTTPError:
            return False

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` without special tokens.

        In order: the local tokenizer at settings.tokenizer_path (exact, no network); the server's
        /tokenize (vLLM only); else an estimate of ceil(characters / 4), which errs high for prose.
        """
        if not text:
            return 0
        settings = self.settings
        tokenizer = _local_tokenizer(settings.tokenizer_path)
        if tokenizer is not None:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if settings.server_root not in _no_tokenize:
            try:
                response = _http_client(settings).post(
                    f"{settings.server_root}/tokenize",
                    json={"model": settings.model, "prompt": text, "add_special_tokens": False},
                )
                if response.status_code == 200:
                    return int(response.json()["count"])
                if response.status_code in (404, 405):
                    _no_tokenize.add(settings.server_root)
            except (httpx.HTTPError, ValueError, KeyError):
                logger.warning(
                    "Counting tokens at %s failed; estimating", settings.server_root, exc_info=True
                )
        return math.ceil(len(text) / CHARS_PER_TOKEN_ESTIMATE)

    def _call(self, fn: Callable[[], T], *, what: str) -> T:
        """Run `fn`, retrying transient failures with exponential backoff; raise EngineError at the end."""
        settings = self.settings
        attempts = settings.max_retries + 1
        for attempt in range(attempts):
            try:
                return fn()
            except EngineError:
                raise
            except Exception as exc:
                error = self._classify(exc)
                if error is None:
                    raise
                error = secret_free(error, settings.api_key)  # a provider may quote the key back
                # A dead engine is not back within our backoff (a restart takes a minute or more), and
                # a retry would only see the server gone and lose the reason: say it now. It stays
                # retryable for the task's own, later retries.
                if not error.retryable or error.extra.get("engine_dead"):
                    raise error from safe_cause(exc, settings.api_key)
                if attempt + 1 >= attempts:
                    tries = f" after {attempts} attempts" if attempts > 1 else ""
                    raise EngineError(
                        f"{error.message}{tries} (trying to {what}).", retryable=True, extra=error.extra
                    ) from safe_cause(exc, settings.api_key)
                delay = settings.retry_backoff * 2**attempt  # seconds: 2, 4, 8 with the default 2 s
                logger.warning(
                    "%s; retrying in %.1f s (attempt %d of %d)", error.message, delay, attempt + 2, attempts
                )
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _classify(self, exc: Exception) -> EngineError | None:
        """An EngineError (retryable or not) for a failure we understand; None for a bug of ours."""
        server = f"The writer server at {self.settings.base_url}"
        timeout = f"{self.settings.timeout:g} s"
        if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
            return EngineError(f"{server} did not answer within {timeout}", retryable=True)
        if isinstance(exc, _StreamTimeout):
            return EngineError(f"{server} did not finish the options within {timeout}", retryable=True)
        if isinstance(exc, openai.APIConnectionError | httpx.TransportError):
            cause = exc.__cause__ or exc
            hint = " (is it running? `./dev vllm` starts one)" if "refused" in str(cause).lower() else ""
            return EngineError(f"{server} could not be reached ({cause}){hint}", retryable=True)
        status: int | None = None
        message = ""
        if isinstance(exc, openai.APIStatusError):
            status, message = exc.status_code, error_body_message(exc.body) or exc.message
        elif isinstance(exc, httpx.HTTPStatusError):
            status, message = exc.response.status_code, response_message(exc.response)
        elif isinstance(exc, openai.APIError):
            message = exc.message
        if any(marker in (message or "") for marker in DEAD_ENGINE_MARKERS):
            # vLLM's engine process died (e.g. a crash in the sampler): every request fails, and the
            # API server exits, until someone restarts it. Retryable: `./dev up` restarts it.
            return EngineError(
                f"{server} has stopped: its engine died ({message}). Every request fails until the server "
                "is restarted; `./dev up` restarts it, its log says why it died.",
                retryable=True,
                extra={"status": status, "engine_dead": True},
            )
        if status is not None:
            retryable = is_retryable_status(status)
            verb = "failed" if status >= 500 else "refused the request"
            return EngineError(
                f"{server} {verb} (HTTP {status}): {message}", retryable=retryable, extra={"status": status}
            )
        if isinstance(exc, openai.APIResponseValidationError):
            return EngineError(f"{server} sent a malformed answer: {exc}", retryable=False)
        if isinstance(exc, openai.APIError):  # e.g. an error event in the middle of a stream
            return EngineError(f"{server} failed while answering: {exc.message}", retryable=True)
        return None


@functools.cache
def get_vllm_engine() -> VLLMEngine:
    """The process's engine (it keeps which adapters the server has loaded)."""
    return VLLMEngine()
