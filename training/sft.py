"""The supervised warm start before GRPO: TRL's SFTTrainer + a PEFT LoRA on the distilled rows.

Importable without Django, like `training.trainer`, whose pieces it reuses: the dataset reader
(`read_pairs`), the model loading (`load_model`: float32 on CPU, bfloat16 on CUDA), the per-step
callback with its stop request, the checkpoint resume, the adapter save and the checks (every LoRA A
and B matrix non-zero, the base weights unchanged). GRPO then continues from the adapter
(`GRPOJobConfig.init_adapter`, `train_grpo --init-adapter`).

What a row becomes (rows as `build_dataset` writes them, after `distill`: `<dataset>/distilled/`):

- prompt: the row's `prompt` chat messages (system + user), as the writer is served them;
- completion: one assistant message, `training.distill.full_completion(reasoning, answer)`:
  the reasoning (the row's `reasoning`, tagged or not) between <start_working_out> and
  <end_working_out>, then the real next chapter (`answer`) between <SOLUTION> and </SOLUTION>:
  exactly what `writer.parsing.parse_output` reads back with format_ok;
- the loss covers the completion tokens only (TRL's prompt-completion format with
  completion_only_loss: the prompt's labels are -100).

A row without reasoning is skipped (`without_reasoning="skip"`, the default: the writer should learn
to reason, and an empty block would teach it not to) or trained with an empty reasoning block
("empty"); either way it is counted. A row longer than `max_length` tokens loses the oldest story text
of its prompt: the system prompt, chapter 0 (the story's details), the newest text and the task stay,
with a visible marker where the text was cut; a row whose completion does not fit even then is dropped
and counted.

Files under `out_dir`: `checkpoints/` (resumed on the next call), `adapter/` (the LoRA, PEFT's files and
`mesu_job_config.json`: the resolved SFTJobConfig with a "_meta" of counts and versions, so
`register_adapter` takes it like a GRPO adapter) and `sft_log.json` (one entry per step, rewritten
after each step).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesu_web.errors import ApplicationError
from training.config import CONFIG_FILENAME, SFTJobConfig, cuda_available
from training.distill import full_completion
from training.trainer import (
    ADAPTER_DIR,
    CHECKPOINT_DIR,
    base_is_unchanged,
    check_adapter_nonzero,
    checkpoint_step,
    checkpoint_to_resume,
    init_params,
    library_versions,
    load_lora_weights,
    load_model,
    make_callback,
    read_pairs,
    round_metric,
    save_adapter,
    snapshot_base,
    stop_requested,
    zero_lora_tensors,
)
from writer.parsing import shorten_to_sentence
from writer.prompting import REASONING_END, REASONING_START

logger = logging.getLogger(__name__)

LOG_FILENAME = "sft_log.json"
# Where a prompt's oldest story text was cut to fit max_length (as writer.prompting marks its cuts).
STORY_SHORTENED = "[… the beginning of the story is shortened for length …]"
# writer.prompting's user message: chapter 0 first; the preference, brand brief and task after the story.
_CHAPTER_ZERO = "## Chapter 0"
_FIRST_STORY_PART = re.compile(r"\n\n(?=## Chapter [1-9]|\[Chapters? [0-9])")
_AFTER_STORY = ("## The reader's preference", "## Brand brief", "## Your task")


@dataclass
class SFTRows:
    """The training examples made from a dataset's rows, and what happened to the others."""

    examples: list[dict[str, Any]]  # {"prompt": messages, "completion": [assistant message]}
    without_reasoning: int = 0  # rows with no reasoning: skipped, or trained with an empty block
    trimmed: int = 0  # rows whose prompt lost its oldest story text to fit max_length
    too_long: int = 0  # rows dropped: the completion does not fit max_length even with the story cut


@dataclass
class SFTResult:
    adapter_path: Path | None  # None when the run was cancelled (its checkpoint is kept to resume)
    steps: int  # optimizer steps done in total, resumed ones included
    step_logs: list[dict[str, Any]]  # one per step run in this call
    final_loss: float | None  # the last logged step's loss
    lora_nonzero: bool
    base_unchanged: bool
    seconds: float
    device: str
    rows_used: int
    rows_without_reasoning: int  # skipped, or trained with an empty reasoning block (config)
    rows_trimmed: int
    rows_too_long: int  # dropped
    without_reasoning: str  # "skip" or "empty": what happened to rows_without_reasoning
    cancelled: bool = False
    resumed_from: str | None = None
    config_path: Path | None = None
    log_path: Path | None = None
    lora_zero_tensors: list[str] = field(default_factory=list)

    @property
    def rows_skipped(self) -> int:
        return self.rows_too_long + (self.rows_without_reasoning if self.without_reasoning == "skip" else 0)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("adapter_path", "config_path", "log_path"):
            data[key] = str(data[key]) if data[key] is not None else None
        data["rows_skipped"] = self.rows_skipped
        return data


# ---------------------------------------------------------------------------------------------
# Rows -> examples


def plain_reasoning(reasoning: str) -> str:
    """The reasoning without the writer's tags around it (`distill` writes it tagged)."""
    text = reasoning.strip()
    if text.startswith(REASONING_START) and text.endswith(REASONING_END):
        text = text[len(REASONING_START) : len(text) - len(REASONING_END)]
    return text.strip()


def completion_of(
    row: dict[str, Any], *, without_reasoning: str, answer: str | None = None, cut: Callable[[str], str] = str
) -> str | None:
    """The target of a row: `full_completion(reasoning, answer)` (`answer`: the row's, or the one
    given; the reasoning passed through `cut`); None for a row without reasoning when those are skipped."""
    reasoning = row.get("reasoning")
    reasoning = cut(plain_reasoning(reasoning)) if isinstance(reasoning, str) else ""
    if not reasoning and without_reasoning == "skip":
        return None
    return full_completion(reasoning, row["answer"] if answer is None else answer)


def cut_answer(tokenizer, answer: str, max_tokens: int) -> str:
    """`answer` cut to its last complete sentence within `max_tokens` tokens (0: kept whole; no sentence
    ends in them: the tokens as they are, to the last whole word)."""
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if not max_tokens or len(ids) <= max_tokens:
        return answer
    head = tokenizer.decode(ids[:max_tokens])
    return shorten_to_sentence(head) or head.rsplit(" ", 1)[0]


def _chat_tokens(tokenizer, messages: list[dict[str, str]], *, generation_prompt: bool) -> int:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _story_span(content: str) -> tuple[int, int]:
    """(start, end) of the story text in a writer user message: after chapter 0's details, before the
    preference, brand brief and task. The whole message when it is not laid out that way."""
    start = 0
    if content.startswith(_CHAPTER_ZERO):
        m = _FIRST_STORY_PART.search(content)
        start = m.start() + 2 if m else len(content)
    ends = [content.rfind(f"\n\n{heading}") for heading in _AFTER_STORY]
    end = min((i for i in ends if i >= start), default=len(content))
    return start, end


def fit_prompt(
    tokenizer, prompt: list[dict[str, str]], completion: list[dict[str, str]], max_length: int
) -> list[dict[str, str]] | None:
    """`prompt` with the oldest story text of its last user message cut so that prompt + completion
    take at most `max_length` tokens (`prompt` itself when it fits); None when nothing can make it fit."""
    if _chat_tokens(tokenizer, prompt + completion, generation_prompt=False) <= max_length:
        return prompt
    users = [i for i, m in enumerate(prompt) if m["role"] == "user"]
    if not users:
        return None
    index = users[-1]
    content = prompt[index]["content"]
    start, end = _story_span(content)
    story_ids = tokenizer(content[start:end], add_special_tokens=False)["input_ids"]

    def with_last(n: int) -> list[dict[str, str]]:
        kept = tokenizer.decode(story_ids[len(story_ids) - n :]) if n else ""
        kept = re.sub(r"^\S*\s", "", kept, count=1)  # a token cut can leave half a word (or character)
        text = f"{content[:start]}{STORY_SHORTENED}\n\n{kept.lstrip()}{content[end:]}"
        return [*prompt[:index], {**prompt[index], "content": text}, *prompt[index + 1 :]]

    def fits(n: int) -> bool:
        return _chat_tokens(tokenizer, with_last(n) + completion, generation_prompt=False) <= max_length

    if not fits(0):
        return None
    lo, hi = 0, len(story_ids)  # fits(lo) holds; find the most story tokens that fit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return with_last(lo)


def sft_examples(
    rows: Sequence[dict[str, Any]],
    tokenizer,
    *,
    max_length: int,
    without_reasoning: str,
    max_answer_tokens: int = 0,
    max_reasoning_tokens: int = 0,
) -> SFTRows:
    """The prompt-completion examples of `rows` (see the module docstring), with the counts; each real
    chapter cut by `cut_answer` to `max_answer_tokens`, each reasoning to `max_reasoning_tokens`."""
    out = SFTRows(examples=[])
    for row in rows:
        answer = cut_answer(tokenizer, row["answer"], max_answer_tokens)
        target = completion_of(
            row,
            without_reasoning=without_reasoning,
            answer=answer,
            cut=lambda text: cut_answer(tokenizer, text, max_reasoning_tokens),
        )
        has_reasoning = isinstance(row.get("reasoning"), str) and bool(plain_reasoning(row["reasoning"]))
        if not has_reasoning:
            out.without_reasoning += 1
        if target is None:
            continue
        # Only role and content: TRL tokenizes the messages through the chat template, and a column of
        # messages must have one shape for the datasets library.
        prompt = [{"role": str(m["role"]), "content": m["content"]} for m in row["prompt"]]
        completion = [{"role": "assistant", "content": target}]
        fitted = fit_prompt(tokenizer, prompt, completion, max_length)
        if fitted is None:
            out.too_long += 1
            continue
        out.trimmed += fitted is not prompt
        out.examples.append({"prompt": fitted, "completion": completion})
    if out.trimmed or out.too_long:
        logger.warning(
            "SFT rows over %d tokens: %d had their oldest story text cut, %d dropped (the completion alone "
            "does not fit)",
            max_length,
            out.trimmed,
            out.too_long,
        )
    return out


# ---------------------------------------------------------------------------------------------
# The trainer


def _sft_entry(logs: dict[str, Any], reward_keys: Any = (), *, step: int, seconds: float) -> dict:
    """The per-step dict from SFTTrainer's logged metrics."""
    return {
        "step": step,
        "loss": round_metric(logs.get("loss")),
        "mean_token_accuracy": round_metric(logs.get("mean_token_accuracy")),
        "num_tokens": logs.get("num_tokens"),
        "tokens_per_second": None,  # filled in by the callback from num_tokens
        "learning_rate": logs.get("learning_rate"),
        "grad_norm": round_metric(logs.get("grad_norm")),
        "seconds": round_metric(seconds, 3),
    }


def _sft_kwargs(job: SFTJobConfig, sft_config_cls, ckpt_root: Path) -> dict[str, Any]:
    """SFTConfig arguments from the job, limited to the fields the installed TRL has."""
    use_cuda = job.device == "cuda"
    kwargs: dict[str, Any] = {
        "output_dir": str(ckpt_root),
        "max_steps": job.max_steps if job.max_steps is not None else -1,  # -1: num_train_epochs decides
        "num_train_epochs": job.num_train_epochs,
        "per_device_train_batch_size": job.per_device_train_batch_size,
        "gradient_accumulation_steps": job.gradient_accumulation_steps,
        "learning_rate": job.learning_rate,
        "lr_scheduler_type": job.lr_scheduler_type,
        "warmup_steps": job.warmup_ratio,  # a float < 1 is a ratio of the steps (transformers 5)
        "weight_decay": job.weight_decay,
        "optim": job.optim,
        "max_grad_norm": job.max_grad_norm,
        "max_length": job.max_length,
        # Rows were fitted to max_length already; a few tokens of tokenizer drift cut the end, never the
        # prompt's system message.
        "truncation_mode": "keep_start",
        "completion_only_loss": True,  # labels -100 on the prompt
        "assistant_only_loss": False,  # SmolLM2's template has no {% generation %} markers
        "packing": False,
        "seed": job.seed,
        "report_to": job.report_to,
        "save_strategy": "steps",
        "save_steps": job.save_steps,
        "save_total_limit": job.save_total_limit,
        "logging_steps": 1,  # the JSON log is per step: progress, not a hyper-parameter
        "bf16": use_cuda,
        "use_cpu": not use_cuda,
        "gradient_checkpointing": job.gradient_checkpointing,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }
    fields = init_params(sft_config_cls)
    dropped = sorted(k for k in kwargs if k not in fields)
    if dropped:
        logger.info("This TRL's SFTConfig has no %s; left out", ", ".join(dropped))
    return {k: v for k, v in kwargs.items() if k in fields}


def make_sft_trainer(
    *,
    job: SFTJobConfig,
    model,
    tokenizer,
    peft_config,
    examples: list[dict[str, Any]],
    ckpt_root: Path,
    callbacks: Sequence[Any] = (),
):
    """TRL's SFTTrainer on `examples` for a resolved `job` (the dataset is tokenized here: labels are
    -100 on the prompt). transformers' stdout log printing is removed: stdout stays the caller's."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(**_sft_kwargs(job, SFTConfig, ckpt_root))
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


# ---------------------------------------------------------------------------------------------
# The run


def run_sft(
    *,
    config: SFTJobConfig,
    dataset_dir: Path,
    out_dir: Path,
    on_step: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: bool = True,
) -> SFTResult:
    """Train a LoRA on `<dataset_dir>/train.jsonl` with SFT; see the module docstring."""
    started = time.perf_counter()
    dataset_dir, out_dir = Path(dataset_dir).resolve(), Path(out_dir).resolve()
    rows = read_pairs(dataset_dir)  # before any heavy import: a bad dataset fails in milliseconds
    with_reasoning = sum(1 for row in rows if plain_reasoning(str(row.get("reasoning") or "")))
    if not with_reasoning and config.without_reasoning == "skip":
        hint = (
            f" {dataset_dir / 'distilled'} has the distilled rows: pass that folder."
            if (dataset_dir / "distilled" / "train.jsonl").is_file()
            else " Distil it first (manage.py distill) and pass <dataset>/distilled."
        )
        raise ApplicationError(
            f"None of the {len(rows)} row(s) of {dataset_dir} has a reasoning to learn, and rows without one "
            f"are skipped (without_reasoning='skip').{hint} Or train them with an empty reasoning block "
            "(without_reasoning='empty').",
            {"rows": len(rows)},
        )
    base_dir = Path(config.base_model)
    if not (base_dir / "config.json").is_file():
        raise ApplicationError(
            f"The base model folder {base_dir} has no config.json (a Hugging Face model folder)."
        )

    job = config.resolved(cuda=cuda_available())
    use_cuda = job.device == "cuda"

    import torch

    if not use_cuda:
        torch.set_num_threads(1)  # as run_grpo: two threads were 6-10x slower on the busy 2-core box

    ckpt_root = out_dir / CHECKPOINT_DIR
    resume_from = checkpoint_to_resume(ckpt_root, job, resume)
    tokenizer, model, peft_config = load_model(job, base_dir, use_cuda)
    made = sft_examples(
        rows,
        tokenizer,
        max_length=job.max_length,
        without_reasoning=job.without_reasoning,
        max_answer_tokens=job.max_answer_tokens,
        max_reasoning_tokens=job.max_reasoning_tokens,
    )
    if not made.examples:
        raise ApplicationError(
            f"No row of {dataset_dir} can be trained: {made.without_reasoning} without reasoning "
            f"({job.without_reasoning}), {made.too_long} too long for max_length={job.max_length} tokens.",
            {"without_reasoning": made.without_reasoning, "too_long": made.too_long},
        )

    log_path = out_dir / LOG_FILENAME
    step_logs: list[dict[str, Any]] = []
    earlier = _read_log(log_path) if resume_from else []
    done_steps = checkpoint_step(resume_from) if resume_from else 0
    earlier = [e for e in earlier if int(e.get("step") or 0) <= done_steps]

    def log_step(entry: dict) -> None:
        _write_log(log_path, earlier + step_logs, job)
        if on_step is not None:
            on_step(entry)

    state_box: dict[str, Any] = {"cancelled": False}
    callback = make_callback(
        reward_keys=[],
        on_step=log_step,
        should_stop=should_stop,
        step_logs=step_logs,
        state_box=state_box,
        make_entry=_sft_entry,
    )
    trainer = make_sft_trainer(
        job=job,
        model=model,
        tokenizer=tokenizer,
        peft_config=peft_config,
        examples=made.examples,
        ckpt_root=ckpt_root,
        callbacks=[callback],
    )
    base_before = snapshot_base(trainer.model)
    ckpt_root.mkdir(parents=True, exist_ok=True)
    job.save(ckpt_root / CONFIG_FILENAME)  # what a later resume is compared against

    if resume_from and job.max_steps is not None and done_steps >= job.max_steps:
        logger.info(
            "%s already has %d of %d steps; not training further", resume_from, done_steps, job.max_steps
        )
        load_lora_weights(trainer.model, resume_from)
        steps = done_steps
    elif stop_requested(should_stop):
        state_box["cancelled"] = True
        steps = done_steps
    else:
        if resume_from:
            logger.info("Resuming SFT from %s (step %d)", resume_from, done_steps)
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        steps = int(trainer.state.global_step)
    cancelled = bool(state_box["cancelled"])
    base_unchanged = base_is_unchanged(trainer.model, base_before)
    all_logs = earlier + step_logs
    final_loss = next((e["loss"] for e in reversed(all_logs) if e.get("loss") is not None), None)
    adapter_path = config_path = None
    if cancelled:
        zero, total = zero_lora_tensors({n: p.detach() for n, p in trainer.model.named_parameters()})
        lora_nonzero = total > 0 and not zero
    else:
        meta = {
            "stage": "sft",
            "backend": "trl",
            "device": job.device,
            "steps": steps,
            "final_loss": final_loss,
            "resumed_from": str(resume_from) if resume_from else None,
            "dataset_dir": str(dataset_dir),
            "rows": len(rows),
            "rows_used": len(made.examples),
            "rows_without_reasoning": made.without_reasoning,
            "rows_trimmed": made.trimmed,
            "rows_too_long": made.too_long,
            "versions": library_versions("trl"),
        }
        adapter_path = save_adapter(trainer.model, out_dir / ADAPTER_DIR, job, meta)
        config_path = adapter_path / CONFIG_FILENAME
        lora_nonzero, zero = check_adapter_nonzero(adapter_path)
    _write_log(
        log_path, all_logs, job, final={"steps": steps, "cancelled": cancelled, "final_loss": final_loss}
    )

    return SFTResult(
        adapter_path=adapter_path,
        steps=steps,
        step_logs=step_logs,
        final_loss=final_loss,
        lora_nonzero=lora_nonzero,
        base_unchanged=base_unchanged,
        seconds=round(time.perf_counter() - started, 2),
        device=job.device,
        rows_used=len(made.examples),
        rows_without_reasoning=made.without_reasoning,
        rows_trimmed=made.trimmed,
        rows_too_long=made.too_long,
        without_reasoning=job.without_reasoning,
        cancelled=cancelled,
        resumed_from=str(resume_from) if resume_from else None,
        config_path=config_path,
        log_path=log_path,
        lora_zero_tensors=zero,
    )


def _read_log(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    steps = data.get("steps") if isinstance(data, dict) else None
    return [e for e in steps if isinstance(e, dict)] if isinstance(steps, list) else []


def _write_log(
    path: Path, steps: list[dict[str, Any]], job: SFTJobConfig, *, final: dict[str, Any] | None = None
) -> None:
    """`sft_log.json`: the config and one entry per step, replaced atomically (a crash keeps the last)."""
    data: dict[str, Any] = {"config": job.to_dict(), "steps": steps}
    if final is not None:
        data["result"] = final
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
