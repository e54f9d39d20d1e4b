"""Issue 18: staff training forms accept only folders inside the project's data folders."""

from __future__ import annotations

import pytest
from django.urls import reverse

from training.models import TrainingJob, WriterAdapter


@pytest.fixture
def production_roots(settings, tmp_path):
    """The default roots only (the suite adds its temporary folders): the data folder is `tmp_path/var`."""
    var = tmp_path / "var"
    (var / "datasets" / "mine").mkdir(parents=True)
    settings.TRAINING_DATA_ROOTS = [var]
    return var


@pytest.mark.parametrize(
    "where",
    ["/etc", "/", "../../../../etc", "var/../../etc", "/tmp", "\x00/etc"],
)
def test_a_job_outside_the_data_folders_is_refused_and_nothing_is_queued(users, client_for, production_roots, where):
    root = client_for("root")
    before = TrainingJob.objects.count()
    response = root.post(
        reverse("training:job_list"),
        {"kind": "grpo", "dataset_dir": where, "out_dir": str(production_roots / "runs" / "x"), "lora_rank": 4,
         "max_steps": 1, "num_generations": 2, "max_completion_length": 16, "gradient_accumulation_steps": 1,
         "rewards": "format_exact"},
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "must be inside the project" in page or "Null characters are not allowed" in page
    assert TrainingJob.objects.count() == before


def test_an_adapter_outside_the_data_folders_is_not_registered(users, client_for, production_roots):
    root = client_for("root")
    response = root.post(reverse("training:adapter_list"), {"name": "stolen", "path": "/etc"})
    assert "must be inside the project" in response.content.decode()
    assert not WriterAdapter.objects.filter(name="stolen").exists()


def test_a_folder_inside_the_data_folders_passes_the_check(production_roots):
    from training.paths import data_folder

    inside = production_roots / "datasets" / "mine"
    assert data_folder(str(inside), what="dataset folder") == str(inside.resolve())
    with pytest.raises(Exception, match="must be inside"):
        data_folder(str(production_roots / ".." / "elsewhere"), what="dataset folder")
