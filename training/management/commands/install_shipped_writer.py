"""python manage.py install_shipped_writer: register the trained writer committed with the code and make
it the active writer on a new install (`./dev up` runs it once the writer server is up)."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from mesu_web.errors import ApplicationError
from training.services import SHIPPED_WRITER_DIR, SHIPPED_WRITER_NAME, shipped_writer_install


class Command(BaseCommand):
    help = (
        "Register training/shipped/<name> once; when it is new and no adapter is active, make it the writer's "
        "adapter (it must load into the writer server). An adapter already registered under the name is left "
        "as it is, so an admin who chose another adapter or the base model keeps that choice. Prints JSON."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--path", type=Path, default=SHIPPED_WRITER_DIR, help="The adapter folder.")
        parser.add_argument("--name", default=SHIPPED_WRITER_NAME, help="The served name.")

    def handle(self, *args, **options) -> None:
        try:
            result = shipped_writer_install(source_dir=options["path"], name=options["name"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(json.dumps(result))
