"""GRPO training of a LoRA writer: TRL's GRPOTrainer on plain TRL + PEFT, or on Unsloth with CUDA.

Importable without Django. Nothing heavy is imported at module level: Unsloth patches trl,
transformers and peft when it is imported, so it must come first, and only on the CUDA path
(`import_unsloth()`; a `gpu` Celery worker may call it at start-up, before anything imports
transformers).

`run_grpo` takes every hyper-parameter from a validated `GRPOJobConfig`; the same code runs from the
`train_grpo` command, the `gpu` task and tests. It checkpoints into `<out>/checkpoints` (resumed on
the next call), writes the LoRA into `<out>/adapter` with the resolved config beside it
(`mesu_job_config.json`), and checks that every LoRA A and B matrix is non-zero and that the base
weights did not change. With `init_adapter` (a saved LoRA, e.g. `training.sft`'s warm start), the
fresh LoRA of the same shape gets that adapter's weights before the first step (`load_lora_weights`,
the same on both backends).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesu_web.errors import ApplicationError
from training.config import CONFIG_FILENAME, GRPOJobConfig, cuda_available

logger = logging.getLogger(__name__)

TRAIN_FILE = "train.jsonl"
CHECKPOINT_DIR = "checkpoints"
ADAPTER_DIR = "adapter"
# Fields whose change makes a checkpoint unusable (tensor shapes, the model, or the reward layout).
_RESUME_MUST_MATCH = ("base_model", "lora_rank", "target_modules", "reward_names", "backend", "init_adapter")
# Libraries Unsloth patches: imported before it, its patches do not (fully) apply.
_PATCHED_BY_UNSLOTH = ("trl", "transformers", "peft")


@dataclass
class GRPOResult:
    adapter_path: Path | None  # None when the run was cancelled (its checkpoint is kept to resume)
    steps: int  # optimizer steps done in total, resumed ones included
    step_logs: list[dict[str, Any]]  # one per step run in this call: what on_step received
    lora_nonzero: bool  # every LoRA A and B matrix has a non-zero entry
    base_unchanged: bool  # the sampled base tensors are exactly equal before and after training
    backend: str  # "trl" or "unsloth", as used
    seconds: float  # wall time of the whole call, loading included
    cancelled: bool = False
    resumed_from: str | None = None  # the checkpoint folder training continued from
    config_path: Path | None = None  # <adapter>/mesu_job_config.json
    device: str = "cpu"
    prompts_used: int = 0
    prompts_skipped: int = 0  # longer than max_prompt_length
    lora_zero_tensors: list[str] = field(default_factory=list)  # names of all-zero LoRA matrices

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("adapter_path", "config_path"):
            data[key] = str(data[key]) if data[key] is not None else None
        return data


# ---------------------------------------------------------------------------------------------
# Backend


def import_unsloth() -> tuple[bool, str]:
    """Import Unsloth if CUDA is there and it is installed; (imported, why not)."""
    if "unsloth" in sys.modules:
        return True, ""
    if not cuda_available():
        return False, "no CUDA device"
    early = [name for name in _PATCHED_BY_UNSLOTH if name in sys.modules]
    if early:
        logger.warning(
            "Importing Unsloth after %s: its patches may not fully apply; import training.trainer."
            "import_unsloth() at worker start-up instead.",
            ", ".join(early),
        )
    try:
        import unsloth  # noqa: F401
    except Exception as exc:  # ImportError, or Unsloth's own checks failing (driver, versions)
        return False, f"import unsloth failed: {exc}"
    return True, ""


def _choose_backend(config: GRPOJobConfig, cuda: bool) -> tuple[str, str]:
    """(backend, note). Unsloth only with CUDA; 'auto' falls back to TRL and says why."""
    if config.backend == "trl" or (config.device == "cpu"):
        return "trl", ""
    if config.backend == "unsloth":
        ok, why = import_unsloth()
        if not ok:
            raise ApplicationError(f"The Unsloth backend was requested but cannot be used: {why}.")
        return "unsloth", ""
    ok, why = import_unsloth() if cuda else (False, "no CUDA device")
    return ("unsloth", "") if ok else ("trl", f"auto chose TRL + PEFT: {why}")


# ---------------------------------------------------------------------------------------------
# Dataset


def read_pairs(dataset_dir: Path) -> list[dict[str, Any]]:
    """The rows of `<dataset_dir>/train.jsonl`, each with a chat-message `prompt` and an `answer`."""
    path = Path(dataset_dir) / TRAIN_FILE
    if not Path(dataset_dir).is_dir():
        raise ApplicationError(f"The dataset folder {dataset_dir} does not exist.")
    if not path.is_file():
        raise ApplicationError(
            f"The dataset folder {dataset_dir} has no {TRAIN_FILE}; build the dataset first."
        )
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ApplicationError(f"{path} line {number} is not valid JSON: {exc.msg}.") from exc
            problem = _row_problem(row)
            if problem:
                raise ApplicationError(f"{path} line {number}: {problem}")
            rows.append(row)
    if not rows:
        raise ApplicationError(f"{path} is empty: the dataset has no training pairs.")
    return rows


def _row_problem(row: Any) -> str:
    if not isinstance(row, dict):
        return "a row must be a JSON object."
    prompt = row.get("prompt")
    if not isinstance(prompt, list) or not prompt:
        return "'prompt' must be a non-empty list of chat messages."
    for message in prompt:
        if (
            not isinstance(message, dict)
            or not isinstance(message.get("content"), str)
            or "role" not in message
        ):
            return "every prompt message needs a 'role' and a string 'content'."
    if not isinstance(row.get("answer"), str):
        return "'answer' (the reference next chapter) must be a string."
    return ""


def _build_dataset(rows: list[dict[str, Any]]):
    from datasets import Dataset

    # Dataset.from_list takes its columns from the first row; rows may differ (a brand brief on some).
    # Columns TRL reads as a dataset type (prompt-completion, preference) are renamed: a distilled
    # row's `completion` is the teacher's reference, not something to train on as a target.
    rows = [{(f"reference_{k}" if k in _TRL_RESERVED else k): v for k, v in row.items()} for row in rows]
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    return Dataset.from_list([{k: row.get(k) for k in keys} for row in rows])


_TRL_RESERVED = frozenset({"completion", "chosen", "rejected", "messages"})


def _prompt_tokens(tokenizer, messages: list[dict[str, Any]]) -> int:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


# ---------------------------------------------------------------------------------------------
# Progress


def make_callback(
    *,
    reward_keys: list[tuple[str, str]],
    on_step: Callable[[dict], None] | None,
    should_stop: Callable[[], bool] | None,
    step_logs: list[dict[str, Any]],
    state_box: dict[str, Any],
    make_entry: Callable[..., dict] | None = None,
):
    """A TrainerCallback that reports each step and stops (with a checkpoint) when should_stop().

    `make_entry(logs, reward_keys, step=, seconds=)` turns TRL's logged metrics into the step's entry
    (default: GRPO's `_step_entry`; the SFT stage passes its own)."""
    make_entry = make_entry or _step_entry
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def __init__(self) -> None:
            self.t0 = time.perf_counter()
            self.seconds = 0.0
            self.tokens_seen: float | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.tokens_seen = float(getattr(state, "num_input_tokens_seen", 0) or 0)

        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds = time.perf_counter() - self.t0
            if state.global_step < state.max_steps and stop_requested(should_stop):
                state_box["cancelled"] = True
                control.should_training_stop = True
                control.should_save = True  # a cancelled job resumes from here

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "loss" not in logs and "reward" not in logs:
                return  # the end-of-training summary (train_runtime, ...)
            entry = make_entry(logs, reward_keys, step=state.global_step, seconds=self.seconds)
            tokens = logs.get("num_tokens")
            if isinstance(tokens, int | float) and self.tokens_seen is not None and self.seconds > 0:
                entry["tokens_per_second"] = round_metric(max(0.0, tokens - self.tokens_seen) / self.seconds)
                self.tokens_seen = float(tokens)
            step_logs.append(entry)
            if on_step is not None:
                try:
                    on_step(dict(entry))
                except Exception:
                    logger.exception("on_step failed at step %s; training goes on", state.global_step)

    return Progress()


def _step_entry(
    logs: dict[str, Any], reward_keys: list[tuple[str, str]], *, step: int, seconds: float
) -> dict:
    """The per-step dict from TRL's logged metrics (TRL 1.15/1.16 key names)."""
    return {
        "step": step,
        "loss": round_metric(logs.get("loss")),
        "kl": round_metric(logs.get("kl")),  # logged only when beta > 0
        "reward": round_metric(logs.get("reward")),
        "reward_std": round_metric(logs.get("reward_std")),
        "rewards": {name: round_metric(logs.get(f"rewards/{trl_name}/mean")) for name, trl_name in reward_keys},
        "completion_length": round_metric(logs.get("completions/mean_length")),
        "tokens_per_second": None,
        "learning_rate": logs.get("learning_rate"),
        "grad_norm": round_metric(logs.get("grad_norm")),
        "seconds": round_metric(seconds, 3),
    }


def round_metric(value: Any, digits: int = 6) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return round(float(value), digits)
    return None


# ---------------------------------------------------------------------------------------------
# Checks


def snapshot_base(model, count: int = 3) -> dict[str, Any]:
    """Copies of a few frozen base tensors (first and last LoRA-wrapped layer, the embeddings)."""
    named = [(n, p) for n, p in model.named_parameters() if "lora_" not in n]
    wrapped = [n for n, _ in named if n.endswith("base_layer.weight")]
    chosen = [*wrapped[:1], *wrapped[-1:]]
    chosen += [n for n, _ in named if "embed_tokens" in n][:1]
    if not chosen:
        chosen = [n for n, p in named if not p.requires_grad][:count]
    params = dict(named)
    return {n: params[n].detach().to("cpu", copy=True) for n in dict.fromkeys(chosen)}


def keep_base_exact_across_syncs(trainer) -> bool:
    """TRL's colocated vLLM (use_vllm, mode colocate) gets new weights by merging the LoRA into the
    bf16 base weights, reading them and unmerging (trl.generation.vllm_generation: merge_adapter /
    unmerge_adapter in every sync_weights). W + BA - BA is not W in bf16: the frozen base drifts at
    every sync and the drift compounds (huggingface/trl#6688; on the GPU host a 4-step 3B run came back
    with base_unchanged False). So the LoRA-wrapped base weights are copied once before training
    (frozen: the copy is the truth) and written back after each sync. Costs one copy of those weights
    in the model's device memory. Returns False when this TRL has no sync_weights to wrap."""
    generation = getattr(trainer, "vllm_generation", None)
    sync = getattr(generation, "sync_weights", None)
    if sync is None:
        logger.warning("This TRL has no vllm_generation.sync_weights; the base weights are not re-pinned")
        return False
    return pin_base_weights(trainer.model, generation)


def pin_base_weights(model, generation) -> bool:
    """Wrap generation.sync_weights so that the base weights of LoRA-wrapped layers of `model` are
    restored, bit for bit, after every call."""
    import torch

    params = dict(model.named_parameters())
    pristine = {n: p.detach().clone() for n, p in params.items() if n.endswith("base_layer.weight")}
    sync = generation.sync_weights

    @functools.wraps(sync)
    def sync_then_restore_base(*args, **kwargs):
        try:
            return sync(*args, **kwargs)
        finally:
            with torch.no_grad():
                for name, tensor in pristine.items():
                    params[name].data.copy_(tensor)

    generation.sync_weights = sync_then_restore_base
    return bool(pristine)


def base_is_unchanged(model, before: dict[str, Any]) -> bool:
    import torch

    params = dict(model.named_parameters())
    return bool(before) and all(
        n in params and torch.equal(params[n].detach().to("cpu"), t) for n, t in before.items()
    )


def zero_lora_tensors(tensors: dict[str, Any]) -> tuple[list[str], int]:
    """(names of LoRA A/B matrices that are all zero, how many LoRA matrices there are)."""
    lora = {n: t for n, t in tensors.items() if "lora_A" in n or "lora_B" in n}
    return sorted(n for n, t in lora.items() if not bool((t != 0).any())), len(lora)


def check_adapter_nonzero(adapter_dir: Path) -> tuple[bool, list[str]]:
    """The seed's check on a saved adapter: every LoRA A and B matrix has a non-zero entry."""
    from safetensors import safe_open

    path = Path(adapter_dir) / "adapter_model.safetensors"
    if not path.is_file():
        raise ApplicationError(f"No adapter weights at {path}.")
    with safe_open(str(path), framework="pt") as handle:
        zero, total = zero_lora_tensors({k: handle.get_tensor(k) for k in handle.keys()})
    has_a_and_b = total > 0
    return has_a_and_b and not zero, zero


# ---------------------------------------------------------------------------------------------
# The run


def run_grpo(
    *,
    config: GRPOJobConfig,
    dataset_dir: Path,
    out_dir: Path,
    on_step: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: bool = True,
    reward_funcs: Sequence[Callable[..., list[float]]] | None = None,
) -> GRPOResult:
    """Train a LoRA with GRPO on `<dataset_dir>/train.jsonl`; see the module docstring.

    `reward_funcs` defaults to `training.rewards.get_reward_funcs(config.reward_names)`; passing
    callables (one per reward name, same order) is for benchmarks and tests.
    """
    # Unsloth, and the vLLM engine it starts for fast_inference, print banners and logs on stdout
    # (seen on the GPU host: ~80 lines before train_grpo's JSON, which made that output unparseable).
    with _stdout_to_stderr(enabled=_may_use_unsloth(config)):
        return _run_grpo(
            config=config,
            dataset_dir=dataset_dir,
            out_dir=out_dir,
            on_step=on_step,
            should_stop=should_stop,
            resume=resume,
            reward_funcs=reward_funcs,
        )


def _may_use_unsloth(config: GRPOJobConfig) -> bool:
    return config.backend in ("unsloth", "auto") and config.device != "cpu" and cuda_available()


@contextlib.contextmanager
def _stdout_to_stderr(*, enabled: bool) -> Iterator[None]:
    """Point file descriptor 1 at stderr meanwhile (Python prints and C/C++ writes alike), so stdout
    keeps only what the caller prints after training (the train_grpo command's JSON)."""
    saved = None
    if enabled:
        sys.stdout.flush()
        try:
            saved = os.dup(1)
        except OSError:  # no file descriptor 1 (a daemon): nothing to keep clean
            saved = None
    if saved is None:
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _run_grpo(
    *,
    config: GRPOJobConfig,
    dataset_dir: Path,
    out_dir: Path,
    on_step: Callable[[dict], None] | None,
    should_stop: Callable[[], bool] | None,
    resume: bool,
    reward_funcs: Sequence[Callable[..., list[float]]] | None,
) -> GRPOResult:
    started = time.perf_counter()
    dataset_dir, out_dir = Path(dataset_dir).resolve(), Path(out_dir).resolve()
    rows = read_pairs(dataset_dir)  # before any heavy import: a bad dataset fails in milliseconds
    if len(rows) < config.prompts_per_step:
        raise ApplicationError(
            f"The dataset has {len(rows)} pair(s), but one step needs {config.prompts_per_step} prompt(s) "
            f"({config.completions_per_step} completions / {config.num_generations} generations); add pairs "
            "or lower per_device_train_batch_size x gradient_accumulation_steps.",
            {"pairs": len(rows), "prompts_per_step": config.prompts_per_step},
        )
    base_dir = Path(config.base_model)
    if not (base_dir / "config.json").is_file():
        raise ApplicationError(
            f"The base model folder {base_dir} has no config.json (a Hugging Face model folder)."
        )
    if reward_funcs is None:
        from training.rewards import get_reward_funcs

        reward_funcs = get_reward_funcs(list(config.reward_names))
    reward_funcs = list(reward_funcs)
    if len(reward_funcs) != len(config.reward_names):
        raise ApplicationError(
            f"{len(reward_funcs)} reward function(s) for {len(config.reward_names)} reward name(s)."
        )
    preference_reward = None
    if any(str(name).lower() == "human_preference" for name in config.reward_names):
        from training.rewards.preference import preference_model_meta

        # Before the writer loads: no scorer configured (or a folder that is not one) fails in a second.
        preference_reward = preference_model_meta()

    cuda = cuda_available()
    backend, note = _choose_backend(config, cuda)  # imports Unsloth first when it is used
    if note:
        logger.info(note)
    job = config.resolved(cuda=cuda, backend=backend)
    use_cuda = job.device == "cuda"

    import torch

    if not use_cuda:
        # Measured on the 2-core box: two threads were 6-10x slower than one under load.
        torch.set_num_threads(1)

    ckpt_root = out_dir / CHECKPOINT_DIR
    resume_from = checkpoint_to_resume(ckpt_root, job, resume)
    problems = job.init_adapter_problems()  # the config's check again, on this machine's files
    if problems:
        raise ApplicationError(" ".join(problems))

    tokenizer, model, peft_config = load_model(job, base_dir, use_cuda)

    kept, skipped = _filter_prompts(rows, tokenizer, job.max_prompt_length)
    if len(kept) < job.prompts_per_step:
        # TRL's sampler drops a partial batch of prompts: with fewer, training would run no step.
        raise ApplicationError(
            f"Only {len(kept)} prompt(s) fit max_prompt_length={job.max_prompt_length} tokens "
            f"({skipped} longer skipped), but one step needs {job.prompts_per_step} prompt(s) "
            f"({job.completions_per_step} completions / {job.num_generations} generations).",
            {"prompts_used": len(kept), "prompts_skipped": skipped},
        )
    dataset = _build_dataset(kept)

    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(**_grpo_kwargs(job, GRPOConfig, ckpt_root, backend))
    step_logs: list[dict[str, Any]] = []
    state_box: dict[str, Any] = {"cancelled": False}
    # TRL names its metrics after each callable (rewards/<name>/mean); report them by registry name.
    from trl.trainer.utils import get_callable_name

    reward_keys = [
        (name, get_callable_name(f)) for name, f in zip(job.reward_names, reward_funcs, strict=True)
    ]
    callback = make_callback(
        reward_keys=reward_keys,
        on_step=on_step,
        should_stop=should_stop,
        step_logs=step_logs,
        state_box=state_box,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[callback],
    )
    # transformers prints every log dict to stdout (PrinterCallback, or tqdm.write in ProgressCallback);
    # progress goes to on_step, and stdout stays the caller's (the command prints JSON there).
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if job.init_adapter and resume_from is None:
        # A fresh LoRA of the same shape (TRL's peft_config, or Unsloth's get_peft_model), then the saved
        # weights copied into it: the same on both backends, and still trainable. A resumed run takes the
        # checkpoint's weights instead.
        load_lora_weights(trainer.model, Path(job.init_adapter))
    if job.use_vllm and backend == "trl":
        keep_base_exact_across_syncs(trainer)
    base_before = snapshot_base(trainer.model)

    ckpt_root.mkdir(parents=True, exist_ok=True)
    job.save(ckpt_root / CONFIG_FILENAME)  # what a later resume is compared against
    done_steps = checkpoint_step(resume_from) if resume_from else 0
    if resume_from and done_steps >= job.max_steps:
        # transformers would still run one more step past max_steps; the checkpoint is the result.
        logger.info(
            "%s already has %d of %d steps; not training further", resume_from, done_steps, job.max_steps
        )
        load_lora_weights(trainer.model, resume_from)
        steps = done_steps
    elif stop_requested(should_stop):
        # Cancelled while the model loaded (minutes on a big model): stop before the first step.
        state_box["cancelled"] = True
        steps = done_steps
    else:
        if resume_from:
            logger.info("Resuming GRPO from %s (step %d of %d)", resume_from, done_steps, job.max_steps)
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        steps = int(trainer.state.global_step)
    cancelled = bool(state_box["cancelled"]) and steps < job.max_steps
    base_unchanged = base_is_unchanged(trainer.model, base_before)
    adapter_path = config_path = None
    if cancelled:
        zero, total = zero_lora_tensors({n: p.detach() for n, p in trainer.model.named_parameters()})
        lora_nonzero = total > 0 and not zero
    else:
        meta = {
            "backend": backend,
            "backend_note": note,
            "device": job.device,
            "steps": steps,
            "resumed_from": str(resume_from) if resume_from else None,
            "init_adapter": job.init_adapter or None,
            "dataset_dir": str(dataset_dir),
            "prompts_used": len(dataset),
            "prompts_skipped": skipped,
            "versions": library_versions(backend),
        }
        if preference_reward is not None:
            meta["preference_reward"] = preference_reward  # which scorer human_preference used: folder + card
        adapter_path = save_adapter(trainer.model, out_dir / ADAPTER_DIR, job, meta)
        config_path = adapter_path / CONFIG_FILENAME
        lora_nonzero, zero = check_adapter_nonzero(adapter_path)

    return GRPOResult(
        adapter_path=adapter_path,
        steps=steps,
        step_logs=step_logs,
        lora_nonzero=lora_nonzero,
        base_unchanged=base_unchanged,
        backend=backend,
        seconds=round(time.perf_counter() - started, 2),
        cancelled=cancelled,
        resumed_from=str(resume_from) if resume_from else None,
        config_path=config_path,
        device=job.device,
        prompts_used=len(dataset),
        prompts_skipped=skipped,
        lora_zero_tensors=zero,
    )


def checkpoint_to_resume(ckpt_root: Path, job: GRPOJobConfig, resume: bool) -> Path | None:
    if not ckpt_root.is_dir():
        return None
    if not resume:
        shutil.rmtree(ckpt_root)  # starting over: old checkpoints would mix with the new run's
        return None
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(ckpt_root))
    if last is None:
        return None
    saved = ckpt_root / CONFIG_FILENAME
    if saved.is_file():
        previous = json.loads(saved.read_text(encoding="utf-8"))
        changed = [k for k in _RESUME_MUST_MATCH if previous.get(k) != job.to_dict().get(k)]
        if changed:
            raise ApplicationError(
                f"Cannot resume from {last}: {', '.join(changed)} changed since it was written. Train into "
                "a new output folder, or start over (resume off).",
                {"changed": changed, "checkpoint": str(last)},
            )
    return _last_complete_checkpoint(ckpt_root)  # `last` may be one a killed worker was still writing


def _last_complete_checkpoint(ckpt_root: Path) -> Path | None:
    """The newest checkpoint written to the end. transformers writes trainer_state.json last, so a folder
    without it is one a worker was killed while writing: resuming from it would fail on every restart."""
    steps = {}
    for folder in ckpt_root.glob("checkpoint-*"):
        number = folder.name.removeprefix("checkpoint-")
        if number.isdigit() and (folder / "trainer_state.json").is_file():
            steps[int(number)] = folder
    return steps[max(steps)] if steps else None


def stop_requested(should_stop: Callable[[], bool] | None) -> bool:
    if should_stop is None:
        return False
    try:
        return bool(should_stop())
    except Exception:
        logger.exception("should_stop() failed; training goes on")
        return False


def checkpoint_step(checkpoint: Path) -> int:
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        return int(state.get("global_step", 0))
    except (OSError, ValueError) as exc:
        raise ApplicationError(
            f"The checkpoint {checkpoint} has no readable trainer_state.json: {exc}"
        ) from exc


def load_lora_weights(model, folder: Path) -> None:
    """Copy the LoRA weights saved in `folder` (a checkpoint or an adapter) into the PEFT `model`'s LoRA
    of the same shape; ApplicationError unless every LoRA tensor of each side was matched."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(folder) / "adapter_model.safetensors"
    if not path.is_file():
        raise ApplicationError(f"{folder} has no adapter_model.safetensors.")
    saved = load_file(str(path))
    expected = get_peft_model_state_dict(model)
    missing, unexpected = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    wrong = sorted(k for k in set(saved) & set(expected) if saved[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise ApplicationError(
            f"The LoRA in {folder} does not fit the model's: {len(missing)} tensor(s) missing, "
            f"{len(unexpected)} unexpected, {len(wrong)} of another shape (e.g. "
            f"{(missing + unexpected + wrong)[0]}).",
            {"missing": missing[:20], "unexpected": unexpected[:20], "wrong_shape": wrong[:20]},
        )
    set_peft_model_state_dict(model, saved)


def load_model(job: GRPOJobConfig, base_dir: Path, use_cuda: bool):
    """(tokenizer, model, peft_config): PEFT's LoraConfig for TRL to apply, or None when Unsloth has."""
    import torch

    if job.backend == "unsloth":
        from unsloth import FastLanguageModel

        kwargs: dict[str, Any] = {
            "model_name": str(base_dir),
            "max_seq_length": job.max_prompt_length + job.max_completion_length,
            "load_in_4bit": False,
            "fast_inference": job.use_vllm,
            "max_lora_rank": job.lora_rank,
        }
        if job.use_vllm:
            kwargs["gpu_memory_utilization"] = job.vllm_gpu_memory_utilization
        model, tokenizer = FastLanguageModel.from_pretrained(**kwargs)
        model = FastLanguageModel.get_peft_model(
            model,
            r=job.lora_rank,
            lora_alpha=job.lora_alpha,
            lora_dropout=job.lora_dropout,
            target_modules=list(job.target_modules),
            use_gradient_checkpointing="unsloth" if job.gradient_checkpointing else False,
            random_state=job.seed,
        )
        peft_config = None
    else:
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
        # float32 on CPU (bf16 matmuls are slow there and bf16=False); bfloat16 on CUDA.
        dtype = torch.bfloat16 if use_cuda else torch.float32
        model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=dtype)
        if use_cuda:
            model = model.to("cuda")
        peft_config = LoraConfig(
            r=job.lora_rank,
            lora_alpha=job.lora_alpha,
            lora_dropout=job.lora_dropout,
            target_modules=list(job.target_modules),
            task_type="CAUSAL_LM",
        )
    if getattr(tokenizer, "pad_token", None) is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model, peft_config


def _filter_prompts(rows: list[dict[str, Any]], tokenizer, max_prompt_length: int):
    # TRL 1.16 no longer truncates prompts (and truncating a chat from the left would cut the system
    # prompt): prompts over the limit are skipped and counted instead.
    kept = [row for row in rows if _prompt_tokens(tokenizer, row["prompt"]) <= max_prompt_length]
    skipped = len(rows) - len(kept)
    if skipped:
        logger.warning(
            "Skipped %d of %d prompt(s) longer than %d tokens", skipped, len(rows), max_prompt_length
        )
    return kept, skipped


def _grpo_kwargs(job: GRPOJobConfig, grpo_config_cls, ckpt_root: Path, backend: str) -> dict[str, Any]:
    """GRPOConfig arguments from the job, limited to the fields the installed TRL has."""
    use_cuda = job.device == "cuda"
    kwargs: dict[str, Any] = {
        "output_dir": str(ckpt_root),
        "max_steps": job.max_steps,
        "per_device_train_batch_size": job.per_device_train_batch_size,
        "gradient_accumulation_steps": job.gradient_accumulation_steps,
        "num_generations": job.num_generations,
        "max_completion_length": job.max_completion_length,
        "max_prompt_length": job.max_prompt_length,  # older TRL (and Unsloth's) only
        "temperature": job.temperature,
        "beta": job.beta,  # explicit: Unsloth's GRPOConfig defaults to 0.001
        "loss_type": job.loss_type,  # explicit: TRL defaults to "dapo", Unsloth to "bnpo"
        "mask_truncated_completions": job.mask_truncated_completions,
        "learning_rate": job.learning_rate,
        "lr_scheduler_type": job.lr_scheduler_type,
        "weight_decay": job.weight_decay,
        "optim": job.optim,
        "max_grad_norm": job.max_grad_norm,
        "reward_weights": list(job.reward_weights),
        "seed": job.seed,
        "report_to": job.report_to,
        "save_strategy": "steps",
        "save_steps": job.save_steps,
        "save_total_limit": job.save_total_limit,
        "logging_steps": 1,  # on_step is per step: progress, not a hyper-parameter
        "bf16": use_cuda,
        "use_cpu": not use_cuda,
        # Unsloth does its own ("unsloth") checkpointing inside the model.
        "gradient_checkpointing": job.gradient_checkpointing and backend != "unsloth",
        "use_vllm": job.use_vllm,
        "dataloader_num_workers": 0,
        "remove_unused_columns": False,  # rewards get answer, book, k, brand columns as kwargs
        "disable_tqdm": True,
    }
    fields = init_params(grpo_config_cls)
    # transformers 5 reads a warmup_steps float < 1 as a ratio of max_steps (warmup_ratio is gone in 5.24;
    # Unsloth's GRPOConfig defaults warmup_steps to 0.1, so it is always passed).
    kwargs["warmup_steps"] = job.warmup_ratio
    if job.use_vllm and backend == "trl":
        kwargs["vllm_mode"] = "colocate"
        kwargs["vllm_gpu_memory_utilization"] = job.vllm_gpu_memory_utilization
    dropped = sorted(k for k in kwargs if k not in fields)
    if dropped:
        logger.info("This TRL's GRPOConfig has no %s; left out", ", ".join(dropped))
    return {k: v for k, v in kwargs.items() if k in fields}


def init_params(cls) -> set[str]:
    """The keyword arguments a GRPOConfig class takes: its dataclass fields, or, for Unsloth's subclass
    with its own __init__, that signature's named parameters as well."""
    import inspect

    names = {f.name for f in dataclasses.fields(cls) if f.init}
    params = inspect.signature(cls.__init__).parameters
    names |= {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    names.discard("self")
    return names


def save_adapter(model, target: Path, job: GRPOJobConfig, meta: dict[str, Any]) -> Path:
    """Save the LoRA and the resolved config into `target`, replacing it only once both are written."""
    target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        model.save_pretrained(str(tmp))
        job.save(tmp / CONFIG_FILENAME, meta=meta)
        if not (tmp / "adapter_model.safetensors").is_file():
            raise ApplicationError(f"Saving the adapter to {tmp} wrote no adapter_model.safetensors.")
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; the vLLM server may run as another user
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def library_versions(backend: str) -> dict[str, str]:
    import importlib.metadata

    names = ["torch", "transformers", "trl", "peft", "accelerate", "datasets"]
    if backend == "unsloth":
        names.append("unsloth")
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out
