"""Training jobs on the `gpu` queue: a real Celery worker runs a real 2-step GRPO job from the row."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model

from mesu_web.errors import ApplicationError
from tests.fixtures_training import tiny_config, write_dataset
from training import services
from training.models import TrainingJob, WriterAdapter

pytestmark = pytest.mark.slow


@pytest.fixture
def base_model(model_dir) -> str:
    return str(model_dir)


@pytest.fixture
def admin_user(transactional_db):
    return get_user_model().objects.create_user(username="root", password="x", is_staff=True)


@pytest.fixture
def adapter_dir(settings, tmp_path):
    settings.WRITER_ADAPTER_DIR = tmp_path / "adapters"  # before the worker starts: it reads it from env
    return settings.WRITER_ADAPTER_DIR


def test_a_real_worker_trains_the_job_from_the_gpu_queue(admin_user, base_model, tmp_path, adapter_dir, celery_worker_process):
    config = tiny_config(base_model, max_steps=2)
    job = services.training_job_create(
        user=admin_user, config=config, dataset_dir=write_dataset(tmp_path / "ds"), out_dir=tmp_path / "out", name="smoke"
    )
    deadline = time.monotonic() + 300
    seen_steps: set[int] = set()
    while time.monotonic() < deadline:
        job.refresh_from_db()
        seen_steps.add(job.step)
        if job.is_finished:
            break
        time.sleep(0.5)
    log = celery_worker_process.log_path.read_text()
    assert job.status == TrainingJob.Status.SUCCEEDED, f"{job.error}\n{log[-3000:]}"
    assert "training.tasks.training_job_run_task" in log
    assert job.step == 2 and [entry["step"] for entry in job.step_logs] == [1, 2]
    assert all(set(entry["rewards"]) == {"rouge1", "format_partial"} for entry in job.step_logs)
    assert job.lora_nonzero is True and job.base_unchanged is True
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()
    # The adapter is registered under a fresh served name, ready to be made active.
    adapter = WriterAdapter.objects.get(job=job)
    assert adapter.name == f"smoke-j{job.pk}" and adapter.lora_nonzero and not adapter.is_active
    assert (adapter_dir / adapter.name / "adapter_model.safetensors").is_file()
    assert adapter.metrics["steps"] == 2 and set(adapter.metrics["rewards"]) == {"rouge1", "format_partial"}
    # A redelivered task for the finished job changes nothing.
    assert services.training_job_run(job_id=job.pk) is None


def test_a_bad_dataset_is_refused_before_the_job_is_queued(admin_user, base_model, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ApplicationError):
        services.training_job_create(
            user=admin_user, config=tiny_config(base_model), dataset_dir=tmp_path / "empty", out_dir=tmp_path / "out"
        )
    assert not TrainingJob.objects.exists()


def test_cancel_a_queued_job(admin_user, base_model, tmp_path):
    job = services.training_job_create(
        user=admin_user, config=tiny_config(base_model), dataset_dir=write_dataset(tmp_path / "ds"),
        out_dir=tmp_path / "out", enqueue=False,
    )
    job = services.training_job_cancel(job=job)
    assert job.status == TrainingJob.Status.CANCELLED and job.cancel_requested
    assert services.training_job_run(job_id=job.pk) is None  # nothing trains
    with pytest.raises(ApplicationError, match="already cancelled"):
        services.training_job_cancel(job=job)
