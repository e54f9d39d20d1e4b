"""The recovery sweep (mesu_web/jobs/recovery.py) against the real PostgreSQL and a real (private) Redis,
without workers: which rows it re-enqueues, which it leaves alone, and that it never sends a second message
for one row.

A "live worker" here is a second database connection holding the row's run lock, as a worker's does while
it runs the row; closing that connection is what a kill -9 does to the worker's.
"""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import psycopg
import pytest
import redis
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from mesu_web.celery import app
from mesu_web.jobs import broker as jobs_broker
from mesu_web.jobs import recovery
from mesu_web.jobs.locks import lock_class
from tests.factories import story_with_chapters
from training.models import EvaluationRun, TrainingJob
from training.tasks import training_job_run_task
from writer import services
from writer.models import GenerationRequest
from writer.tasks import generation_request_run_task

HOUR = timedelta(hours=1)


@pytest.fixture
def alice(transactional_db, users):
    return users["alice"]


@pytest.fixture
def make_request(alice, broker):
    story = story_with_chapters(owner=alice, chapters=1)

    def make(**fields) -> int:
        pk = services.generation_request_create(story=story, user=alice, n=1, enqueue=False).pk
        GenerationRequest.objects.filter(pk=pk).update(**fields)
        return pk

    return make


def messages_for(url: str, queue: str, task_name: str, pk: int) -> int:
    """How many messages for (task, pk) wait in `queue` of the Redis at `url`, at any priority (a request
    of a user with others waiting goes on a lower one: writer/quotas.py)."""
    client = redis.Redis.from_url(url)
    lists = [queue, *(f"{queue}{jobs_broker._PRIORITY_SEP}{step}" for step in jobs_broker._PRIORITY_STEPS)]
    try:
        rows = [jobs_broker.message_row(json.loads(raw)) for key in lists for raw in client.lrange(key, 0, -1)]
    finally:
        client.close()
    return rows.count((task_name, pk))


def other_connection() -> psycopg.Connection:
    db = settings.DATABASES["default"]
    return psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], password=db["PASSWORD"] or None, dbname=db["NAME"],
        autocommit=True,
    )


def hold_run_lock(conn: psycopg.Connection, task_name: str, pk: int) -> None:
    assert conn.execute("SELECT pg_try_advisory_lock(%s, %s)", [lock_class(task_name), pk]).fetchone()[0]


def test_a_running_request_is_left_alone_while_its_worker_lives_and_requeued_once_it_dies(make_request, broker):
    pk = make_request(status=GenerationRequest.Status.RUNNING, attempts=1, progress_tokens=40)
    worker = other_connection()
    hold_run_lock(worker, generation_request_run_task.name, pk)

    result = recovery.sweep(app=app, stale_after=HOUR)
    assert result["generation_requests"]["requeued_dead_runs"] == []
    assert GenerationRequest.objects.get(pk=pk).status == GenerationRequest.Status.RUNNING  # slow, not dead

    worker.close()  # the worker dies: PostgreSQL drops its lock with its connection
    result = recovery.sweep(app=app, stale_after=HOUR)
    assert result["generation_requests"]["requeued_dead_runs"] == [pk]
    request = GenerationRequest.objects.get(pk=pk)
    assert request.status == GenerationRequest.Status.QUEUED and request.progress_tokens == 0
    assert "stopped" in request.stage
    assert messages_for(broker, "generation", generation_request_run_task.name, pk) == 1

    # Idempotent: the next sweeps find the message in the broker and send no second one.
    for stale_after in (HOUR, timedelta(0)):
        again = recovery.sweep(app=app, stale_after=stale_after)["generation_requests"]
        assert again["requeued_dead_runs"] == again["requeued_lost"] == []
    assert messages_for(broker, "generation", generation_request_run_task.name, pk) == 1


def test_a_queued_request_whose_message_was_lost_is_enqueued_again_once_it_is_stale(make_request, broker):
    old = make_request(created_at=timezone.now() - timedelta(minutes=5))
    young = make_request()
    services.generation_request_enqueue(request=GenerationRequest.objects.get(pk=young))  # on_commit: now

    result = recovery.sweep(app=app, stale_after=timedelta(minutes=1))["generation_requests"]
    assert result["requeued_lost"] == [old]
    assert messages_for(broker, "generation", generation_request_run_task.name, old) == 1
    assert messages_for(broker, "generation", generation_request_run_task.name, young) == 1  # its own, only

    # Now both have a message: however stale, neither gets another.
    assert recovery.sweep(app=app, stale_after=timedelta(0))["generation_requests"]["requeued_lost"] == []
    assert messages_for(broker, "generation", generation_request_run_task.name, old) == 1


def test_a_message_delivered_to_a_worker_counts_as_pending(make_request, broker):
    """Redis keeps a delivered, unacknowledged message (running, prefetched, or waiting for its retry's
    countdown) in its `unacked` hash: such a row is not lost."""
    pk = make_request(created_at=timezone.now() - timedelta(minutes=5))
    generation_request_run_task.delay(pk)
    client = redis.Redis.from_url(broker)
    raw = client.rpop("generation")  # what a worker's fetch does, then kombu's bookkeeping:
    client.hset("unacked", "tag-1", json.dumps([json.loads(raw), "", "generation"]))
    client.close()
    assert jobs_broker.broker_snapshot(app).has(generation_request_run_task.name, pk)
    assert recovery.sweep(app=app, stale_after=timedelta(0))["generation_requests"]["requeued_lost"] == []


def test_a_request_that_kills_its_worker_every_time_fails_with_a_reason(make_request, settings):
    pk = make_request(status=GenerationRequest.Status.RUNNING, attempts=settings.RECOVERY_MAX_ATTEMPTS)
    result = recovery.sweep(app=app, stale_after=HOUR)["generation_requests"]
    assert result["closed_dead_runs"] == [pk] and result["requeued_dead_runs"] == []
    request = GenerationRequest.objects.get(pk=pk)
    assert request.status == GenerationRequest.Status.FAILED
    assert "worker was killed or ran out of memory" in request.error


def test_a_second_run_of_a_row_that_is_running_does_nothing(make_request):
    """The run lock: a duplicate message (a redelivery, a sweep's re-enqueue) while the row runs elsewhere."""
    pk = make_request()
    worker = other_connection()
    try:
        hold_run_lock(worker, generation_request_run_task.name, pk)
        generation_request_run_task.apply(args=[pk])  # would fail at once on this process's settings if it ran
        request = GenerationRequest.objects.get(pk=pk)
        assert request.status == GenerationRequest.Status.QUEUED and request.attempts == 0
    finally:
        worker.close()


def test_sweeps_take_turns(make_request):
    make_request(status=GenerationRequest.Status.RUNNING)
    other = other_connection()
    try:
        hold_run_lock(other, "mesu_web.recovery.sweep", 0)
        assert recovery.sweep(app=app, stale_after=HOUR) == {"skipped": "another sweep is running"}
    finally:
        other.close()


def test_training_rows(alice, broker, tmp_path):
    def job(**fields) -> TrainingJob:
        return TrainingJob.objects.create(
            name="j", dataset_dir=str(tmp_path), out_dir=str(tmp_path / "out"), config={}, max_steps=3, **fields
        )

    dead = job(status=TrainingJob.Status.RUNNING, attempts=1, step=2)
    cancelling = job(status=TrainingJob.Status.RUNNING, attempts=1, cancel_requested=True)
    evaluation = EvaluationRun.objects.create(
        target_name="smollm2", dataset_dir=str(tmp_path), engine="vllm", max_new_tokens=16,
        status=EvaluationRun.Status.RUNNING,
    )
    result = recovery.sweep(app=app, stale_after=HOUR)
    assert result["training_jobs"]["requeued_dead_runs"] == [dead.pk]
    assert result["training_jobs"]["closed_dead_runs"] == [cancelling.pk]
    assert result["evaluation_runs"]["closed_dead_runs"] == [evaluation.pk]
    dead.refresh_from_db(), cancelling.refresh_from_db(), evaluation.refresh_from_db()
    assert dead.status == TrainingJob.Status.QUEUED and dead.step == 2  # it resumes from its checkpoint
    assert cancelling.status == TrainingJob.Status.CANCELLED
    assert evaluation.status == EvaluationRun.Status.FAILED and "start it again" in evaluation.error
    assert messages_for(broker, "gpu", training_job_run_task.name, dead.pk) == 1


def test_a_broker_that_cannot_be_read_changes_nothing_and_says_so(make_request):
    from tests.fixtures_redis import free_port, reset_pools

    stale = make_request(created_at=timezone.now() - timedelta(minutes=5))
    dead = make_request(status=GenerationRequest.Status.RUNNING, attempts=1)
    reset_pools(app)
    app.conf.broker_url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there (the fixture restores it)
    result = recovery.sweep(app=app, stale_after=timedelta(minutes=1))
    assert "could not be read" in result["broker"]
    requests = result["generation_requests"]
    assert requests["unchecked"] == [stale] and requests["requeued_lost"] == []
    # The dead run went back to the queue, but its message could not be sent: the next sweep sends it
    # (the row is queued with no message, and old enough).
    assert requests["requeued_dead_runs"] == [dead] and requests["enqueue_failed"] == [dead]


def test_recover_stale_command_prints_what_it_did(make_request):
    pk = make_request(status=GenerationRequest.Status.RUNNING, attempts=1)
    out = StringIO()
    call_command("recover_stale", "--stale-after", "30", stdout=out)
    result = json.loads(out.getvalue())
    assert result["broker"] == "read"
    assert result["generation_requests"]["requeued_dead_runs"] == [pk]
    assert set(result) == {
        "broker", "generation_requests", "bible_proposal_runs", "option_swipes", "passage_edits", "training_jobs",
        "evaluation_runs", "adapter_exports",
    }
