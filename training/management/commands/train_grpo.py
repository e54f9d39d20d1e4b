"""python manage.py train_grpo --dataset DIR --out DIR [...]: GRPO-train a LoRA writer, print JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mesu_web.errors import ApplicationError
from training.config import BACKENDS, GRPOJobConfig, adapter_lora_settings
from training.interrupt import stop_after_step
from training.models import WriterAdapter
from training.services import training_job_create, training_job_fail, training_job_run
from writer.model_files import prepare_model

# Command-line flag -> GRPOJobConfig field; a flag left out keeps the config's default (the seed's).
_FIELD_FLAGS: dict[str, tuple[str, type]] = {
    "max_steps": ("--max-steps", int),
    "num_generations": ("--num-generations", int),
    "max_completion_length": ("--max-completion-length", int),
    "max_prompt_length": ("--max-prompt-length", int),
    "lora_rank": ("--lora-rank", int),
    "lora_alpha": ("--lora-alpha", int),
    "learning_rate": ("--learning-rate", float),
    "warmup_ratio": ("--warmup-ratio", float),
    "gradient_accumulation_steps": ("--gradient-accumulation-steps", int),
    "per_device_train_batch_size": ("--per-device-train-batch-size", int),
    "save_steps": ("--save-steps", int),
    "temperature": ("--temperature", float),
    "beta": ("--beta", float),
    "vllm_gpu_memory_utilization": ("--vllm-gpu-memory-utilization", float),
    "seed": ("--seed", int),
}


def _names(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


class Command(BaseCommand):
    help = (
        "Train a LoRA writer with GRPO on <dataset>/train.jsonl (made by build_dataset), through the same "
        "code as the gpu task. Checkpoints go to <out>/checkpoints and are resumed on the next run; the "
        "adapter goes to <out>/adapter with its resolved config (mesu_job_config.json). Prints JSON: "
        "adapter_path, steps, step_logs (per-step loss and rewards), lora_nonzero, base_unchanged, backend, and "
        "adapter_name: the adapter is registered under that name (make it active on the adapters page). "
        "Progress goes to stderr; Ctrl-C once stops after the current step with a checkpoint."
    )

    def add_arguments(self, parser) -> None:
        help_texts = GRPOJobConfig.help_texts()
        parser.add_argument("--dataset", required=True, help="Folder with train.jsonl (from build_dataset).")
        parser.add_argument("--out", required=True, help="Output folder: checkpoints/ and adapter/.")
        parser.add_argument(
            "--base-model",
            default=None,
            help="Hugging Face model folder (default: WRITER_MODEL_PATH, made from the packaged GGUF if missing).",
        )
        parser.add_argument("--backend", choices=BACKENDS, default=None, help=help_texts["backend"])
        parser.add_argument(
            "--rewards", default=None, help="Comma-separated reward names (default: the registry's)."
        )
        parser.add_argument(
            "--reward-weights",
            default=None,
            help="Comma-separated weights, one per reward (default: each reward's default weight, else 1).",
        )
        parser.add_argument("--use-vllm", action="store_true", default=None, help=help_texts["use_vllm"])
        parser.add_argument(
            "--init-adapter",
            default=None,
            metavar="DIR",
            help=help_texts["init_adapter"]
            + " Its rank, alpha and target modules become the job's unless given.",
        )
        parser.add_argument(
            "--preference-model",
            default=None,
            metavar="DIR",
            help="The human_preference reward's scorer (made by train_preference_reward); default: the "
            "PREFERENCE_REWARD_MODEL environment variable. Needed when --rewards names human_preference.",
        )
        parser.add_argument("--no-resume", action="store_true", help="Start over, deleting old checkpoints.")
        for name, (flag, kind) in _FIELD_FLAGS.items():
            parser.add_argument(flag, dest=name, type=kind, default=None, help=help_texts[name])

    def handle(self, *args, **options) -> None:
        try:
            config = self._config(options)
            self._preference_model(options, config)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc

        def on_step(entry: dict) -> None:
            rewards = ", ".join(f"{k}={v}" for k, v in entry["rewards"].items())
            self.stderr.write(
                f"step {entry['step']}/{config.max_steps}: reward={entry['reward']} ({rewards}) "
                f"loss={entry['loss']} {entry['seconds']} s"
            )

        out_dir = Path(options["out"])
        if options["no_resume"]:
            shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
        job = None
        try:
            with stop_after_step() as should_stop:
                # The same job row and service as the `gpu` task, run here synchronously.
                job = training_job_create(
                    user=None, config=config, dataset_dir=Path(options["dataset"]), out_dir=out_dir, enqueue=False
                )
                result = training_job_run(job_id=job.pk, should_stop=should_stop, on_step=on_step)
        except ApplicationError as exc:
            if job is not None:
                training_job_fail(job_id=job.pk, error=exc.message)
            raise CommandError(exc.message) from exc
        registered = WriterAdapter.objects.filter(job_id=job.pk).first()
        extra = {"adapter_name": registered.name if registered else None}
        if registered is not None and registered.load_error:
            extra["adapter_load_error"] = registered.load_error
        self.stdout.write(json.dumps({"job": job.pk, **result.to_dict(), **extra}, indent=2))

    def _preference_model(self, options: dict[str, Any], config: GRPOJobConfig) -> None:
        """Point the human_preference reward at --preference-model, and refuse the reward without a model
        before anything is created or loaded."""
        from training import rewards
        from training.rewards.preference import preference_model

        if options.get("preference_model"):
            rewards.configure(preference_model_path=str(Path(options["preference_model"]).resolve()))
        if any(str(name).lower() == "human_preference" for name in config.reward_names):
            preference_model()  # ApplicationError: no model configured, or the folder is not one

    def _config(self, options: dict[str, Any]) -> GRPOJobConfig:
        values: dict[str, Any] = {
            name: options[name] for name in _FIELD_FLAGS if options.get(name) is not None
        }
        if options.get("backend"):
            values["backend"] = options["backend"]
        if options.get("use_vllm"):
            values["use_vllm"] = True
        if options.get("base_model"):
            values["base_model"] = str(Path(options["base_model"]).resolve())
        else:
            values["base_model"] = str(prepare_model(Path(settings.WRITER_MODEL_PATH)))
        if options.get("init_adapter"):
            init = Path(options["init_adapter"]).resolve()
            values["init_adapter"] = str(init)
            lora = adapter_lora_settings(init)  # ApplicationError when it is no LoRA folder
            values.setdefault("lora_rank", lora["lora_rank"])
            values.setdefault("lora_alpha", lora["lora_alpha"])
            values["target_modules"] = lora["target_modules"]  # no flag for them: the adapter's
        if options.get("rewards"):
            names = _names(options["rewards"])
            values["reward_names"] = names
            if options.get("reward_weights") is None:
                values["reward_weights"] = [_default_weight(name) for name in names]
        if options.get("reward_weights") is not None:
            try:
                values["reward_weights"] = [float(w) for w in _names(options["reward_weights"])]
            except ValueError as exc:
                raise ApplicationError(f"--reward-weights must be numbers: {exc}") from exc
        return GRPOJobConfig(**values)


def _default_weight(name: str) -> float:
    try:
        from training.rewards import DEFAULT_WEIGHTS
    except ImportError:
        return 1.0
    weights = DEFAULT_WEIGHTS if isinstance(DEFAULT_WEIGHTS, dict) else dict(DEFAULT_WEIGHTS)
    return float(weights.get(name, 1.0))
