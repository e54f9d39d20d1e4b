"""The GRPO job's configuration: one validated dataclass, saved beside every adapter it trains.

Importable without Django, torch, TRL or Unsloth (the checks that need torch import it lazily), so a
page can validate a job before it is queued and a GPU box can read a saved config back.

Every hyper-parameter the trainer uses is a field here; `training.trainer.run_grpo` hard-codes none.
`__post_init__` rejects bad combinations with an ApplicationError before any model is loaded, and
`resolved()` turns the "auto" choices (backend, device, optimizer, LoRA alpha, batch size) into the
values a run actually uses; that resolved copy is what the trainer saves as `mesu_job_config.json`.
`SFTJobConfig` is the same for the supervised warm start (`training.sft.run_sft`), saved under the
same name beside its adapter.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from mesu_web.errors import ApplicationError

# q/k/v/o attention and gate/up/down MLP projections: the seed's LoRA targets (Llama-style names,
# which SmolLM2, Llama, Qwen and Mistral share).
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Used only where training.rewards cannot be imported (then names cannot be checked either): the
# format reward alone, the one signal every pair has.
FALLBACK_REWARD_WEIGHTS: dict[str, float] = {"format_exact": 1.0}

BACKENDS = ("auto", "trl", "unsloth")
LOSS_TYPES = ("bnpo", "dapo", "grpo", "dr_grpo")  # those TRL 1.15 (Unsloth's pin) and 1.16 share
DEVICES = ("auto", "cuda", "cpu")
# transformers' SchedulerType values a GRPO job may use.
LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "cosine_with_min_lr",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "warmup_stable_decay",
)
CPU_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adafactor", "sgd")
# bitsandbytes optimizers: CUDA only.
CUDA_ONLY_OPTIMIZERS = ("adamw_8bit", "paged_adamw_8bit", "adamw_bnb_8bit", "paged_adamw_32bit")
OPTIMIZERS = CPU_OPTIMIZERS + CUDA_ONLY_OPTIMIZERS
# Optimizers that have a CPU stand-in when the job lands on a machine without CUDA.
_CPU_FALLBACK_OPTIM = {"adamw_torch_fused": "adamw_torch"}

CONFIG_FILENAME = "mesu_job_config.json"  # beside PEFT's adapter_config.json, never clashing with it


def _default_reward_weights() -> dict[str, float]:
    try:
        from training.rewards import DEFAULT_WEIGHTS
    except ImportError:
        return dict(FALLBACK_REWARD_WEIGHTS)
    if isinstance(DEFAULT_WEIGHTS, dict):
        return {str(k): float(v) for k, v in DEFAULT_WEIGHTS.items()}
    return {str(k): float(v) for k, v in DEFAULT_WEIGHTS}


def _default_reward_names() -> list[str]:
    return list(_default_reward_weights())


def _default_reward_weight_values() -> list[float]:
    return list(_default_reward_weights().values())


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (False where torch itself is missing)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def module_installed(name: str) -> bool:
    """Whether `name` can be imported, without importing it (Unsloth patches libraries on import)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class _SavedConfig:
    """JSON round trip and help texts of a job config dataclass (`_KIND` names it in errors)."""

    _KIND: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, check_device: bool = True) -> Self:
        """Build a config from `to_dict()` output (keys starting with "_", such as "_meta", are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(k for k in data if k not in known and not k.startswith("_"))
        if unknown:
            raise ApplicationError(
                f"Unknown {cls._KIND} config field(s): {', '.join(unknown)}. Known fields: {', '.join(sorted(known))}."
            )
        return cls(**{k: v for k, v in data.items() if k in known}, check_device=check_device)

    def save(self, path: Path, *, meta: dict[str, Any] | None = None) -> Path:
        """Write the config as JSON (plus an optional "_meta" object: versions, backend, steps)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.to_dict()
        if meta:
            data["_meta"] = meta
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path, *, check_device: bool = True) -> Self:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ApplicationError(f"Cannot read the {cls._KIND} config {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ApplicationError(f"The {cls._KIND} config {path} is not a JSON object.")
        return cls.from_dict(data, check_device=check_device)

    @classmethod
    def help_texts(cls) -> dict[str, str]:
        """Field name -> help text (for forms and the command's --help)."""
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}  # type: ignore[arg-type]


@dataclass
class GRPOJobConfig(_SavedConfig):
    _KIND: ClassVar[str] = "GRPO"

    # --- What to train -----------------------------------------------------------------------
    base_model: str = field(
        default="",
        metadata={
            "help": "Folder of the base model in Hugging Face format (config.json, safetensors, tokenizer)."
        },
    )
    backend: str = field(
        default="auto",
        metadata={
            "help": "'unsloth' (CUDA + Unsloth), 'trl' (plain TRL + PEFT, CPU or CUDA), or 'auto': Unsloth when "
            "CUDA is available and Unsloth imports, else TRL."
        },
    )
    device: str = field(
        default="auto",
        metadata={
            "help": "'cuda', 'cpu', or 'auto' (CUDA when torch sees a device). Unsloth and vLLM need CUDA."
        },
    )
    use_vllm: bool = field(
        default=False,
        metadata={
            "help": "Generate completions with vLLM (CUDA only): Unsloth's fast_inference on the Unsloth backend, "
            "TRL's colocated vLLM on the TRL backend."
        },
    )
    vllm_gpu_memory_utilization: float = field(
        default=0.5,
        metadata={"help": "Share of GPU memory vLLM may take when use_vllm is on (0 < x <= 1)."},
    )

    # --- LoRA ------------------------------------------------------------------------------------
    lora_rank: int = field(default=64, metadata={"help": "LoRA rank r (the seed's 64)."})
    lora_alpha: int | None = field(
        default=None,
        metadata={"help": "LoRA alpha; None means alpha = rank (the seed's choice: a scale of 1)."},
    )
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input, 0 <= p < 1."})
    target_modules: list[str] = field(
        default_factory=lambda: list(DEFAULT_TARGET_MODULES),
        metadata={
            "help": "Module names that get a LoRA: the q/k/v/o attention and gate/up/down MLP projections."
        },
    )
    init_adapter: str = field(
        default="",
        metadata={
            "help": "A saved LoRA folder to start from instead of a fresh LoRA (e.g. train_sft's adapter: the "
            "supervised warm start); empty: a fresh LoRA. Its rank, alpha and target modules must be the job's "
            "(train_grpo --init-adapter takes them from the folder)."
        },
    )

    # --- Optimisation --------------------------------------------------------------------------
    learning_rate: float = field(default=5e-6, metadata={"help": "Peak learning rate (after warmup)."})
    lr_scheduler_type: str = field(
        default="cosine", metadata={"help": f"Learning-rate schedule, one of {', '.join(LR_SCHEDULERS)}."}
    )
    warmup_ratio: float = field(
        default=0.1,
        metadata={
            "help": "Share of max_steps spent warming the learning rate up from 0 (0 <= x < 1). Note: the first "
            "warmup step runs at learning rate 0, so a short job wants 0 (with 0.1, a 2-step job trains only in "
            "its second step)."
        },
    )
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW decoupled weight decay."})
    optim: str = field(
        default="adamw_torch_fused",
        metadata={
            "help": "Optimizer name as transformers spells it. 'adamw_torch_fused' becomes 'adamw_torch' on CPU "
            "(recorded in the saved config); 8-bit optimizers need CUDA."
        },
    )
    max_grad_norm: float = field(default=0.1, metadata={"help": "Gradient clipping norm (> 0)."})
    gradient_accumulation_steps: int = field(
        default=4,
        metadata={"help": "Micro-batches per optimizer step (TRL also generates this many batches at once)."},
    )
    per_device_train_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Completions per micro-batch; None means num_generations (one prompt's group per micro-batch). "
            "per_device_train_batch_size x gradient_accumulation_steps must be a multiple of num_generations."
        },
    )
    gradient_checkpointing: bool = field(
        default=True,
        metadata={
            "help": "Recompute activations in the backward pass to save memory ('unsloth' mode on Unsloth)."
        },
    )

    # --- GRPO --------------------------------------------------------------------------------------
    num_generations: int = field(
        default=8, metadata={"help": "Completions sampled per prompt (the GRPO group size, at least 2)."}
    )
    max_prompt_length: int = field(
        default=1024,
        metadata={
            "help": "Tokens a prompt may take after the chat template; longer prompts are skipped and counted "
            "(the dataset builder already trims prompts to its budget)."
        },
    )
    max_completion_length: int = field(default=1024, metadata={"help": "Tokens generated per completion."})
    max_steps: int = field(default=500, metadata={"help": "Optimizer steps to train for (at least 1)."})
    temperature: float = field(
        default=1.0, metadata={"help": "Sampling temperature of the generations (> 0)."}
    )
    beta: float = field(
        default=0.0,
        metadata={
            "help": "KL coefficient against the base model (TRL's default 0: no reference pass, and no KL "
            "logged). Set e.g. 0.001 to keep the writer close to the base model and see KL in the progress."
        },
    )
    loss_type: str = field(
        default="bnpo",
        metadata={
            "help": "How token losses are averaged: 'bnpo' (over the active tokens of the batch; Unsloth's "
            "default), 'dapo' (over the whole accumulated batch; TRL's default, but Unsloth then also forces "
            "mask_truncated_completions, which drops every chapter cut at max_completion_length), 'grpo' (per "
            "sequence; length-biased) or 'dr_grpo' (by a constant). Passed explicitly so both backends agree."
        },
    )
    mask_truncated_completions: bool = field(
        default=False,
        metadata={
            "help": "Leave completions cut off at max_completion_length out of the loss. Off: chapters are long and "
            "most training completions are cut."
        },
    )
    reward_names: list[str] = field(
        default_factory=_default_reward_names,
        metadata={"help": "Reward functions by registry name (training.rewards.REWARDS)."},
    )
    reward_weights: list[float] = field(
        default_factory=_default_reward_weight_values,
        metadata={
            "help": "One weight per reward name, in the same order (the total reward is the weighted sum)."
        },
    )

    # --- Bookkeeping -----------------------------------------------------------------------------
    save_steps: int = field(
        default=250, metadata={"help": "Write a resumable checkpoint every this many steps (and at the end)."}
    )
    save_total_limit: int | None = field(
        default=2, metadata={"help": "Checkpoints kept (older ones are deleted); None keeps all."}
    )
    seed: int = field(default=3407, metadata={"help": "Random seed for LoRA init, sampling and data order."})
    report_to: str = field(
        default="none",
        metadata={"help": "Experiment tracker for TRL's logs ('none': progress goes to on_step only)."},
    )

    # Not a field: a saved GPU config can be read back on a CPU machine with check_device=False.
    check_device: InitVar[bool] = True

    def __post_init__(self, check_device: bool = True) -> None:
        self.target_modules = list(self.target_modules)
        self.reward_names = list(self.reward_names)
        self.reward_weights = [float(w) for w in self.reward_weights]
        errors = self._problems()
        if not errors and check_device:
            errors = self._device_problems()
        if errors:
            raise ApplicationError("Invalid GRPO configuration: " + " ".join(errors), {"errors": errors})

    # ------------------------------------------------------------------------------------------
    # Validation

    @property
    def effective_lora_alpha(self) -> int:
        return self.lora_rank if self.lora_alpha is None else self.lora_alpha

    @property
    def effective_batch_size(self) -> int:
        """per_device_train_batch_size, with None meaning num_generations."""
        return (
            self.num_generations
            if self.per_device_train_batch_size is None
            else self.per_device_train_batch_size
        )

    @property
    def completions_per_step(self) -> int:
        """Completions generated and scored per optimizer step (one process)."""
        return self.effective_batch_size * self.gradient_accumulation_steps

    @property
    def prompts_per_step(self) -> int:
        return self.completions_per_step // self.num_generations

    def _problems(self) -> list[str]:
        e: list[str] = []

        def need(ok: bool, message: str) -> None:
            if not ok:
                e.append(message)

        def is_int(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        need(bool(str(self.base_model).strip()), "base_model is required (a Hugging Face model folder).")
        need(self.backend in BACKENDS, f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}.")
        need(self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}, not {self.device!r}.")
        need(
            0 < self.vllm_gpu_memory_utilization <= 1,
            f"vllm_gpu_memory_utilization must be in (0, 1], not {self.vllm_gpu_memory_utilization}.",
        )
        if self.backend == "unsloth" and self.device == "cpu":
            e.append("backend 'unsloth' needs CUDA, but device is 'cpu'.")
        if self.use_vllm and self.device == "cpu":
            e.append("use_vllm needs CUDA, but device is 'cpu'.")

        e.extend(_lora_problems(self))

        # Optimisation
        need(
            _finite(self.learning_rate) and self.learning_rate > 0,
            f"learning_rate must be > 0, not {self.learning_rate}.",
        )
        need(
            self.lr_scheduler_type in LR_SCHEDULERS,
            f"lr_scheduler_type must be one of {', '.join(LR_SCHEDULERS)}, not {self.lr_scheduler_type!r}.",
        )
        need(0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), not {self.warmup_ratio}.")
        need(
            _finite(self.weight_decay) and self.weight_decay >= 0,
            f"weight_decay must be >= 0, not {self.weight_decay}.",
        )
        need(self.optim in OPTIMIZERS, f"optim must be one of {', '.join(OPTIMIZERS)}, not {self.optim!r}.")
        need(
            _finite(self.max_grad_norm) and self.max_grad_norm > 0,
            f"max_grad_norm must be > 0, not {self.max_grad_norm}.",
        )
        need(
            is_int(self.gradient_accumulation_steps) and self.gradient_accumulation_steps >= 1,
            f"gradient_accumulation_steps must be an integer >= 1, not {self.gradient_accumulation_steps!r}.",
        )
        if self.per_device_train_batch_size is not None:
            need(
                is_int(self.per_device_train_batch_size) and self.per_device_train_batch_size >= 1,
                f"per_device_train_batch_size must be an integer >= 1 (or None), not {self.per_device_train_batch_size!r}.",
            )

        # GRPO
        if not is_int(self.num_generations) or self.num_generations < 2:
            e.append(
                f"num_generations must be at least 2 (GRPO compares completions of the same prompt), "
                f"not {self.num_generations!r}."
            )
        elif (
            is_int(self.gradient_accumulation_steps)
            and is_int(self.effective_batch_size)
            and min(self.gradient_accumulation_steps, self.effective_batch_size) >= 1
        ):
            # TRL's rule (trl/trainer/grpo_config.py): generation_batch_size = per_device_train_batch_size x
            # processes x steps_per_generation (= gradient_accumulation_steps) must be divisible by num_generations.
            if self.completions_per_step % self.num_generations:
                e.append(
                    f"The batch per_device_train_batch_size x gradient_accumulation_steps = "
                    f"{self.effective_batch_size} x {self.gradient_accumulation_steps} = {self.completions_per_step} "
                    f"completions must be divisible by num_generations ({self.num_generations}), so that every "
                    "prompt's group of completions is complete."
                )
        need(
            is_int(self.max_prompt_length) and self.max_prompt_length >= 1,
            f"max_prompt_length must be an integer >= 1, not {self.max_prompt_length!r}.",
        )
        need(
            is_int(self.max_completion_length) and self.max_completion_length >= 1,
            f"max_completion_length must be an integer >= 1, not {self.max_completion_length!r}.",
        )
        need(
            is_int(self.max_steps) and self.max_steps >= 1,
            f"max_steps must be an integer >= 1, not {self.max_steps!r}.",
        )
        need(
            _finite(self.temperature) and self.temperature > 0,
            f"temperature must be > 0, not {self.temperature}.",
        )
        need(_finite(self.beta) and self.beta >= 0, f"beta must be >= 0, not {self.beta}.")
        need(
            self.loss_type in LOSS_TYPES,
            f"loss_type must be one of {', '.join(LOSS_TYPES)}, not {self.loss_type!r}.",
        )
        e.extend(self._reward_problems())

        # Bookkeeping
        need(
            is_int(self.save_steps) and self.save_steps >= 1,
            f"save_steps must be an integer >= 1, not {self.save_steps!r}.",
        )
        if self.save_total_limit is not None:
            need(
                is_int(self.save_total_limit) and self.save_total_limit >= 1,
                f"save_total_limit must be an integer >= 1 (or None to keep all), not {self.save_total_limit!r}.",
            )
        need(is_int(self.seed) and self.seed >= 0, f"seed must be an integer >= 0, not {self.seed!r}.")
        need(bool(str(self.report_to).strip()), "report_to must be a tracker name or 'none'.")
        return e

    def _reward_problems(self) -> list[str]:
        e: list[str] = []
        if not self.reward_names:
            return ["reward_names must name at least one reward function."]
        if len(self.reward_weights) != len(self.reward_names):
            e.append(
                f"reward_weights has {len(self.reward_weights)} value(s) for {len(self.reward_names)} reward "
                f"name(s) ({', '.join(self.reward_names)}); give one weight per reward."
            )
        # The registry matches names case-insensitively, so "bleu" and "BLEU" are the same reward.
        lowered = [str(n).lower() for n in self.reward_names]
        dupes = sorted({n for n in self.reward_names if lowered.count(str(n).lower()) > 1})
        if dupes:
            e.append(f"reward_names lists {', '.join(dupes)} more than once.")
        if not all(_finite(w) for w in self.reward_weights):
            e.append("reward_weights must be finite numbers.")
        elif self.reward_weights and not any(self.reward_weights):
            e.append("reward_weights are all 0: the job would have no reward to learn from.")
        try:
            from training.rewards import get_reward_funcs
        except ImportError:
            return e  # no registry here (a bare GPU box): names are checked where the job runs
        try:
            get_reward_funcs(list(self.reward_names))
        except (ApplicationError, KeyError, ValueError) as exc:
            message = getattr(exc, "message", None) or (exc.args[0] if exc.args else str(exc))
            e.append(f"Unknown reward: {message}")
        return e

    def _device_problems(self) -> list[str]:
        """Requests that need CUDA (or a package) this machine lacks; checked without loading a model."""
        needs_cuda = [
            reason
            for reason, wanted in (
                ("backend 'unsloth'", self.backend == "unsloth"),
                ("use_vllm", self.use_vllm),
                ("device 'cuda'", self.device == "cuda"),
                (f"optim {self.optim!r}", self.optim in CUDA_ONLY_OPTIMIZERS),
            )
            if wanted
        ]
        e: list[str] = []
        if needs_cuda and not cuda_available():
            e.append(
                f"{' and '.join(needs_cuda)} need(s) CUDA, but torch sees no CUDA device on this machine; "
                "use backend 'trl' (or 'auto') without vLLM and an optimizer such as 'adamw_torch'."
            )
        if self.backend == "unsloth" and not module_installed("unsloth"):
            e.append(
                "backend 'unsloth' was requested, but Unsloth is not installed here; use 'trl' or 'auto'."
            )
        if self.use_vllm and not module_installed("vllm"):
            e.append("use_vllm was requested, but vLLM is not installed in this environment.")
        e.extend(self.init_adapter_problems())
        return e

    def init_adapter_problems(self) -> list[str]:
        """Why `init_adapter` cannot start this job (missing here, or a LoRA of another shape); [] when
        it can or is not set. A check of this machine's files: the trainer runs it again before loading."""
        if not str(self.init_adapter).strip():
            return []
        try:
            lora = adapter_lora_settings(Path(self.init_adapter))
        except ApplicationError as exc:
            return [exc.message]
        mine = {
            "lora_rank": self.lora_rank,
            "lora_alpha": self.effective_lora_alpha,
            "target_modules": sorted(self.target_modules),
        }
        changed = [f"{k} {lora[k]!r} (the job's {mine[k]!r})" for k in mine if lora[k] != mine[k]]
        if changed:
            return [
                f"init_adapter {self.init_adapter} is a LoRA of another shape: {', '.join(changed)}; give the "
                "job the adapter's LoRA settings (train_grpo --init-adapter does when they are left out)."
            ]
        return []

    # ------------------------------------------------------------------------------------------
    # Resolution

    def resolved(self, *, cuda: bool | None = None, backend: str | None = None) -> GRPOJobConfig:
        """A copy with every automatic choice made: the values a run really uses (and saves).

        `cuda` defaults to what torch sees; `backend` lets the trainer record a fallback (auto picked
        Unsloth but it failed to import, so TRL ran).
        """
        cuda = cuda_available() if cuda is None else cuda
        device = self.device if self.device != "auto" else ("cuda" if cuda else "cpu")
        if backend is None:
            backend = self.backend
            if backend == "auto":
                backend = "unsloth" if device == "cuda" and module_installed("unsloth") else "trl"
        optim = self.optim if device == "cuda" else _CPU_FALLBACK_OPTIM.get(self.optim, self.optim)
        return dataclasses.replace(
            self,
            backend=backend,
            device=device,
            optim=optim,
            lora_alpha=self.effective_lora_alpha,
            per_device_train_batch_size=self.effective_batch_size,
            check_device=False,  # resolution chooses only what this machine has; validated above
        )

    # ------------------------------------------------------------------------------------------
    # Serialisation (to_dict, from_dict, save, load, help_texts: _SavedConfig)

    @classmethod
    def from_form(cls, data: Mapping[str, Any], *, base_model: str) -> GRPOJobConfig:
        """The config of a job started from the admin page (`training.forms.TrainingJobForm`'s
        cleaned_data): one prompt's group per micro-batch, each chosen reward (comma-separated names)
        weighted 1.0, and the learning rate and warmup ratio the form gave (left empty: the defaults
        here). ApplicationError on a bad value or combination, as from the constructor."""
        names = [n.strip() for n in str(data["rewards"]).split(",") if n.strip()]
        optional = {key: data[key] for key in ("learning_rate", "warmup_ratio") if data.get(key) is not None}
        return cls(
            base_model=base_model,
            max_steps=data["max_steps"],
            num_generations=data["num_generations"],
            per_device_train_batch_size=data["num_generations"],
            max_completion_length=data["max_completion_length"],
            lora_rank=data["lora_rank"],
            gradient_accumulation_steps=data["gradient_accumulation_steps"],
            reward_names=names,
            reward_weights=[1.0] * len(names),
            **optional,
        )


ADAPTER_CONFIG_FILENAME = "adapter_config.json"  # PEFT's


def adapter_lora_settings(adapter_dir: Path) -> dict[str, Any]:
    """The LoRA shape of a saved PEFT adapter folder, in job-config terms: lora_rank, lora_alpha,
    target_modules (sorted). ApplicationError when the folder is not a LoRA adapter."""
    adapter_dir = Path(adapter_dir)
    path = adapter_dir / ADAPTER_CONFIG_FILENAME
    if not path.is_file():
        raise ApplicationError(f"{adapter_dir} is not a LoRA adapter folder (no {ADAPTER_CONFIG_FILENAME}).")
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        raise ApplicationError(f"{adapter_dir} has no adapter_model.safetensors (the LoRA weights).")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ApplicationError(f"Cannot read {path}: {exc}") from exc
    modules = data.get("target_modules") if isinstance(data, dict) else None
    if not isinstance(modules, list) or not isinstance(data.get("r"), int):
        # PEFT also allows a regex string for target_modules; jobs here always name the modules.
        raise ApplicationError(f"{path} names no LoRA rank 'r' and target_modules list.")
    return {
        "lora_rank": data["r"],
        "lora_alpha": data.get("lora_alpha") or data["r"],
        "target_modules": sorted(str(m) for m in modules),
    }


def _lora_problems(config: Any) -> list[str]:
    """The LoRA fields' checks, shared by the GRPO and SFT configs."""
    e: list[str] = []
    rank, alpha = config.lora_rank, config.lora_alpha
    if not (isinstance(rank, int) and not isinstance(rank, bool) and rank >= 1):
        e.append(f"lora_rank must be an integer >= 1, not {rank!r}.")
    if alpha is not None and not (isinstance(alpha, int | float) and alpha > 0):
        e.append(f"lora_alpha must be > 0 (or None for alpha = rank), not {alpha!r}.")
    if not 0 <= config.lora_dropout < 1:
        e.append(f"lora_dropout must be in [0, 1), not {config.lora_dropout}.")
    if not config.target_modules:
        e.append("target_modules must name at least one module.")
    if not all(isinstance(m, str) and m.strip() for m in config.target_modules):
        e.append("target_modules must be non-empty module names.")
    return e


# What run_sft does with a row that has no distilled reasoning.
WITHOUT_REASONING = ("skip", "empty")


@dataclass
class SFTJobConfig(_SavedConfig):
    """The supervised warm start (`training.sft.run_sft`): TRL's SFTTrainer + a PEFT LoRA on the
    distilled rows, loss on the completion only. Plain TRL + PEFT on CPU or CUDA (no Unsloth)."""

    _KIND: ClassVar[str] = "SFT"

    base_model: str = field(
        default="",
        metadata={
            "help": "Folder of the base model in Hugging Face format (config.json, safetensors, tokenizer)."
        },
    )
    device: str = field(
        default="auto", metadata={"help": "'cuda', 'cpu', or 'auto' (CUDA when torch sees a device)."}
    )

    # --- LoRA: the same shape GRPO then continues from (GRPOJobConfig's defaults) ----------------
    lora_rank: int = field(default=64, metadata={"help": "LoRA rank r."})
    lora_alpha: int | None = field(default=None, metadata={"help": "LoRA alpha; None means alpha = rank."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input, 0 <= p < 1."})
    target_modules: list[str] = field(
        default_factory=lambda: list(DEFAULT_TARGET_MODULES),
        metadata={"help": "Module names that get a LoRA (attention and MLP projections)."},
    )

    # --- Optimisation ------------------------------------------------------------------------
    learning_rate: float = field(
        default=1e-4, metadata={"help": "Peak learning rate (LoRA SFT: ~1e-4, 20x GRPO's default)."}
    )
    lr_scheduler_type: str = field(
        default="cosine", metadata={"help": f"Learning-rate schedule, one of {', '.join(LR_SCHEDULERS)}."}
    )
    warmup_ratio: float = field(
        default=0.03, metadata={"help": "Share of the steps spent warming the learning rate up (0 <= x < 1)."}
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW decoupled weight decay."})
    optim: str = field(
        default="adamw_torch_fused",
        metadata={
            "help": "Optimizer name as transformers spells it ('adamw_torch_fused' is 'adamw_torch' on CPU)."
        },
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (> 0)."})
    num_train_epochs: float = field(
        default=1.0, metadata={"help": "Passes over the rows (> 0); max_steps, when set, wins."}
    )
    max_steps: int | None = field(
        default=None, metadata={"help": "Optimizer steps to train for; None: num_train_epochs decides."}
    )
    per_device_train_batch_size: int = field(default=1, metadata={"help": "Rows per micro-batch."})
    gradient_accumulation_steps: int = field(
        default=8, metadata={"help": "Micro-batches per optimizer step (8 rows a step by default)."}
    )
    max_length: int = field(
        default=8192,
        metadata={
            "help": "Tokens of prompt + completion (chat template included). A longer row loses the oldest "
            "story text of its prompt (the system prompt, chapter 0 and the task stay); a row whose completion "
            "does not fit even so is dropped and counted."
        },
    )
    gradient_checkpointing: bool = field(
        default=True, metadata={"help": "Recompute activations in the backward pass to save memory."}
    )

    # --- Data --------------------------------------------------------------------------------------
    max_answer_tokens: int = field(
        default=400,
        metadata={
            "help": "Tokens of the real chapter kept in a completion, cut after its last complete sentence "
            "(0: the whole chapter). The writer serves chapters of WRITER_MAX_NEW_TOKENS (512): trained on "
            "whole 5,000-token chapters it would learn to write past its limit and never close </SOLUTION>; "
            "trained on chapters of exactly 512 (run10) it closed 9-16 % of its answers, on 400 (run11) 70 %."
        },
    )
    max_reasoning_tokens: int = field(
        default=96,
        metadata={
            "help": "Tokens of the distilled reasoning kept, cut after its last complete sentence (0: all). "
            "The writer serves a reasoning of WRITER_REASONING_TOKENS (128); a target under it leaves room."
        },
    )
    without_reasoning: str = field(
        default="skip",
        metadata={
            "help": "Rows with no distilled reasoning: 'skip' (counted; the writer should learn to reason) or "
            "'empty' (train them with an empty reasoning block, the format still exact)."
        },
    )

    # --- Bookkeeping -----------------------------------------------------------------------------
    save_steps: int = field(
        default=100, metadata={"help": "Write a resumable checkpoint every this many steps."}
    )
    save_total_limit: int | None = field(
        default=2, metadata={"help": "Checkpoints kept (older ones are deleted); None keeps all."}
    )
    seed: int = field(default=3407, metadata={"help": "Random seed for LoRA init and data order."})
    report_to: str = field(
        default="none", metadata={"help": "Experiment tracker ('none': the JSON log only)."}
    )

    check_device: InitVar[bool] = True

    # The admin form's field (`training.forms.TrainingJobForm`) -> the field here, for `from_form` and
    # for showing a refused value beside the form field it came from.
    FORM_FIELDS: ClassVar[dict[str, str]] = {
        "sft_epochs": "num_train_epochs",
        "sft_learning_rate": "learning_rate",
        "sft_max_steps": "max_steps",
        "sft_max_length": "max_length",
        "sft_max_answer_tokens": "max_answer_tokens",
        "sft_max_reasoning_tokens": "max_reasoning_tokens",
        "lora_rank": "lora_rank",
        "lora_alpha": "lora_alpha",
    }

    def __post_init__(self, check_device: bool = True) -> None:
        self.target_modules = list(self.target_modules)
        errors = self._problems()
        if not errors and check_device and self.device == "cuda" and not cuda_available():
            errors.append("device 'cuda' needs CUDA, but torch sees no CUDA device on this machine.")
        if errors:
            raise ApplicationError("Invalid SFT configuration: " + " ".join(errors), {"errors": errors})

    @property
    def backend(self) -> str:
        return "trl"  # what training.trainer.load_model reads: plain TRL + PEFT

    @property
    def effective_lora_alpha(self) -> int:
        return self.lora_rank if self.lora_alpha is None else self.lora_alpha

    def _problems(self) -> list[str]:
        def is_int(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        checks = [
            (bool(str(self.base_model).strip()), "base_model is required (a Hugging Face model folder)."),
            (self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}, not {self.device!r}."),
            (_finite(self.learning_rate) and self.learning_rate > 0, f"learning_rate must be > 0, not {self.learning_rate}."),
            (self.lr_scheduler_type in LR_SCHEDULERS, f"lr_scheduler_type must be one of {', '.join(LR_SCHEDULERS)}, not {self.lr_scheduler_type!r}."),
            (_finite(self.warmup_ratio) and 0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), not {self.warmup_ratio}."),
            (_finite(self.weight_decay) and self.weight_decay >= 0, f"weight_decay must be >= 0, not {self.weight_decay}."),
            (self.optim in OPTIMIZERS, f"optim must be one of {', '.join(OPTIMIZERS)}, not {self.optim!r}."),
            (_finite(self.max_grad_norm) and self.max_grad_norm > 0, f"max_grad_norm must be > 0, not {self.max_grad_norm}."),
            (_finite(self.num_train_epochs) and self.num_train_epochs > 0, f"num_train_epochs must be > 0, not {self.num_train_epochs}."),
            (self.max_steps is None or (is_int(self.max_steps) and self.max_steps >= 1), f"max_steps must be an integer >= 1 (or None), not {self.max_steps!r}."),
            (is_int(self.per_device_train_batch_size) and self.per_device_train_batch_size >= 1, f"per_device_train_batch_size must be an integer >= 1, not {self.per_device_train_batch_size!r}."),
            (is_int(self.gradient_accumulation_steps) and self.gradient_accumulation_steps >= 1, f"gradient_accumulation_steps must be an integer >= 1, not {self.gradient_accumulation_steps!r}."),
            # A prompt needs room: the chat template alone is ~20 tokens on SmolLM2.
            (is_int(self.max_length) and self.max_length >= 64, f"max_length must be an integer >= 64, not {self.max_length!r}."),
            (is_int(self.max_reasoning_tokens) and self.max_reasoning_tokens >= 0, f"max_reasoning_tokens must be an integer >= 0, not {self.max_reasoning_tokens!r}."),
            (is_int(self.max_answer_tokens) and self.max_answer_tokens >= 0, f"max_answer_tokens must be an integer >= 0, not {self.max_answer_tokens!r}."),
            (self.without_reasoning in WITHOUT_REASONING, f"without_reasoning must be one of {', '.join(WITHOUT_REASONING)}, not {self.without_reasoning!r}."),
            (is_int(self.save_steps) and self.save_steps >= 1, f"save_steps must be an integer >= 1, not {self.save_steps!r}."),
            (self.save_total_limit is None or (is_int(self.save_total_limit) and self.save_total_limit >= 1), f"save_total_limit must be an integer >= 1 (or None to keep all), not {self.save_total_limit!r}."),
            (is_int(self.seed) and self.seed >= 0, f"seed must be an integer >= 0, not {self.seed!r}."),
            (bool(str(self.report_to).strip()), "report_to must be a tracker name or 'none'."),
        ]  # fmt: skip
        return _lora_problems(self) + [message for ok, message in checks if not ok]

    @classmethod
    def from_form(cls, data: Mapping[str, Any], *, base_model: str) -> SFTJobConfig:
        """The config of an SFT job (or stage) started from the admin page: the form's fields named in
        FORM_FIELDS, each left empty keeping the default here. ApplicationError on a bad value, as from
        the constructor."""
        values = {name: data[key] for key, name in cls.FORM_FIELDS.items() if data.get(key) is not None}
        return cls(base_model=base_model, **values)

    def resolved(self, *, cuda: bool | None = None) -> SFTJobConfig:
        """A copy with the automatic choices made (device, optimizer, LoRA alpha): what a run uses and saves."""
        cuda = cuda_available() if cuda is None else cuda
        device = self.device if self.device != "auto" else ("cuda" if cuda else "cpu")
        optim = self.optim if device == "cuda" else _CPU_FALLBACK_OPTIM.get(self.optim, self.optim)
        if device != "cuda" and optim in CUDA_ONLY_OPTIMIZERS:
            raise ApplicationError(f"optim {optim!r} needs CUDA; this run is on {device}.")
        return dataclasses.replace(
            self, device=device, optim=optim, lora_alpha=self.effective_lora_alpha, check_device=False
        )


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
