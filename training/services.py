"""Training jobs: create, run (the `gpu` task and `train_grpo` call the same function), cancel, fail."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from mesu_web.errors import ApplicationError
from training.config import GRPOJobConfig
from training.models import TrainingJob
from training.trainer import GRPOResult, read_pairs, run_grpo


def training_job_create(
    *,
    user: AbstractBaseUser | None,
    config: GRPOJobConfig,
    dataset_dir: Path,
    out_dir: Path,
    name: str = "",
    enqueue: bool = True,
) -> TrainingJob:
    """Record a job whose config already passed validation, and queue it on `gpu` after the commit."""
    read_pairs(Path(dataset_dir))  # a missing or malformed dataset fails now, not on the GPU worker
    job = TrainingJob.objects.create(
        name=name.strip()[:120] or Path(out_dir).name,
        created_by=user,
        dataset_dir=str(Path(dataset_dir).resolve()),
        out_dir=str(Path(out_dir).resolve()),
        config=config.to_dict(),
        max_steps=config.max_steps,
    )
    if enqueue:
        from training.tasks import training_job_run_task

        job_id = job.pk
        transaction.on_commit(lambda: training_job_run_task.delay(job_id))
    return job


def _start(job_id: int) -> TrainingJob | None:
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job_id)
        if job.is_finished:
            return None  # a redelivered task for a finished job does nothing
        job.status = TrainingJob.Status.RUNNING
        job.attempts += 1
        job.started_at = job.started_at or timezone.now()
        job.error = ""
        job.save(update_fields=["status", "attempts", "started_at", "error"])
    return job


def training_job_run(
    *,
    job_id: int,
    should_stop: Callable[[], bool] | None = None,
    on_step: Callable[[dict], None] | None = None,
) -> GRPOResult | None:
    """Train; every step lands on the row at once. Resumes from the last checkpoint of a job that
    crashed or was cancelled. Returns None when the job had already finished."""
    job = _start(job_id)
    if job is None:
        return None
    config = GRPOJobConfig.from_dict(job.config)

    def record_step(entry: dict) -> None:
        with transaction.atomic():
            row = TrainingJob.objects.select_for_update().get(pk=job_id)
            logs = [log for log in row.step_logs if log.get("step") != entry.get("step")] + [entry]
            row.step_logs = sorted(logs, key=lambda log: log.get("step") or 0)
            row.step = max(row.step, int(entry.get("step") or 0))
            row.save(update_fields=["step_logs", "step"])
        if on_step is not None:
            on_step(entry)

    def stop() -> bool:
        cancelled = TrainingJob.objects.filter(pk=job_id, cancel_requested=True).exists()
        return cancelled or (should_stop is not None and should_stop())

    result = run_grpo(
        config=config, dataset_dir=Path(job.dataset_dir), out_dir=Path(job.out_dir), on_step=record_step, should_stop=stop
    )
    TrainingJob.objects.filter(pk=job_id).update(
        status=TrainingJob.Status.CANCELLED if result.cancelled else TrainingJob.Status.SUCCEEDED,
        step=result.steps,
        adapter_path=str(result.adapter_path or ""),
        backend=result.backend,
        lora_nonzero=None if result.cancelled else result.lora_nonzero,
        base_unchanged=result.base_unchanged,
        resumed_from=result.resumed_from or "",
        finished_at=timezone.now(),
    )
    return result


def training_job_cancel(*, job: TrainingJob) -> TrainingJob:
    """Ask a running job to stop after its current step (it keeps a checkpoint); a queued one stops at once."""
    if job.is_finished:
        raise ApplicationError(f"This job is already {job.get_status_display().lower()}.")
    TrainingJob.objects.filter(pk=job.pk).update(cancel_requested=True)
    TrainingJob.objects.filter(pk=job.pk, status=TrainingJob.Status.QUEUED).update(
        status=TrainingJob.Status.CANCELLED, finished_at=timezone.now()
    )
    job.refresh_from_db()
    return job


def training_job_fail(*, job_id: int, error: str) -> None:
    TrainingJob.objects.filter(pk=job_id).exclude(status=TrainingJob.Status.SUCCEEDED).update(
        status=TrainingJob.Status.FAILED, error=error or "Training failed for an unknown reason.", finished_at=timezone.now()
    )
