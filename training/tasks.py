"""The `gpu` queue's task: thin, takes a primary key; the failure hook writes the reason on the row."""

from __future__ import annotations

from celery import Task, shared_task

from mesu_web.jobs.locks import exclusive_per_row
from mesu_web.jobs.tasks import RowTask
from training import services


class TrainingTask(RowTask):
    what = "Training"

    def record_failure(self, pk: int, reason: str) -> None:
        services.training_job_fail(job_id=pk, error=reason)

    def crash_reason(self, exc: BaseException) -> str:
        return (
            f"Training crashed ({type(exc).__name__}: {str(exc)[:300]}). "
            "It resumes from its last checkpoint when started again."
        )


# A training job runs for hours on a GPU, far past the generation queue's limits: 48 h here (seconds).
# One task for both kinds: `training_job_run` runs GRPO or SFT by the row's kind, and an SFT job's end
# queues (or fails) the GRPO stage waiting for it.
TRAINING_TIME_LIMIT = 48 * 3600


@shared_task(
    bind=True, base=TrainingTask, soft_time_limit=TRAINING_TIME_LIMIT - 60, time_limit=TRAINING_TIME_LIMIT
)
@exclusive_per_row
def training_job_run_task(self: Task, job_id: int) -> None:
    services.training_job_run(job_id=job_id)


class EvaluationTask(RowTask):
    what = "Evaluation"

    def record_failure(self, pk: int, reason: str) -> None:
        services.evaluation_run_fail(run_id=pk, error=reason)


class ExportTask(RowTask):
    what = "Export"

    def record_failure(self, pk: int, reason: str) -> None:
        services.adapter_export_fail(export_id=pk, error=reason)


# Generating hundreds of chapters takes hours on a CPU, minutes on a GPU.
EVALUATION_TIME_LIMIT = 12 * 3600


@shared_task(
    bind=True,
    base=EvaluationTask,
    soft_time_limit=EVALUATION_TIME_LIMIT - 60,
    time_limit=EVALUATION_TIME_LIMIT,
)
@exclusive_per_row
def evaluation_run_task(self: Task, run_id: int) -> None:
    services.evaluation_run_execute(run_id=run_id)


@shared_task(bind=True, base=ExportTask, soft_time_limit=3 * 3600 - 60, time_limit=3 * 3600)
@exclusive_per_row
def adapter_export_task(self: Task, export_id: int) -> None:
    services.adapter_export_run(export_id=export_id)
