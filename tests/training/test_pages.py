"""The training pages: staff only, a job queued from the form, live progress that stops, a reward chart."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.fixtures_training import tiny_config, write_dataset
from training import services
from training.models import TrainingJob


@pytest.fixture
def job(users, tmp_path, model_dir):
    return services.training_job_create(
        user=users["root"], config=tiny_config(str(model_dir)), dataset_dir=write_dataset(tmp_path / "ds"),
        out_dir=tmp_path / "out", name="nightly", enqueue=False,
    )


def test_only_staff_reach_the_training_pages(client_for, client, job):
    urls = [
        reverse("training:job_list"),
        reverse("training:job_detail", args=[job.pk]),
        reverse("training:job_progress", args=[job.pk]),
    ]
    for name in ("alice", "rita", "mia"):
        for url in urls:
            response = client_for(name).get(url)
            assert response.status_code == 302 and "/admin/login/" in response["Location"]
        assert client_for(name).post(reverse("training:job_cancel", args=[job.pk])).status_code == 302
    assert client.get(urls[0]).status_code == 302
    job.refresh_from_db()
    assert not job.cancel_requested


def test_the_form_queues_a_validated_job(client_for, tmp_path, django_capture_on_commit_callbacks, settings, model_dir):
    settings.WRITER_MODEL_PATH = model_dir
    ds = write_dataset(tmp_path / "ds")
    form = {
        "name": "try", "dataset_dir": str(ds), "out_dir": str(tmp_path / "out"), "max_steps": 2,
        "num_generations": 2, "max_completion_length": 16, "lora_rank": 8, "gradient_accumulation_steps": 1,
        "rewards": "format_partial,rouge1",
    }
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client_for("root").post(reverse("training:job_list"), form)
    job = TrainingJob.objects.get(name="try")
    assert response.status_code == 302 and response["Location"] == job.get_absolute_url()
    assert len(callbacks) == 1  # queued on commit, on the gpu queue
    assert job.config["reward_names"] == ["format_partial", "rouge1"]
    # A bad combination and a typo are refused on the form, before anything is queued.
    bad = {**form, "name": "bad", "rewards": "rouge1,blue"}
    response = client_for("root").post(reverse("training:job_list"), bad)
    assert response.status_code == 200 and "did you mean" in response.content.decode()
    assert not TrainingJob.objects.filter(name="bad").exists()


def test_the_form_sets_learning_rate_and_warmup(client_for, tmp_path, django_capture_on_commit_callbacks, settings, model_dir):
    settings.WRITER_MODEL_PATH = model_dir
    ds = write_dataset(tmp_path / "ds")
    page = client_for("root").get(reverse("training:job_list")).content.decode()
    assert 'name="learning_rate"' in page and 'name="warmup_ratio"' in page and "a short job wants 0" in page
    form = {
        "name": "short", "dataset_dir": str(ds), "out_dir": str(tmp_path / "out"), "max_steps": 2,
        "num_generations": 2, "max_completion_length": 16, "lora_rank": 8, "gradient_accumulation_steps": 1,
        "rewards": "format_partial,rouge1", "learning_rate": "2e-4", "warmup_ratio": "0",
    }
    with django_capture_on_commit_callbacks(execute=False):
        response = client_for("root").post(reverse("training:job_list"), form)
    job = TrainingJob.objects.get(name="short")
    assert response.status_code == 302
    assert (job.config["learning_rate"], job.config["warmup_ratio"]) == (2e-4, 0.0)
    # Values the config refuses come back as errors beside their fields; nothing is queued.
    bad = {**form, "name": "bad", "learning_rate": "-1e-5", "warmup_ratio": "1"}
    response = client_for("root").post(reverse("training:job_list"), bad)
    errors = response.context["form"].errors
    assert response.status_code == 200
    assert errors["learning_rate"] == ["learning_rate must be > 0, not -1e-05."]
    assert errors["warmup_ratio"] == ["warmup_ratio must be in [0, 1), not 1.0."]
    assert not TrainingJob.objects.filter(name="bad").exists()


def test_progress_shows_the_reward_chart_and_stops_polling_when_done(client_for, job):
    TrainingJob.objects.filter(pk=job.pk).update(
        status=TrainingJob.Status.RUNNING,
        step=2,
        step_logs=[
            {"step": 1, "reward": 0.2, "rewards": {"rouge1": 0.1, "format_partial": 0.3}, "loss": 0.01, "seconds": 6.0},
            {"step": 2, "reward": 0.4, "rewards": {"rouge1": 0.3, "format_partial": 0.5}, "loss": 0.02, "seconds": 6.1},
        ],
    )
    c = client_for("root")
    url = reverse("training:job_progress", args=[job.pk])
    running = c.get(url, HTTP_HX_REQUEST="true")
    html = running.content.decode()
    assert running.status_code == 200
    assert html.count("<polyline") == 3 and "rouge1" in html and "format_partial" in html
    TrainingJob.objects.filter(pk=job.pk).update(status=TrainingJob.Status.SUCCEEDED)
    assert c.get(url, HTTP_HX_REQUEST="true").status_code == 286


def test_cancel_from_the_page(client_for, job):
    response = client_for("root").post(reverse("training:job_cancel", args=[job.pk]), follow=True)
    assert "Cancelling" in response.content.decode()
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.CANCELLED
