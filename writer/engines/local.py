"""The in-process writer engine: transformers + PEFT on the CPU, no server.

For development, tests and a box without a vLLM server. The base model is loaded once per process
(float32: the CPU has no fast bfloat16 matmul); LoRA adapters are loaded by path into one PeftModel
and switched per call, the least recently used dropped beyond `max_adapters`.

The decoding matches the vllm engine's: the same repetition penalty (transformers' and vLLM's divide
the logit of every token already in the prompt or the answer), OpenAI's frequency and presence
penalties over the answer's tokens, and the two-phase answer of `writer.engines.base.write_answers`
(a batch of prompts of different lengths, left-padded, for the chapters).

`choice_logprobs` (the pairwise judge's) is one forward pass over the templated prompt: the last
position's log-softmax, summed (logsumexp) over every token that spells each choice. Exact, over the
whole vocabulary: no choice is ever `absent`.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from mesu_web.errors import EngineError
from writer.engines.base import (
    JUDGE_CHOICES,
    Adapter,
    ChoiceLogprobs,
    Completion,
    GenerationResult,
    Message,
    ProgressCallback,
    Sampling,
    choice_token_ids,
    line_break_token_ids,
    progress_part,
    report_progress,
    takes_texts,
    write_answers,
)
from writer.model_files import is_model_folder, load_from_gguf, smollm2_gguf_path

logger = logging.getLogger(__name__)
T = TypeVar("T")

# How often a progress callback that takes texts gets the options' text so far: every this many steps
# (a step is a token of every option). Decoding 4 options of 700 tokens takes ~1 ms; a step of the
# 135M model on one CPU thread, ~30 ms.
TEXTS_EVERY_STEPS = 8


@dataclass(frozen=True)
class LocalSettings:
    model_path: str  # a Hugging Face folder; when missing, the packaged GGUF is loaded instead
    model_name: str  # the name results report for the base model (WRITER_MODEL)
    threads: int  # torch CPU threads; 1 on the 2-core dev box (2 threads measured 6-10x slower)
    max_adapters: int = 4  # LoRAs kept loaded; each is 1-10 MB for this 135M model (r = 8..64)

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError("threads must be at least 1")
        if self.max_adapters < 1:
            raise ValueError("max_adapters must be at least 1")

    @classmethod
    def from_django(cls) -> LocalSettings:
        from django.conf import settings

        return cls(
            model_path=str(settings.WRITER_MODEL_PATH),
            model_name=settings.WRITER_MODEL,
            threads=int(settings.WRITER_LOCAL_THREADS),
        )


@functools.lru_cache(maxsize=2)
def _load_tokenizer(model_path: str):  # -> PreTrainedTokenizerBase
    folder = Path(model_path)
    if is_model_folder(folder):
        return AutoTokenizer.from_pretrained(folder)
    gguf = smollm2_gguf_path()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


class _LoadedModel:
    """The base model of one folder, plus the LoRAs loaded into it (one PeftModel, named adapters)."""

    def __init__(self, model_path: str, max_adapters: int) -> None:
        folder = Path(model_path)
        if is_model_folder(folder):
            self.base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
            self.source = str(folder)
        else:
            # No prepared folder: dequantize the packaged GGUF (~20 s) rather than fail.
            logger.info("No model folder at %s; loading the packaged GGUF", folder)
            self.base, _ = load_from_gguf(dtype="float32")
            self.source = str(smollm2_gguf_path())
        self.base.eval()
        self.tokenizer = _load_tokenizer(model_path)
        self.max_adapters = max_adapters
        self.peft: Any = None  # a PeftModel once the first adapter is loaded
        # (resolved path, weights mtime in ns) -> PEFT adapter name, least recently used first. The
        # mtime makes an adapter retrained in place load again.
        self.adapters: OrderedDict[tuple[str, int], str] = OrderedDict()
        self._counter = 0
        # One generation at a time: the active adapter is state of the shared model.
        self.lock = threading.Lock()

    @contextmanager
    def activated(self, adapter: Adapter | None) -> Iterator[Any]:
        """Yield the model to generate with: the base model, or the base model with `adapter` on."""
        if adapter is None:
            # Loading a LoRA injects its layers into the base model's modules, so once one is loaded
            # the base model must be reached with the adapters switched off.
            context = self.peft.disable_adapter() if self.peft is not None else nullcontext()
            with context:
                yield self.peft if self.peft is not None else self.base
            return
        name = self._load_adapter(adapter)
        self.peft.set_adapter(name)
        yield self.peft

    def _load_adapter(self, adapter: Adapter) -> str:
        path = Path(adapter.path)
        weights = [p for p in (path / "adapter_model.safetensors", path / "adapter_model.bin") if p.is_file()]
        if not (path / "adapter_config.json").is_file() or not weights:
            raise EngineError(
                f"The adapter {adapter.name!r} has no adapter_config.json and weights in {path}.",
                retryable=False,
            )
        key = (str(path.resolve()), weights[0].stat().st_mtime_ns)
        if key in self.adapters:
            self.adapters.move_to_end(key)
            return self.adapters[key]
        self._counter += 1
        name = f"adapter_{self._counter}"  # PEFT names become module keys: no dots or dashes
        try:
            if self.peft is None:
                from peft import PeftModel

                self.peft = PeftModel.from_pretrained(self.base, path, adapter_name=name, is_trainable=False)
                self.peft.eval()
            else:
                self.peft.load_adapter(path, adapter_name=name, is_trainable=False)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise EngineError(
                f"The adapter {adapter.name!r} at {path} does not fit the model {self.source}: {exc}",
                retryable=False,
            ) from exc
        self.adapters[key] = name
        logger.info("Loaded adapter %s from %s as %s", adapter.name, path, name)
        while len(self.adapters) > self.max_adapters:
            _, oldest = self.adapters.popitem(last=False)
            self.peft.delete_adapter(oldest)
        return name


@functools.lru_cache(maxsize=1)
def _loaded_model(model_path: str, max_adapters: int) -> _LoadedModel:
    # One base model per process (~540 MB in float32); a different path replaces it.
    return _LoadedModel(model_path, max_adapters)


class _Progress(StoppingCriteria):
    """Never stops generation; reports the new tokens so far (all options) after each step, and to a
    callback that takes them the options' text so far every TEXTS_EVERY_STEPS steps (`texts(rows)`:
    the generated rows, each up to its stop token, made the options' texts)."""

    def __init__(
        self,
        prompt_len: int,
        stop_ids: set[int],
        copies: int,
        callback: ProgressCallback,
        texts: Callable[[list[torch.Tensor]], list[str]],
    ) -> None:
        self.prompt_len = prompt_len
        self.stop_ids = torch.tensor(sorted(stop_ids))
        self.copies = copies  # each generated row stands for this many options (greedy: all the same)
        self.callback = callback
        self.texts = texts
        self.with_texts = takes_texts(callback)
        self.steps = 0

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        generated = input_ids[:, self.prompt_len :]
        counts = _token_counts(generated, self.stop_ids)
        self.steps += 1
        report_progress(
            self.callback,
            int(counts.sum()) * self.copies,
            lambda: self.texts([generated[row, : int(counts[row])] for row in range(generated.shape[0])]),
            with_texts=self.with_texts and self.steps % TEXTS_EVERY_STEPS == 0,
        )
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class _AnswerPenalties(LogitsProcessor):
    """OpenAI's frequency and presence penalties (as vLLM applies them): over the answer's tokens only."""

    def __init__(self, prompt_len: int, frequency: float, presence: float) -> None:
        self.prompt_len = prompt_len
        self.frequency = frequency
        self.presence = presence

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_len :]
        if generated.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)


def _token_counts(generated: torch.Tensor, stop_ids: torch.Tensor) -> torch.Tensor:
    """Per row, the tokens before the first stop token (the padding of a finished row comes after it)."""
    stopped = torch.isin(generated, stop_ids).int().cumsum(dim=1) > 0
    return (~stopped).sum(dim=1)


def _cut_at_stop(text: str, stop: Sequence[str], stop_after: Sequence[str] = ()) -> tuple[str, bool]:
    """`text` up to the first of the stop texts (`stop`: not included; `stop_after`: included), and
    whether one was found."""
    found = [(i, 0) for i in (text.find(s) for s in stop) if i >= 0]
    found += [(i, len(s)) for i, s in ((text.find(s), s) for s in stop_after) if i >= 0]
    if not found:
        return text, False
    at, kept = min(found, key=lambda f: (f[0], -f[1]))
    return text[: at + kept], True


class LocalEngine:
    name = "local"

    def __init__(self, settings: LocalSettings | None = None) -> None:
        # None: read the Django settings at each call; the model is cached per path, not per engine.
        self._settings = settings

    @property
    def settings(self) -> LocalSettings:
        return self._settings if self._settings is not None else LocalSettings.from_django()

    def load(self) -> _LoadedModel:
        """The process's model, loaded on first use (~3 s from a folder, ~20 s from the GGUF)."""
        settings = self.settings
        return _loaded_model(settings.model_path, settings.max_adapters)

    def generate(
        self,
        messages: list[Message],
        *,
        n: int,
        sampling: Sampling,
        adapter: Adapter | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> GenerationResult:
        if n < 1:
            raise ValueError("n must be at least 1")
        settings = self.settings
        torch.set_num_threads(settings.threads)
        loaded = self.load()
        prompt = loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt_tokens: list[int] = []  # of the first call: the prompt and its prefix

        with loaded.lock, loaded.activated(adapter) as model, torch.inference_mode():
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)  # once: the chapters continue the reasoning's draws

            def write(
                prefixes: Sequence[str],
                n_each: int,
                max_tokens: int,
                stop: Sequence[str],
                progress: ProgressCallback | None,
            ) -> list[Completion]:
                pieces, length = self._write(
                    loaded, model, [prompt + p for p in prefixes], n_each, max_tokens, stop, sampling, progress
                )
                prompt_tokens.append(length)
                return pieces

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
                completions = [
                    Completion(text=sampling.prefill + p.text, tokens=p.tokens, finish_reason=p.finish_reason)
                    for p in pieces
                ]
        report_progress(
            on_progress,
            sum(c.tokens for c in completions),
            lambda: [c.text for c in completions],
            with_texts=takes_texts(on_progress),
        )
        return GenerationResult(
            completions=completions,
            model=adapter.name if adapter is not None else settings.model_name,
            prompt_tokens=prompt_tokens[0],
            extra={"engine": "local", "source": loaded.source},
        )

    def choice_logprobs(
        self,
        messages: list[Message],
        choices: Sequence[str] = JUDGE_CHOICES,
        *,
        adapter: Adapter | None = None,
    ) -> ChoiceLogprobs:
        """Each choice's log-probability as the answer's first token (see the module's docstring)."""
        if not choices:
            raise ValueError("choices must not be empty")
        settings = self.settings
        torch.set_num_threads(settings.threads)
        loaded = self.load()
        tokenizer = loaded.tokenizer
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        window = int(getattr(loaded.base.config, "max_position_embeddings", 0) or 0)
        if window and len(ids) + 1 > window:
            raise EngineError(
                f"The prompt ({len(ids)} tokens) and its answer's first token do not fit the model's "
                f"{window}-token window.",
                retryable=False,
            )
        by_choice = choice_token_ids(tokenizer, choices)
        missing = [c for c in choices if not by_choice[c]]
        if missing:
            raise EngineError(
                f"No token of the model at {loaded.source} spells {', '.join(map(repr, missing))}.",
                retryable=False,
            )
        with loaded.lock, loaded.activated(adapter) as model, torch.inference_mode():
            # logits_to_keep=1: only the last position goes through the LM head (the whole prompt's
            # logits would be prompt x vocabulary floats: ~2 GB for 3,000 tokens of a 150k vocabulary).
            output = model(input_ids=torch.tensor([ids]), use_cache=False, logits_to_keep=1)
            last = torch.log_softmax(output.logits[0, -1].float(), dim=-1)
            logprobs = {c: float(torch.logsumexp(last[by_choice[c]], dim=0)) for c in choices}
        return ChoiceLogprobs(
            logprobs=logprobs,
            model=adapter.name if adapter is not None else settings.model_name,
            extra={"engine": "local", "prompt_tokens": len(ids), "token_ids": by_choice},
        )

    def _write(
        self,
        loaded: _LoadedModel,
        model: Any,
        texts: Sequence[str],
        n_each: int,
        max_tokens: int,
        stop: Sequence[str],
        sampling: Sampling,
        on_progress: ProgressCallback | None,
    ) -> tuple[list[Completion], int]:
        """n_each continuations of each text (one generate call: a left-padded batch), and the length
        in tokens of the first text."""
        tokenizer = loaded.tokenizer
        stop_ids = _stop_ids(loaded)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stop_ids)
        sampled = sampling.temperature > 0
        # Greedy decoding gives identical continuations of identical texts: write each text once
        # and copy (transformers refuses num_return_sequences > 1 without sampling).
        unique = list(dict.fromkeys(texts)) if not sampled else list(texts)
        rows_each = n_each if sampled else 1
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in unique]
        width = max(len(i) for i in ids)
        window = int(getattr(loaded.base.config, "max_position_embeddings", 0) or 0)
        if window and width + max_tokens > window:
            raise EngineError(
                f"The prompt ({width} tokens) and {max_tokens} new tokens do not fit the "
                f"model's {window}-token window.",
                retryable=False,
            )
        # Left padding: every row's new tokens start at the same column.
        input_ids = torch.tensor([[pad_id] * (width - len(i)) + i for i in ids])
        attention_mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
        copies = len(texts) * n_each // (len(unique) * rows_each)
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_tokens,
            "num_return_sequences": rows_each,
            "do_sample": sampled,
            "pad_token_id": pad_id,
            "eos_token_id": sorted(stop_ids),
        }
        if sampled:
            # top_k=0: no top-k cut, as vLLM's default, so both engines sample the same distribution.
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        if sampling.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = sampling.repetition_penalty
        if sampling.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = sampling.no_repeat_ngram_size
        if sampling.frequency_penalty or sampling.presence_penalty:
            kwargs["logits_processor"] = LogitsProcessorList(
                [_AnswerPenalties(width, sampling.frequency_penalty, sampling.presence_penalty)]
            )
        if sampling.one_line:
            kwargs["bad_words_ids"] = [[i] for i in line_break_token_ids(tokenizer)]
        if stop or sampling.stop_after:  # (stop_after: set on one-phase answers only, see Sampling)
            kwargs.update(stop_strings=[*stop, *sampling.stop_after], tokenizer=tokenizer)

        def per_piece(rows: list[T]) -> list[T]:
            """Back to one item per (text, n_each): rows come text by text, rows_each per text."""
            by_text = {t: rows[k * rows_each : (k + 1) * rows_each] for k, t in enumerate(unique)}
            pieces: list[T] = []
            for k, text in enumerate(texts):
                own = by_text[text] if not sampled else rows[k * rows_each : (k + 1) * rows_each]
                pieces += own * (n_each // rows_each)
            return pieces

        def texts_so_far(rows: list[torch.Tensor]) -> list[str]:
            decoded = tokenizer.batch_decode(rows, skip_special_tokens=True)
            return per_piece([_cut_at_stop(d, stop, sampling.stop_after)[0] for d in decoded])

        if on_progress is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList(
                [_Progress(width, stop_ids, copies, on_progress, texts_so_far)]
            )
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        generated = output[:, width:]
        counts = _token_counts(generated, torch.tensor(sorted(stop_ids)))
        rows = []
        for row in range(generated.shape[0]):
            count = int(counts[row])
            decoded = tokenizer.decode(generated[row, :count], skip_special_tokens=True)
            text, stopped = _cut_at_stop(decoded, stop, sampling.stop_after)
            finish = "stop" if stopped or count < max_tokens else "length"
            rows.append(Completion(text=text, tokens=count, finish_reason=finish))
        return per_piece(rows), len(ids[0])

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` without special tokens (loads only the tokenizer, not the model)."""
        if not text:
            return 0
        tokenizer = _load_tokenizer(self.settings.model_path)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _stop_ids(loaded: _LoadedModel) -> set[int]:
    ids: set[int] = set()
    eos = loaded.base.generation_config.eos_token_id
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if loaded.tokenizer.eos_token_id is not None:
        ids.add(loaded.tokenizer.eos_token_id)
    if not ids:
        raise EngineError(f"The model at {loaded.source} has no end-of-sequence token.", retryable=False)
    return ids


@functools.cache
def get_local_engine() -> LocalEngine:
    return LocalEngine()


def reset_caches() -> None:
    """Forget the engine and the loaded model (tests that change settings call this)."""
    get_local_engine.cache_clear()
    _loaded_model.cache_clear()
    _load_tokenizer.cache_clear()
