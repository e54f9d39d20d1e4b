"""SFT jobs and "SFT then GRPO" on the `gpu` queue: the job row's kind, the stage link and its states.

The slow tests train for real on SmolLM2 on CPU at toy size (LoRA rank 8, one short row a step, two
SFT steps, one GRPO step of 2 x 8 tokens): an SFT job stopped after its first step and resumed from its
checkpoint, registered like a GRPO job; the whole pipeline through a real Celery worker, the GRPO stage
starting from the SFT stage's adapter; a stage 1 that fails on the worker's failure hook. The fast ones
check the states without a model: the waiting stage, cancelling either stage, the recovery sweep.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from mesu_web.errors import ApplicationError
from mesu_web.jobs.broker import BrokerSnapshot
from mesu_web.jobs.recovery import rows_recover
from tests.fixtures_training import TOPICS, lora_tensors, tiny_config, write_dataset
from training import services
from training.config import SFTJobConfig
from training.distill import full_completion, tag_reasoning
from training.models import TrainingJob, WriterAdapter
from training.tasks import training_job_run_task


def write_distilled_dataset(folder: Path, *, without_reasoning: int = 0) -> Path:
    """A dataset as build_dataset writes it (`folder`/train.jsonl) with its distilled rows beside it
    (`folder`/distilled/train.jsonl, as `distill` writes them); the first `without_reasoning` distilled
    rows have no reasoning."""
    write_dataset(folder)
    rows = []
    for i, topic in enumerate(TOPICS):
        reasoning = f"The reader wants {topic}, told plainly."
        answer = f"The chapter continues with {topic}."
        rows.append(
            {
                "prompt": [
                    {"role": "system", "content": "You write short, vivid prose."},
                    {"role": "user", "content": f"Write one sentence about {topic}."},
                ],
                "answer": answer,
                "book": f"book-{i % 2}",
                "k": 1,
                "reasoning": "" if i < without_reasoning else tag_reasoning(reasoning),
                "completion": full_completion(reasoning, answer),
            }
        )
    write_dataset(folder / "distilled", rows)
    return folder


def tiny_sft(base_model: str, **overrides) -> SFTJobConfig:
    """An SFT job that trains on CPU in seconds: 2 steps of one short row, LoRA rank 8."""
    values = {
        "base_model": base_model,
        "lora_rank": 8,
        "max_steps": 2,
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.0,  # a warmup step runs at learning rate 0
        "max_length": 256,
        "gradient_checkpointing": False,
        "save_steps": 1,
        "report_to": "none",
    }
    values.update(overrides)
    return SFTJobConfig(**values)


@pytest.fixture
def admin_user(db):
    return get_user_model().objects.create_user(username="root", password="x", is_staff=True)


@pytest.fixture
def adapter_dir(settings, tmp_path):
    settings.WRITER_ADAPTER_DIR = tmp_path / "adapters"  # before a worker starts: it reads it from env
    return settings.WRITER_ADAPTER_DIR


def pipeline(user, base_model: str, tmp_path: Path, *, enqueue: bool = False, sft=None, grpo=None, **kwargs):
    return services.training_pipeline_create(
        user=user,
        sft_config=sft or tiny_sft(base_model),
        grpo_config=grpo or tiny_config(base_model, max_steps=1),
        dataset_dir=write_distilled_dataset(tmp_path / "ds"),
        out_dir=tmp_path / "run",
        name=kwargs.pop("name", "warm"),
        enqueue=enqueue,
        **kwargs,
    )


# ---------------------------------------------------------------------------------------------
# States, without a model


def test_a_pipeline_is_an_sft_job_and_a_grpo_job_waiting_for_it(
    admin_user, model_dir, tmp_path, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        sft, grpo = pipeline(admin_user, str(model_dir), tmp_path, enqueue=True, sft=tiny_sft(str(model_dir), lora_alpha=16))
    assert len(callbacks) == 1  # the SFT job alone is queued; the GRPO job waits
    assert (sft.kind, sft.status, sft.max_steps) == ("sft", "queued", 2)
    assert (grpo.kind, grpo.status, grpo.status_label) == ("grpo", "waiting", "Waiting for stage 1")
    assert grpo.previous_stage == sft and sft.next_stage == grpo and not grpo.is_finished
    # SFT trains on the distilled rows, GRPO on every row of the dataset; each into its own folder.
    assert sft.dataset_dir == str((tmp_path / "ds" / "distilled").resolve())
    assert grpo.dataset_dir == str((tmp_path / "ds").resolve())
    assert (sft.out_dir, grpo.out_dir) == (str(tmp_path / "run" / "sft"), str(tmp_path / "run" / "grpo"))
    assert (sft.name, grpo.name) == ("warm SFT", "warm GRPO")
    # The GRPO stage has the SFT stage's LoRA shape, and its init_adapter waits for the SFT adapter.
    assert (grpo.config["lora_rank"], grpo.config["lora_alpha"], grpo.config["init_adapter"]) == (8, 16, "")
    assert sorted(grpo.config["target_modules"]) == sorted(sft.config["target_modules"])
    # A stray task for the waiting stage does nothing.
    assert services.training_job_run(job_id=grpo.pk) is None
    grpo.refresh_from_db()
    assert grpo.status == TrainingJob.WAITING and grpo.attempts == 0


def test_an_sft_job_plans_its_steps_from_the_rows_with_reasoning(admin_user, model_dir, tmp_path):
    ds = write_distilled_dataset(tmp_path / "ds", without_reasoning=1)  # 3 rows to train
    config = tiny_sft(str(model_dir), max_steps=None, num_train_epochs=3.0, gradient_accumulation_steps=2)
    job = services.training_job_create(
        user=admin_user, config=config, dataset_dir=ds / "distilled", out_dir=tmp_path / "out", enqueue=False
    )
    assert job.kind == TrainingJob.Kind.SFT and job.max_steps == 6  # 3 epochs x ceil(3 rows / 2 a step)
    assert services.planned_sft_steps(config, 0) == 3  # at least one step an epoch


def test_a_dataset_without_reasoning_is_refused_before_anything_is_queued(admin_user, model_dir, tmp_path):
    ds = write_dataset(tmp_path / "plain")  # build_dataset's rows, never distilled
    with pytest.raises(ApplicationError, match="None of the 4 training row\\(s\\) .* has a distilled reasoning") as exc:
        services.training_job_create(
            user=admin_user, config=tiny_sft(str(model_dir)), dataset_dir=ds, out_dir=tmp_path / "out"
        )
    assert exc.value.extra["field"] == "dataset_dir"
    with pytest.raises(ApplicationError, match="distil"):
        services.training_pipeline_create(
            user=admin_user, sft_config=tiny_sft(str(model_dir)), grpo_config=tiny_config(str(model_dir)),
            dataset_dir=ds, out_dir=tmp_path / "run",
        )  # fmt: skip
    assert not TrainingJob.objects.exists()


def test_cancelling_a_queued_stage_1_fails_the_waiting_stage_2(admin_user, model_dir, tmp_path):
    sft, grpo = pipeline(admin_user, str(model_dir), tmp_path)
    services.training_job_cancel(job=sft)
    sft.refresh_from_db(), grpo.refresh_from_db()
    assert sft.status == TrainingJob.Status.CANCELLED
    assert grpo.status == TrainingJob.Status.FAILED and grpo.finished_at is not None
    assert grpo.error == (
        f"Stage 1 (SFT job #{sft.pk} “warm SFT”) was cancelled, so this stage never started "
        "(it starts from stage 1's adapter)."
    )


def test_a_waiting_stage_2_can_be_cancelled_on_its_own(admin_user, model_dir, tmp_path):
    sft, grpo = pipeline(admin_user, str(model_dir), tmp_path)
    services.training_job_cancel(job=grpo)
    sft.refresh_from_db(), grpo.refresh_from_db()
    assert grpo.status == TrainingJob.Status.CANCELLED and sft.status == TrainingJob.Status.QUEUED
    # Stage 1 failing later leaves the cancelled stage 2 as it is.
    services.training_job_fail(job_id=sft.pk, error="boom")
    grpo.refresh_from_db()
    assert grpo.status == TrainingJob.Status.CANCELLED and grpo.error == ""


def test_the_recovery_sweep_leaves_a_waiting_stage_alone(admin_user, model_dir, tmp_path, django_capture_on_commit_callbacks):
    sft, grpo = pipeline(admin_user, str(model_dir), tmp_path)
    TrainingJob.objects.update(created_at=timezone.now() - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=False):
        done = rows_recover(
            model=TrainingJob, task=training_job_run_task, stale_after=timedelta(minutes=1),
            broker=BrokerSnapshot(pending={}), requeue_dead_run=services.training_job_requeue_dead_run,
        )  # fmt: skip
    assert done.requeued_lost == [sft.pk]  # the queued SFT job with no message is sent again; not stage 2


# ---------------------------------------------------------------------------------------------
# Real runs (SmolLM2 on CPU)


@pytest.mark.slow
def test_an_sft_job_trains_resumes_and_registers_its_adapter(admin_user, model_dir, tmp_path, adapter_dir):
    """Stopped after step 1 (a worker shutting down), then resumed from its checkpoint as the recovery
    sweep resumes a dead job; then registered like a GRPO job's adapter."""
    base_model = str(model_dir)
    job = services.training_job_create(
        user=admin_user, config=tiny_sft(base_model), dataset_dir=write_distilled_dataset(tmp_path / "ds", without_reasoning=1),
        out_dir=tmp_path / "out", name="voice", enqueue=False,
    )  # fmt: skip
    assert job.dataset_dir.endswith("/ds/distilled") and job.max_steps == 2

    asked: list[int] = []

    def shutting_down() -> bool:  # asked once before training, then at the end of each step: stop after step 1
        asked.append(1)
        return len(asked) > 1

    first = services.training_job_run(job_id=job.pk, should_stop=shutting_down)
    job.refresh_from_db()
    assert first.cancelled and [e["step"] for e in job.step_logs] == [1]
    assert job.status == TrainingJob.Status.CANCELLED and job.step == 1 and not job.adapter_path
    assert (tmp_path / "out" / "checkpoints" / "checkpoint-1").is_dir()
    # As if its worker had died after step 1: the sweep puts it back in the queue, and it resumes.
    TrainingJob.objects.filter(pk=job.pk).update(status=TrainingJob.Status.RUNNING)
    assert services.training_job_requeue_dead_run(job.pk) == "requeued"
    second = services.training_job_run(job_id=job.pk)
    job.refresh_from_db()

    assert job.status == TrainingJob.Status.SUCCEEDED, job.error
    assert second.resumed_from and job.resumed_from.endswith("checkpoint-1") and job.attempts == 2
    assert job.step == job.max_steps == 2 and [e["step"] for e in job.step_logs] == [1, 2]
    entry = job.step_logs[-1]
    assert {"loss", "mean_token_accuracy", "learning_rate", "grad_norm", "tokens_per_second", "seconds"} <= set(entry)
    assert isinstance(entry["loss"], float) and job.final_loss == entry["loss"]
    assert job.backend == "trl" and job.lora_nonzero is True and job.base_unchanged is True
    assert job.summary["rows_used"] == 3 and job.summary["rows_without_reasoning"] == 1
    assert job.summary["rows_skipped"] == 1 and job.summary["final_loss"] == job.final_loss
    assert job.adapter_path == str(tmp_path / "out" / "adapter")

    adapter = WriterAdapter.objects.get(job=job)
    assert adapter.name == f"voice-j{job.pk}" and adapter.lora_nonzero and adapter.lora_rank == 8
    assert adapter.metrics["stage"] == "sft" and adapter.metrics["steps"] == 2
    assert adapter.metrics["final_loss"] == job.final_loss and adapter.config["_meta"]["stage"] == "sft"
    assert (adapter_dir / adapter.name / "adapter_model.safetensors").is_file()
    assert services.training_job_run(job_id=job.pk) is None  # a redelivered task changes nothing


def test_stage_1_failing_on_the_worker_fails_stage_2_with_the_reason(admin_user, model_dir, tmp_path):
    """The SFT stage's base model folder is gone by the time it runs: run_sft refuses on the worker, the
    task's failure hook writes the reason on the SFT row, and the waiting GRPO row fails with it."""
    gone = tmp_path / "gone-model"
    sft, grpo = pipeline(admin_user, str(model_dir), tmp_path, sft=tiny_sft(str(gone)))
    training_job_run_task.apply(args=[sft.pk])
    sft.refresh_from_db(), grpo.refresh_from_db()
    assert sft.status == TrainingJob.Status.FAILED and sft.error == f"The base model folder {gone} has no config.json (a Hugging Face model folder)."
    assert grpo.status == TrainingJob.Status.FAILED and grpo.step == 0 and grpo.attempts == 0
    assert grpo.error == f"Stage 1 (SFT job #{sft.pk} “warm SFT”) failed, so this stage never started: {sft.error}"


@pytest.mark.slow
def test_sft_then_grpo_runs_both_stages_on_the_gpu_queue(transactional_db, model_dir, tmp_path, adapter_dir, celery_worker_process):
    """A real worker trains the SFT stage; its success queues the GRPO stage, which starts from the SFT
    adapter. With a learning rate of 1e-9 one GRPO step moves no weight by more than ~1e-9, so the GRPO
    adapter must equal the SFT one (a fresh LoRA would have B at ~0, not the SFT's B)."""
    user = get_user_model().objects.create_user(username="root", password="x", is_staff=True)
    base_model = str(model_dir)
    sft, grpo = pipeline(
        user, base_model, tmp_path, enqueue=True,
        grpo=tiny_config(base_model, max_steps=1, max_completion_length=8, learning_rate=1e-9),
    )  # fmt: skip
    statuses: set[str] = set()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        grpo.refresh_from_db()
        statuses.add(grpo.status)
        if grpo.is_finished:
            break
        time.sleep(0.5)
    sft.refresh_from_db()
    log = celery_worker_process.log_path.read_text()
    assert sft.status == TrainingJob.Status.SUCCEEDED, f"{sft.error}\n{log[-3000:]}"
    assert grpo.status == TrainingJob.Status.SUCCEEDED, f"{grpo.error}\n{log[-3000:]}"
    assert "waiting" in statuses  # it waited for stage 1 (and was never "running" before it)
    assert log.count("training.tasks.training_job_run_task") >= 2
    assert sft.step == 2 and [e["step"] for e in sft.step_logs] == [1, 2] and sft.final_loss is not None
    assert grpo.step == 1 and grpo.started_at >= sft.finished_at

    sft_adapter = Path(sft.adapter_path)
    assert grpo.config["init_adapter"] == str(sft_adapter)
    saved = json.loads((Path(grpo.adapter_path) / "mesu_job_config.json").read_text())
    assert saved["init_adapter"] == str(sft_adapter) and saved["lora_rank"] == 8
    before, after = lora_tensors(sft_adapter), lora_tensors(Path(grpo.adapter_path))
    assert set(before) == set(after)
    assert max(float(t.abs().max()) for k, t in before.items() if "lora_B" in k) > 1e-4
    assert max(float((after[k] - before[k]).abs().max()) for k in before) < 1e-6
    # Both adapters are registered, each under its job.
    sft_row, grpo_row = WriterAdapter.objects.get(job=sft), WriterAdapter.objects.get(job=grpo)
    assert sft_row.metrics["stage"] == "sft" and grpo_row.metrics["init_adapter"] == str(sft_adapter)
