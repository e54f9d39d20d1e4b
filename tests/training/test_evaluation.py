"""Evaluation on the held-out split: base vs adapters through the writer engine, scored with the
rewards, on a leaderboard; the evaluate_adapter command runs the same service."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse

from mesu_web.errors import ApplicationError
from tests.fixtures_training import write_dataset
from training import selectors, services
from training.models import EvaluationRun

pytestmark = pytest.mark.slow

CHEAP = "format_exact,format_partial,rouge1,bleu"
TOPICS = ["a harbour at dawn", "the last train home", "a letter never sent"]


def write_test_split(folder: Path, rows: int = 2) -> Path:
    lines = [
        {
            "prompt": [
                {"role": "system", "content": "You continue stories. Think, then write the chapter."},
                {"role": "user", "content": f"Chapter 1 was about {topic}. Write chapter 2."},
            ],
            "answer": f"Chapter 2 returned to {topic}, and the town was quiet.",
            "book": f"book-{i}",
            "k": 1,
        }
        for i, topic in enumerate(TOPICS[:rows])
    ]
    return write_dataset(folder, lines, split="test")


@pytest.fixture
def adapter(db, settings, tmp_path, lora_adapter_dir, local_engine):
    settings.WRITER_ADAPTER_DIR = tmp_path / "adapters"
    return services.adapter_register(name="evaluated", source_dir=lora_adapter_dir)


def _run(adapter, dataset: Path, **kwargs) -> EvaluationRun:
    run = services.evaluation_run_create(
        user=None, adapter=adapter, dataset_dir=dataset, rewards=CHEAP, max_new_tokens=16, enqueue=False, **kwargs
    )
    return services.evaluation_run_execute(run_id=run.pk)


def test_base_and_adapter_are_scored_and_ranked(users, adapter, tmp_path, client_for):
    dataset = write_test_split(tmp_path / "ds")
    base = _run(None, dataset)
    tuned = _run(adapter, dataset)
    for run in (base, tuned):
        assert run.status == EvaluationRun.Status.SUCCEEDED and run.done == run.total == 2
        assert set(run.metrics) == {"format_exact", "format_partial", "rouge1", "bleu"}
        assert all(0.0 <= v <= 1.0 for k, v in run.metrics.items() if k != "format_exact")
        assert run.tokens > 0 and len(run.samples) == 2 and run.samples[0]["book"] == "book-0"
        # Quality as a reader meets it, measured on every answer and summed up on the row.
        answers = [s["quality"] for s in run.samples]
        assert all(set(q) == {"words", "repetition", "longest_repeat"} for q in answers)
        assert run.quality["words"] == pytest.approx(sum(q["words"] for q in answers) / 2, abs=1e-3)
        assert run.quality["worst_repetition"] == max(q["repetition"] for q in answers)
        assert 0.0 <= run.quality["repetition"] <= 1.0
    assert base.target_name == "smollm2" and tuned.target_name == "evaluated"
    # The random LoRA changes the text: base and adapter do not produce the same answers.
    assert [s["excerpt"] for s in base.samples] != [s["excerpt"] for s in tuned.samples]

    board = selectors.leaderboard(dataset_dir=str(dataset.resolve()), metric="rouge1")
    values = [row["run"].metrics["rouge1"] for row in board["rows"]]
    assert values == sorted(values, reverse=True) and len(values) == 2
    page = client_for("root").get(reverse("training:leaderboard"), {"metric": "rouge1"}).content.decode()
    assert "evaluated" in page and "smollm2" in page and 'class="sorted"' in page
    assert "repeated 4-grams" in page and "longest repeat" in page
    # A newer run of the same target replaces its row; the board keeps one row per writer.
    _run(adapter, dataset, limit=1)
    assert len(selectors.leaderboard(dataset_dir=str(dataset.resolve()), metric="rouge1")["rows"]) == 2
    # An unknown metric is refused with the valid names, and the page still renders.
    with pytest.raises(ApplicationError, match="Unknown metric"):
        selectors.leaderboard(dataset_dir=None, metric="blue")
    response = client_for("root").get(reverse("training:leaderboard"), {"metric": "blue"})
    assert response.status_code == 200 and "Unknown metric" in response.content.decode()
    detail = client_for("root").get(reverse("training:evaluation_detail", args=[tuned.pk])).content.decode()
    assert "book-1" in detail and "rouge1" in detail


def test_bad_input_is_refused_before_queueing(users, tmp_path, local_engine):
    (tmp_path / "no-split").mkdir()
    with pytest.raises(ApplicationError, match="build the dataset first"):
        services.evaluation_run_create(user=None, adapter=None, dataset_dir=tmp_path / "no-split", rewards=CHEAP)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "test.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(ApplicationError, match="holds no pairs"):
        services.evaluation_run_create(user=None, adapter=None, dataset_dir=empty, rewards=CHEAP)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "test.jsonl").write_bytes(b'{"prompt": "not messages", "answer": 1, "book": "b", "k": 1}\n')
    with pytest.raises(ApplicationError, match="line 1 is not a training pair"):
        services.evaluation_run_create(user=None, adapter=None, dataset_dir=broken, rewards=CHEAP)
    ok = write_test_split(tmp_path / "ok")
    with pytest.raises(ApplicationError, match="did you mean 'bleu'"):
        services.evaluation_run_create(user=None, adapter=None, dataset_dir=ok, rewards="blue")
    with pytest.raises(ApplicationError, match="at least one pair"):
        services.evaluation_run_create(user=None, adapter=None, dataset_dir=ok, rewards=CHEAP, limit=0)
    with pytest.raises(ApplicationError, match="between 8 and"):
        services.evaluation_run_create(user=None, adapter=None, dataset_dir=ok, rewards=CHEAP, max_new_tokens=10**6)
    assert not EvaluationRun.objects.exists()


def test_a_crashing_engine_fails_the_run_with_its_reason(users, tmp_path, settings, django_capture_on_commit_callbacks):
    """The task's failure hook writes the reason; nothing half-scored looks finished."""
    from writer.engines import vllm

    settings.WRITER_ENGINE = "vllm"
    settings.WRITER_BASE_URL = "http://127.0.0.1:9/v1"  # nothing listens there
    settings.WRITER_MAX_RETRIES = 0
    settings.WRITER_TIMEOUT = 2.0
    vllm.reset_caches()
    dataset = write_test_split(tmp_path / "ds")
    client = Client()
    client.force_login(users["root"])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            reverse("training:leaderboard"),
            {"target": "base", "dataset_dir": str(dataset), "limit": 2, "max_new_tokens": 16, "rewards": CHEAP},
        )
    run = EvaluationRun.objects.get()
    assert response.status_code == 302 and len(callbacks) == 1 and run.total == 2
    from training.tasks import evaluation_run_task

    result = evaluation_run_task.apply(args=[run.pk])  # the real task, in this process
    assert result.failed()
    run.refresh_from_db()
    assert run.status == EvaluationRun.Status.FAILED and "127.0.0.1:9" in run.error and run.metrics == {}
    page = client.get(reverse("training:evaluation_progress", args=[run.pk]))
    assert page.status_code == 286 and "127.0.0.1:9" in page.content.decode()
    vllm.reset_caches()


def test_evaluate_adapter_command(adapter, tmp_path):
    dataset = write_test_split(tmp_path / "ds", rows=1)
    out = io.StringIO()
    call_command(
        "evaluate_adapter", "--adapter", "base", "--adapter", "evaluated", "--dataset", str(dataset),
        "--rewards", CHEAP, "--max-new-tokens", "16", stdout=out, stderr=io.StringIO(),
    )
    results = json.loads(out.getvalue())
    assert [r["target"] for r in results] == ["smollm2", "evaluated"]
    assert all(r["pairs"] == 1 and set(r["metrics"]) == set(CHEAP.split(",")) for r in results)
    with pytest.raises(CommandError, match="No registered adapter called 'nope'"):
        call_command("evaluate_adapter", "--adapter", "nope", "--dataset", str(dataset))
    with pytest.raises(CommandError, match="build the dataset first"):
        call_command("evaluate_adapter", "--adapter", "base", "--dataset", str(tmp_path))


@pytest.mark.vllm
def test_evaluation_through_the_real_vllm_server(db, settings, tmp_path, lora_adapter_dir, vllm_settings):
    import uuid

    settings.WRITER_ADAPTER_DIR = tmp_path / "adapters"
    adapter = services.adapter_register(name=f"eval-{uuid.uuid4().hex[:8]}", source_dir=lora_adapter_dir)
    assert adapter.loaded_at is not None, adapter.load_error
    dataset = write_test_split(tmp_path / "ds")
    base, tuned = _run(None, dataset), _run(adapter, dataset)
    assert base.status == tuned.status == EvaluationRun.Status.SUCCEEDED
    assert tuned.tokens > 0 and base.tokens > 0
