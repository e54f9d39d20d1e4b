from __future__ import annotations

import json
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mesu_web.celery import app
from mesu_web.jobs.recovery import sweep


class Command(BaseCommand):
    help = (
        "Re-enqueue what no worker will run otherwise: requests, training jobs, evaluations and exports "
        "whose worker died, or whose message the broker lost (Redis restarted). The same sweep every worker "
        "runs at its start and on a timer; safe at any time. Prints one JSON object: what was done, per kind."
    )

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument(
            "--stale-after",
            type=float,
            default=None,
            help="Seconds a queued row may wait for its message (default: RECOVERY_STALE_AFTER).",
        )

    def handle(self, *args, **options) -> None:
        seconds = settings.RECOVERY_STALE_AFTER if options["stale_after"] is None else options["stale_after"]
        if seconds < 0:
            raise CommandError("--stale-after must not be negative.")
        self.stdout.write(json.dumps(sweep(app=app, stale_after=timedelta(seconds=seconds))))
