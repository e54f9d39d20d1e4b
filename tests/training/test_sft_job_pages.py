"""The training pages for SFT jobs and "SFT then GRPO": the form's three kinds and its errors, the
stages on both jobs' pages, the SFT loss chart, the kind in the job list."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.fixtures_training import tiny_config, write_dataset
from tests.training.test_sft_job import tiny_sft, write_distilled_dataset
from training import services
from training.forms import TrainingJobForm
from training.models import TrainingJob


@pytest.fixture
def form(tmp_path, settings, model_dir) -> dict:
    settings.WRITER_MODEL_PATH = model_dir
    return {
        "kind": "sft_grpo", "name": "warm", "dataset_dir": str(write_distilled_dataset(tmp_path / "ds")),
        "out_dir": str(tmp_path / "run"), "lora_rank": 8, "lora_alpha": 16,
        "max_steps": 2, "num_generations": 2, "max_completion_length": 16, "gradient_accumulation_steps": 1,
        "rewards": "format_partial,rouge1", "learning_rate": "1e-5", "warmup_ratio": "0",
        "sft_epochs": "2", "sft_learning_rate": "2e-4", "sft_max_length": 512, "sft_max_answer_tokens": 64,
        "sft_max_reasoning_tokens": 32,
    }  # fmt: skip


@pytest.fixture
def stages(users, tmp_path, model_dir):
    return services.training_pipeline_create(
        user=users["root"], sft_config=tiny_sft(str(model_dir)), grpo_config=tiny_config(str(model_dir)),
        dataset_dir=write_distilled_dataset(tmp_path / "ds"), out_dir=tmp_path / "run", name="nightly", enqueue=False,
    )  # fmt: skip


def test_the_form_queues_sft_then_grpo(client_for, form, django_capture_on_commit_callbacks):
    page = client_for("root").get(reverse("training:job_list")).content.decode()
    assert 'value="sft_grpo"' in page and 'name="sft_epochs"' in page and 'name="sft_max_reasoning_tokens"' in page
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client_for("root").post(reverse("training:job_list"), form)
    sft, grpo = TrainingJob.objects.get(name="warm SFT"), TrainingJob.objects.get(name="warm GRPO")
    assert response.status_code == 302 and response["Location"] == sft.get_absolute_url()
    assert len(callbacks) == 1  # the SFT job is queued; the GRPO job waits for it
    assert grpo.previous_stage == sft and grpo.status == TrainingJob.WAITING
    assert sft.config["num_train_epochs"] == 2.0 and sft.config["learning_rate"] == 2e-4
    assert (sft.config["max_length"], sft.config["max_answer_tokens"], sft.config["max_reasoning_tokens"]) == (512, 64, 32)
    assert (sft.config["lora_rank"], sft.config["lora_alpha"], sft.config["max_steps"]) == (8, 16, None)
    assert sft.max_steps == 2  # 2 epochs x ceil(4 distilled rows / 8 rows a step, SFTJobConfig's default)
    assert (grpo.config["lora_rank"], grpo.config["lora_alpha"], grpo.config["learning_rate"]) == (8, 16, 1e-5)
    assert grpo.config["reward_names"] == ["format_partial", "rouge1"] and grpo.max_steps == 2


def test_the_form_queues_an_sft_job_without_the_grpo_fields(client_for, form, django_capture_on_commit_callbacks):
    sft_only = {k: v for k, v in form.items() if k not in TrainingJobForm.GRPO_FIELDS}
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client_for("root").post(reverse("training:job_list"), {**sft_only, "kind": "sft", "sft_max_steps": 3})
    job = TrainingJob.objects.get(name="warm")
    assert response.status_code == 302 and len(callbacks) == 1
    assert job.kind == TrainingJob.Kind.SFT and job.status == TrainingJob.Status.QUEUED and job.max_steps == 3
    assert not TrainingJob.objects.filter(previous_stage=job).exists()


def test_form_errors_queue_nothing(client_for, form, tmp_path):
    c = client_for("root")
    # A dataset with no distilled row: SFT would skip every row.
    plain = write_dataset(tmp_path / "plain")
    response = c.post(reverse("training:job_list"), {**form, "dataset_dir": str(plain)})
    errors = response.context["form"].errors
    assert response.status_code == 200 and "has a distilled reasoning" in errors["dataset_dir"][0]
    assert "manage.py distill" in response.content.decode()
    # Values SFTJobConfig refuses come back beside the SFT fields; GRPO's beside GRPO's, all at once.
    bad = {**form, "sft_learning_rate": "-1", "sft_max_length": 10, "warmup_ratio": "1"}
    errors = c.post(reverse("training:job_list"), bad).context["form"].errors
    assert errors["sft_learning_rate"] == ["learning_rate must be > 0, not -1.0."]
    assert errors["sft_max_length"] == ["max_length must be an integer >= 64, not 10."]
    assert errors["warmup_ratio"] == ["warmup_ratio must be in [0, 1), not 1.0."]
    # The GRPO fields are required when a GRPO stage runs, not for an SFT job alone.
    errors = c.post(reverse("training:job_list"), {**form, "rewards": "", "max_steps": ""}).context["form"].errors
    assert errors["rewards"] == ["This field is required."] and errors["max_steps"] == ["This field is required."]
    assert not TrainingJob.objects.exists()


def test_both_pages_show_the_stages_and_the_sft_loss_chart(client_for, stages):
    sft, grpo = stages
    TrainingJob.objects.filter(pk=sft.pk).update(
        status=TrainingJob.Status.RUNNING, step=2,
        step_logs=[
            {"step": 1, "loss": 2.5, "mean_token_accuracy": 0.41, "learning_rate": 1e-3, "tokens_per_second": 90.0, "seconds": 1.2},
            {"step": 2, "loss": 1.75, "mean_token_accuracy": 0.52, "learning_rate": 1e-3, "tokens_per_second": 95.0, "seconds": 1.1},
        ],
    )  # fmt: skip
    c = client_for("root")
    first = c.get(reverse("training:job_detail", args=[sft.pk])).content.decode()
    assert "Stage 1 · SFT" in first and "Stage 2 · GRPO" in first
    assert f'href="{grpo.get_absolute_url()}"' in first and "Waiting for stage 1" in first
    assert "1.7500" in first  # stage 1's final loss
    assert "Loss over steps" in first and first.count("<polyline") == 1 and "Token accuracy" in first
    second = c.get(reverse("training:job_detail", args=[grpo.pk])).content.decode()
    assert f'href="{sft.get_absolute_url()}"' in second and "1.7500" in second
    assert "Waiting for stage 1 (" in second and "<progress" not in second and ">Cancel<" in second
    assert "The chart appears after the first step" in second and "Rewards over steps" in second

    # Stage 1's page keeps polling while stage 2 has not ended; both stop once both have.
    url = reverse("training:job_progress", args=[sft.pk])
    TrainingJob.objects.filter(pk=sft.pk).update(status=TrainingJob.Status.SUCCEEDED)
    TrainingJob.objects.filter(pk=grpo.pk).update(status=TrainingJob.Status.RUNNING)
    assert c.get(url, HTTP_HX_REQUEST="true").status_code == 200
    TrainingJob.objects.filter(pk=grpo.pk).update(status=TrainingJob.Status.SUCCEEDED)
    assert c.get(url, HTTP_HX_REQUEST="true").status_code == 286
    assert c.get(reverse("training:job_progress", args=[grpo.pk]), HTTP_HX_REQUEST="true").status_code == 286


def test_a_failed_stage_2_shows_why_and_the_list_shows_the_kinds(client_for, stages):
    sft, grpo = stages
    services.training_job_fail(job_id=sft.pk, error="Training crashed (RuntimeError: out of memory).")
    c = client_for("root")
    second = c.get(reverse("training:job_detail", args=[grpo.pk])).content.decode()
    assert "failed, so this stage never started: Training crashed (RuntimeError: out of memory)." in second
    listing = c.get(reverse("training:job_list")).content.decode()
    assert "<td>SFT" in listing and "<td>GRPO" in listing and "stage 2, after" in listing and "stage 1, then" in listing


@pytest.mark.parametrize(
    "bad",
    [
        {"sft_epochs": "nan"}, {"sft_epochs": "1e308"}, {"sft_epochs": "0"}, {"sft_max_steps": str(2**31)},
        {"sft_max_length": str(2**40)}, {"sft_max_answer_tokens": "-1"}, {"sft_max_reasoning_tokens": "x"},
        {"lora_alpha": "0"}, {"kind": "ppo"}, {"dataset_dir": "/nowhere"},
    ],
)  # fmt: skip
def test_odd_values_are_form_errors_never_a_crash(client_for, form, bad):
    response = client_for("root").post(reverse("training:job_list"), {**form, **bad})
    assert response.status_code == 200 and response.context["form"].errors
    assert not TrainingJob.objects.exists()
