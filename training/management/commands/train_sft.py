"""python manage.py train_sft --dataset DIR --out DIR [...]: the supervised warm start, print JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mesu_web.errors import ApplicationError
from training.config import DEVICES, WITHOUT_REASONING, SFTJobConfig
from training.interrupt import stop_after_step
from training.services import adapter_register
from training.sft import run_sft
from writer.model_files import prepare_model

# Command-line flag -> SFTJobConfig field; a flag left out keeps the config's default.
_FIELD_FLAGS: dict[str, tuple[str, type]] = {
    "max_steps": ("--max-steps", int),
    "num_train_epochs": ("--epochs", float),
    "learning_rate": ("--lr", float),
    "lora_rank": ("--lora-rank", int),
    "lora_alpha": ("--lora-alpha", int),
    "max_length": ("--max-length", int),
    "max_answer_tokens": ("--max-answer-tokens", int),
    "max_reasoning_tokens": ("--max-reasoning-tokens", int),
    "per_device_train_batch_size": ("--batch-size", int),
    "gradient_accumulation_steps": ("--gradient-accumulation-steps", int),
    "warmup_ratio": ("--warmup-ratio", float),
    "save_steps": ("--save-steps", int),
    "seed": ("--seed", int),
}


class Command(BaseCommand):
    help = (
        "Supervised warm start before GRPO: train a LoRA with TRL's SFTTrainer on <dataset>/train.jsonl (the "
        "distilled rows: <dataset>/distilled), the loss on the completion only (the reasoning and the real "
        "next chapter in the writer's format). Checkpoints go to <out>/checkpoints and are resumed on the next "
        "run; the adapter goes to <out>/adapter (continue with train_grpo --init-adapter <out>/adapter); the "
        "per-step log to <out>/sft_log.json. Prints JSON: steps, final_loss, seconds, adapter_path, rows used "
        "and skipped. Progress goes to stderr; Ctrl-C once stops after the current step with a checkpoint."
    )

    def add_arguments(self, parser) -> None:
        help_texts = SFTJobConfig.help_texts()
        parser.add_argument("--dataset", required=True, help="Folder with train.jsonl (from distill).")
        parser.add_argument(
            "--out", required=True, help="Output folder: checkpoints/, adapter/, sft_log.json."
        )
        parser.add_argument(
            "--base-model",
            default=None,
            help="Hugging Face model folder (default: WRITER_MODEL_PATH, made from the packaged GGUF if missing).",
        )
        parser.add_argument("--device", choices=DEVICES, default=None, help=help_texts["device"])
        parser.add_argument(
            "--without-reasoning",
            choices=WITHOUT_REASONING,
            default=None,
            help=help_texts["without_reasoning"],
        )
        parser.add_argument(
            "--register",
            default=None,
            metavar="NAME",
            help="Register the adapter under NAME (as register_adapter).",
        )
        parser.add_argument("--no-resume", action="store_true", help="Start over, deleting old checkpoints.")
        for name, (flag, kind) in _FIELD_FLAGS.items():
            parser.add_argument(flag, dest=name, type=kind, default=None, help=help_texts[name])

    def handle(self, *args, **options) -> None:
        try:
            config = self._config(options)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc

        def on_step(entry: dict) -> None:
            self.stderr.write(
                f"step {entry['step']}: loss={entry['loss']} accuracy={entry['mean_token_accuracy']} "
                f"{entry['seconds']} s"
            )

        try:
            with stop_after_step() as should_stop:
                result = run_sft(
                    config=config,
                    dataset_dir=Path(options["dataset"]),
                    out_dir=Path(options["out"]),
                    on_step=on_step,
                    should_stop=should_stop,
                    resume=not options["no_resume"],
                )
            extra: dict[str, Any] = {"adapter_name": None}
            if options.get("register") and result.adapter_path is not None:
                adapter = adapter_register(
                    name=options["register"],
                    source_dir=result.adapter_path,
                    metrics={"stage": "sft", "steps": result.steps, "final_loss": result.final_loss},
                )
                extra["adapter_name"] = adapter.name
                if adapter.load_error:
                    extra["adapter_load_error"] = adapter.load_error
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(json.dumps({**result.to_dict(), **extra}, indent=2))

    def _config(self, options: dict[str, Any]) -> SFTJobConfig:
        values: dict[str, Any] = {
            name: options[name] for name in _FIELD_FLAGS if options.get(name) is not None
        }
        for name in ("device", "without_reasoning"):
            if options.get(name):
                values[name] = options[name]
        if options.get("base_model"):
            values["base_model"] = str(Path(options["base_model"]).resolve())
        else:
            values["base_model"] = str(prepare_model(Path(settings.WRITER_MODEL_PATH)))
        return SFTJobConfig(**values)
