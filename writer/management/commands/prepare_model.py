"""python manage.py prepare_model [--force]: make the Hugging Face folder of the base model."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mesu_web.errors import ApplicationError
from writer.model_files import prepare_model


class Command(BaseCommand):
    help = (
        "Convert the packaged SmolLM2 GGUF into a Hugging Face folder (bfloat16 safetensors + tokenizer) "
        "at WRITER_MODEL_PATH, for the vLLM server and the local engine. A no-op when it is already there."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--force", action="store_true", help="Rebuild the folder even if it is complete.")

    def handle(self, *args, force: bool = False, **options) -> None:
        try:
            folder = prepare_model(Path(settings.WRITER_MODEL_PATH), force=force)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(str(folder))
