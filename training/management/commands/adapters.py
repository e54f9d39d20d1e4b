"""python manage.py adapters: the registered LoRA adapters as a JSON list."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from training import selectors


class Command(BaseCommand):
    help = (
        'Print the registered adapters as JSON: [{"name", "active", "base_model", "path", "lora_rank", '
        '"lora_nonzero", "loaded", "load_error", "created_at"}], the active one first, then the newest.'
    )

    def handle(self, *args, **options) -> None:
        rows = [
            {
                "name": a.name,
                "active": a.is_active,
                "base_model": a.base_model,
                "path": a.path,
                "lora_rank": a.lora_rank,
                "lora_nonzero": a.lora_nonzero,
                "loaded": a.loaded_at is not None,
                "load_error": a.load_error,
                "created_at": a.created_at.isoformat(),
            }
            for a in selectors.adapter_list()
        ]
        self.stdout.write(json.dumps(rows, indent=2))
