"""python manage.py export_adapter --adapter NAME|DIR --format lora,merged16,gguf --out DIR: print JSON."""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mesu_web.errors import ApplicationError
from training.export import (
    DEFAULT_GGUF_TYPES,
    EXPORT_FORMATS,
    GGUF_TYPES,
    default_base_model,
    export_adapter,
)
from writer.engines import resolve_adapter
from writer.model_files import prepare_model


class Command(BaseCommand):
    help = (
        "Export a trained LoRA adapter through the same service as the pages. "
        + " ".join(f"{f.name}: {f.help}" for f in EXPORT_FORMATS.values())
        + " Writes <out>/lora, <out>/merged16, <out>/merged4, <out>/gguf/<adapter>-<type>.gguf and "
        "<out>/export.json, and prints that JSON (one entry per format and GGUF type: path, bytes, seconds, "
        "ok, skipped, message, checks). Exits non-zero when an entry failed; one that cannot run on this "
        "machine (merged4 without CUDA, q4_k_m without llama-quantize) is skipped with its reason."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--adapter",
            required=True,
            help="An adapter folder, or the name of one in WRITER_ADAPTER_DIR.",
        )
        parser.add_argument(
            "--format",
            dest="formats",
            required=True,
            help=f"Comma-separated formats: {', '.join(EXPORT_FORMATS)}.",
        )
        parser.add_argument(
            "--gguf-types",
            default=",".join(DEFAULT_GGUF_TYPES),
            help=f"Comma-separated GGUF types for --format gguf: {', '.join(GGUF_TYPES)} (default: all).",
        )
        parser.add_argument("--out", required=True, type=Path, help="Output folder.")
        parser.add_argument(
            "--base-model",
            type=Path,
            default=None,
            help="The base model's Hugging Face folder (default: the base_model in the adapter's "
            "mesu_job_config.json, else adapter_config.json's base_model_name_or_path, when that folder "
            "exists, else WRITER_MODEL_PATH).",
        )

    def handle(self, *args, **options) -> None:
        try:
            adapter_dir = self._adapter_dir(options["adapter"])
            base_model = options["base_model"]
            if base_model is None:
                fallback = Path(settings.WRITER_MODEL_PATH)
                base_model = default_base_model(adapter_dir, fallback)
                if base_model == fallback:  # made from the packaged GGUF when missing, as train_grpo does
                    base_model = prepare_model(fallback)
            elif not base_model.is_dir():
                raise ApplicationError(f"The base model folder {base_model} does not exist.")

            def on_progress(event: dict) -> None:
                line = f"[{event['index'] + 1}/{event['total']}] {event['key']}: {event['status']}"
                self.stderr.write(line + (f" - {event['message']}" if event["message"] else ""))

            result = export_adapter(
                adapter_dir=adapter_dir,
                base_model=base_model,
                out_dir=options["out"],
                formats=options["formats"],
                gguf_types=options["gguf_types"],
                on_progress=on_progress,
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(json.dumps(result.to_dict(), indent=2))
        if result.failed:
            raise CommandError(
                "Export failed for "
                + "; ".join(f"{e.key}: {e.message}" for e in result.failed)
                + f" (the rest is in {result.out_dir})."
            )

    def _adapter_dir(self, value: str) -> Path:
        """A folder path when it exists, else an adapter name under WRITER_ADAPTER_DIR."""
        path = Path(value)
        if path.is_dir():
            return path
        if "/" in value or value.startswith("."):
            raise ApplicationError(f"The adapter folder {path} does not exist.")
        adapter = resolve_adapter(value)  # raises on a name that cannot be an adapter
        if adapter is None:
            raise ApplicationError(
                f"{value!r} is the base model, not an adapter: name an adapter folder or an adapter "
                f"in {settings.WRITER_ADAPTER_DIR}."
            )
        if not Path(adapter.path).is_dir():
            raise ApplicationError(
                f"No adapter folder {value!r}, and no adapter called {value!r} in {settings.WRITER_ADAPTER_DIR}."
            )
        return Path(adapter.path)
