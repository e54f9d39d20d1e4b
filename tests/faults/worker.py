"""`python -m tests.faults.worker ARGS` runs `celery -A mesu_web worker ARGS`, with the generation task's
retry delays taken from MESU_TEST_TASK_RETRY_DELAYS (seconds, comma-separated) when it is set.

The delays are a module constant of writer.tasks (15 s and 60 s): a fault test that waits for every retry
would spend 75 s doing nothing. Everything else is the real worker: same app, same tasks, same signals.
"""

from __future__ import annotations

import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mesu_web.settings")
django.setup()

from celery.bin.celery import main  # noqa: E402 (after django.setup)

from writer import tasks  # noqa: E402

if os.environ.get("MESU_TEST_TASK_RETRY_DELAYS"):
    delays = tuple(float(d) for d in os.environ["MESU_TEST_TASK_RETRY_DELAYS"].split(","))
    if len(delays) != len(tasks.RETRY_DELAYS_SECONDS):  # max_retries was fixed from the length at import
        raise SystemExit(f"MESU_TEST_TASK_RETRY_DELAYS needs {len(tasks.RETRY_DELAYS_SECONDS)} values")
    tasks.RETRY_DELAYS_SECONDS = delays

if __name__ == "__main__":
    sys.argv = ["celery", "-A", "mesu_web", "worker", *sys.argv[1:]]
    sys.exit(main())
