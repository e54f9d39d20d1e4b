"""The `gpu` queue's task: thin, takes a primary key; the failure hook writes the reason on the row."""

from __future__ import annotations

import logging

from celery import Task, shared_task

from mesu_web.errors import ApplicationError
from training import services

logger = logging.getLogger(__name__)


class TrainingTask(Task):
    acks_late = True
    reject_on_worker_lost = (
        True  # a killed worker's job goes back to the queue and resumes from its checkpoint
    )

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:  # noqa: ANN001 (Celery's signature)
        job_id = args[0] if args else kwargs.get("job_id")
        if isinstance(exc, ApplicationError):
            reason = exc.message
        else:
            logger.error("Training job %s crashed", job_id, exc_info=einfo.exc_info if einfo else None)
            reason = f"Training crashed ({type(exc).__name__}: {str(exc)[:300]}). It resumes from its last checkpoint when started again."
        services.training_job_fail(job_id=job_id, error=reason)


# A GRPO job runs for hours on a GPU, far past the generation queue's limits: 48 h here (seconds).
TRAINING_TIME_LIMIT = 48 * 3600


@shared_task(
    bind=True, base=TrainingTask, soft_time_limit=TRAINING_TIME_LIMIT - 60, time_limit=TRAINING_TIME_LIMIT
)
def training_job_run_task(self: Task, job_id: int) -> None:
    services.training_job_run(job_id=job_id)


class _RowTask(Task):
    """A task whose only argument is a row's primary key; the failure hook writes the reason there."""

    acks_late = True
    reject_on_worker_lost = True
    what = ""

    def fail(self, pk: int, reason: str) -> None:
        raise NotImplementedError

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:  # noqa: ANN001 (Celery's signature)
        pk = args[0] if args else next(iter(kwargs.values()), None)
        if isinstance(exc, ApplicationError):
            reason = exc.message
        else:
            logger.error("%s %s crashed", self.what, pk, exc_info=einfo.exc_info if einfo else None)
            reason = f"{self.what} crashed ({type(exc).__name__}: {str(exc)[:300]})."
        self.fail(pk, reason)


class EvaluationTask(_RowTask):
    what = "Evaluation"

    def fail(self, pk: int, reason: str) -> None:
        services.evaluation_run_fail(run_id=pk, error=reason)


class ExportTask(_RowTask):
    what = "Export"

    def fail(self, pk: int, reason: str) -> None:
        services.adapter_export_fail(export_id=pk, error=reason)


# Generating hundreds of chapters takes hours on a CPU, minutes on a GPU.
EVALUATION_TIME_LIMIT = 12 * 3600


@shared_task(
    bind=True,
    base=EvaluationTask,
    soft_time_limit=EVALUATION_TIME_LIMIT - 60,
    time_limit=EVALUATION_TIME_LIMIT,
)
def evaluation_run_task(self: Task, run_id: int) -> None:
    services.evaluation_run_execute(run_id=run_id)


@shared_task(bind=True, base=ExportTask, soft_time_limit=3 * 3600 - 60, time_limit=3 * 3600)
def adapter_export_task(self: Task, export_id: int) -> None:
    services.adapter_export_run(export_id=export_id)
