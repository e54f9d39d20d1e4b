"""kill -9 of the `gpu` worker in the middle of a real (tiny, CPU) GRPO job that checkpoints every step:
the next worker's start-up sweep queues the job again, and it resumes from its last checkpoint, carrying
on with the steps instead of starting over."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from tests.fixtures_redis import wait_for
from tests.fixtures_training import tiny_config, write_dataset
from training import services
from training.models import TrainingJob, WriterAdapter
from training.trainer import checkpoint_to_resume

pytestmark = [pytest.mark.faults, pytest.mark.slow]

STEPS = 3


def complete_checkpoints(root: Path) -> list[int]:
    """Steps of the checkpoints written to the end (transformers writes trainer_state.json last)."""
    return sorted(
        int(folder.name.split("-")[1])
        for folder in root.glob("checkpoint-*")
        if (folder / "trainer_state.json").is_file()
    )


def test_a_killed_training_worker_job_resumes_from_its_checkpoint(transactional_db, model_dir, tmp_path, settings, start_worker):
    settings.WRITER_ADAPTER_DIR = tmp_path / "adapters"  # before the workers start: they read it from env
    admin = get_user_model().objects.create_user(username="root", password="x", is_staff=True)
    out = tmp_path / "out"
    checkpoints = out / "checkpoints"
    first = start_worker("gpu", RECOVERY_SWEEP_INTERVAL="0")
    job = services.training_job_create(
        user=admin, config=tiny_config(str(model_dir), max_steps=STEPS, save_steps=1),
        dataset_dir=write_dataset(tmp_path / "ds"), out_dir=out, name="killed",
    )
    wait_for(lambda: complete_checkpoints(checkpoints), timeout=300, what=lambda: f"the first checkpoint\n{first.log[-3000:]}")
    first.kill()
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.RUNNING and job.attempts == 1
    done = complete_checkpoints(checkpoints)[-1]
    assert done < STEPS, "the job finished before the kill: nothing was tested"
    before = {entry["step"]: entry for entry in job.step_logs if entry["step"] <= done}
    assert sorted(before) == list(range(1, done + 1))

    second = start_worker("gpu", RECOVERY_SWEEP_INTERVAL="0")  # its start-up sweep queues the job again

    def finished() -> bool:
        job.refresh_from_db()
        return job.is_finished

    wait_for(finished, timeout=300, what="the resumed job to finish", every=0.5)
    assert job.status == TrainingJob.Status.SUCCEEDED, f"{job.error}\n{second.log[-3000:]}"
    assert f"'requeued_dead_runs': [{job.pk}]" in second.log
    assert job.attempts == 2
    assert job.resumed_from == str((checkpoints / f"checkpoint-{done}").resolve())
    assert job.step == STEPS and [entry["step"] for entry in job.step_logs] == list(range(1, STEPS + 1))
    # The steps before the checkpoint were not trained again: their logged entries are the first run's.
    assert {step: entry for step, entry in ((e["step"], e) for e in job.step_logs) if step <= done} == before
    assert job.lora_nonzero is True
    # The job says "succeeded" a moment before its adapter is registered (training_job_run's order).
    wait_for(lambda: WriterAdapter.objects.filter(job=job).exists(), timeout=60, what="the adapter's registration")


def test_a_checkpoint_the_worker_was_killed_while_writing_is_skipped(tmp_path, model_dir):
    """transformers writes a checkpoint's trainer_state.json last: a folder without it is one a killed
    worker was still writing. Resuming takes the newest complete one instead of failing for ever."""
    root = tmp_path / "checkpoints"
    (root / "checkpoint-1").mkdir(parents=True)
    (root / "checkpoint-1" / "trainer_state.json").write_text(json.dumps({"global_step": 1}))
    (root / "checkpoint-2").mkdir()
    (root / "checkpoint-2" / "adapter_model.safetensors").write_bytes(b"half")  # killed mid-save
    assert checkpoint_to_resume(root, tiny_config(str(model_dir)), resume=True) == root / "checkpoint-1"
