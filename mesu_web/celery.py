from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mesu_web.settings")

app = Celery("mesu_web")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# The recovery sweep (mesu_web/jobs/recovery.py) runs inside every worker: at its start, which is when a
# worker that died is usually replaced, and then on a timer, so that no beat process is needed. Sweeps
# from several workers take turns (an advisory lock), and each is idempotent.
# Each worker also says in the cache which queues it listens on (mesu_web/jobs/listeners.py), so that the
# pages that queue work can tell when nothing will pick it up.
@worker_ready.connect
def _start_recovery_sweeps(sender: object = None, **kwargs: object) -> None:
    from mesu_web.jobs.listeners import start_heartbeat
    from mesu_web.jobs.recovery import start_sweeper

    start_sweeper(app)
    if sender is not None:
        start_heartbeat(sender)


@worker_shutdown.connect
def _stop_recovery_sweeps(**kwargs: object) -> None:
    from mesu_web.jobs.listeners import stop_heartbeat
    from mesu_web.jobs.recovery import stop_sweeper

    stop_sweeper()
    stop_heartbeat()
