"""python manage.py register_adapter --path DIR --name NAME [--activate]: add a LoRA to the registry."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from mesu_web.errors import ApplicationError
from training.services import adapter_activate, adapter_register


class Command(BaseCommand):
    help = (
        "Register a saved LoRA (e.g. one trained on a GPU host): check it, copy it to WRITER_ADAPTER_DIR/<name>, "
        "load it into the writer server, and with --activate make it the writer's adapter. Prints JSON."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--path", required=True, type=Path, help="The adapter folder (adapter_config.json ...)."
        )
        parser.add_argument(
            "--name", required=True, help="The served name: 1-64 letters, digits, '.', '_', '-'."
        )
        parser.add_argument("--activate", action="store_true", help="Make it the writer's adapter.")

    def handle(self, *args, **options) -> None:
        try:
            adapter = adapter_register(name=options["name"], source_dir=options["path"])
            if options["activate"]:
                adapter = adapter_activate(adapter=adapter)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            json.dumps(
                {
                    "name": adapter.name,
                    "path": adapter.path,
                    "base_model": adapter.base_model,
                    "lora_nonzero": adapter.lora_nonzero,
                    "loaded": adapter.loaded_at is not None,
                    "load_error": adapter.load_error,
                    "active": adapter.is_active,
                },
                indent=2,
            )
        )
