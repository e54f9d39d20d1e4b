"""The base of every task that works on one row: Celery's settings for work that must not be lost, and
a failure hook that writes the reason on the row (job state is the row, never Celery's result)."""

from __future__ import annotations

import logging

from celery import Task

from mesu_web.errors import ApplicationError

logger = logging.getLogger(__name__)


class RowTask(Task):
    """Takes the row's primary key as its first argument. A killed worker's message goes back to the
    queue (acks_late + reject_on_worker_lost); the services make a second run harmless."""

    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    what = "The task"  # who crashed, in the reason a user reads

    def record_failure(self, pk: int, reason: str) -> None:
        raise NotImplementedError

    def crash_reason(self, exc: BaseException) -> str:
        return f"{self.what} crashed unexpectedly ({type(exc).__name__}). The team has the details in the logs."

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:  # noqa: ANN001 (Celery's signature)
        pk = args[0] if args else next(iter(kwargs.values()), None)
        if isinstance(exc, ApplicationError):
            reason = exc.message
        else:
            logger.error("%s (%s) crashed for row %s", self.what, self.name, pk, exc_info=einfo.exc_info if einfo else None)
            reason = self.crash_reason(exc)
        self.record_failure(pk, reason)
