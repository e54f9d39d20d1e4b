"""The job library's own parts: the registry every app fills from its AppConfig.ready(), and the shared
job row."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from mesu_web.jobs import recovery
from mesu_web.jobs.models import FINISHED_STATUSES, JobRow, JobStatus
from training.models import AdapterExport, EvaluationRun, TrainingJob
from writer.models import BibleProposalRun, GenerationRequest, OptionSwipe, PassageEdit

JOB_MODELS = (GenerationRequest, BibleProposalRun, OptionSwipe, PassageEdit, TrainingJob, EvaluationRun, AdapterExport)


def test_every_app_registered_its_kinds_of_row():
    assert set(recovery.registered_recoveries()) == {
        "generation_requests",
        "bible_proposal_runs",
        "option_swipes",
        "passage_edits",
        "training_jobs",
        "evaluation_runs",
        "adapter_exports",
    }


def test_a_second_function_under_one_name_is_refused_and_the_same_one_is_idempotent():
    registered = recovery.registered_recoveries()["generation_requests"]
    recovery.register_recovery("generation_requests", registered)  # an app's ready() run twice: harmless
    with pytest.raises(ImproperlyConfigured, match="generation_requests"):
        recovery.register_recovery("generation_requests", lambda **kwargs: recovery.Recovered())
    assert recovery.registered_recoveries()["generation_requests"] is registered


@pytest.mark.parametrize("model", JOB_MODELS)
def test_every_job_row_shares_the_fields_and_states(model):
    assert issubclass(model, JobRow)
    names = {f.name for f in model._meta.get_fields()}
    assert {"status", "error", "created_at", "started_at", "finished_at"} <= names
    assert model.Status is JobStatus
    assert model._meta.get_field("status").default == JobStatus.QUEUED
    assert model._meta.ordering == ["-created_at"]


@pytest.mark.parametrize(
    ("model", "running"),
    [(GenerationRequest, "Running"), (TrainingJob, "Training"), (EvaluationRun, "Running"), (AdapterExport, "Exporting")],
)
def test_status_labels_name_the_work_while_it_runs(model, running):
    row = model(status=JobStatus.RUNNING)
    assert row.status_label == running and not row.is_finished
    for status in FINISHED_STATUSES:
        row.status = status
        assert row.is_finished and row.status_label == JobStatus(status).label
    row.status = JobStatus.QUEUED
    assert row.status_label == "Queued" and not row.is_finished
