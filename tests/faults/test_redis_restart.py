"""Redis restarted empty under load (it keeps nothing on disk here, like ./dev's): every message waiting
in it is gone. The rows in PostgreSQL are the truth: the worker's own sweep finds the `queued` rows with no
message and enqueues them again, and every request completes, once, with its options.

The test runs on a private redis-server (tests/faults/conftest.py), never the machine's shared one.
"""

from __future__ import annotations

import pytest

from tests.factories import story_with_chapters
from tests.fixtures_redis import wait_for
from writer import services
from writer.models import GenerationOption, GenerationQuota, GenerationRequest

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.vllm]

LOAD = 4  # requests queued when Redis goes


def test_requests_lost_with_redis_are_enqueued_again_and_all_complete(users, vllm_settings, private_redis, start_worker):
    story = story_with_chapters(owner=users["alice"], chapters=1)
    # The load and the one made while Redis is down wait together: more than an author's default 4 at a time
    # (writer/quotas.py), so alice has her own limit, as staff would give a load tester.
    GenerationQuota.objects.create(user=users["alice"], concurrent=LOAD + 1, note="load test")
    # The worker sweeps every 2 s and counts a queued row as stale after 2 s (60 s and 60 s by default).
    worker = start_worker("generation", RECOVERY_SWEEP_INTERVAL="2", RECOVERY_STALE_AFTER="2")

    def create():  # noqa: ANN202
        return services.generation_request_create(story=story, user=users["alice"], n=1, max_new_tokens=24)

    requests = [create() for _ in range(LOAD)]
    wait_for(
        lambda: GenerationRequest.objects.filter(status=GenerationRequest.Status.RUNNING).exists(),
        timeout=60, what="the worker to start on the load",
    )
    queued_before = GenerationRequest.objects.filter(status=GenerationRequest.Status.QUEUED).count()
    assert queued_before >= 1  # messages waiting in Redis, about to be lost

    private_redis.shutdown_nosave()
    # A request made while Redis is down: the row is saved (the web's commit comes first), publishing its
    # message fails and is logged (a robust on-commit hook: the page still answers). Nothing is lost: the
    # sweep enqueues it once Redis is back.
    made_while_down = create()
    assert made_while_down.pk not in {r.pk for r in requests}
    assert made_while_down.status == GenerationRequest.Status.QUEUED
    requests.append(made_while_down)

    private_redis.start()  # empty

    def all_done() -> bool:
        return not GenerationRequest.objects.filter(pk__in=[r.pk for r in requests]).exclude(
            status=GenerationRequest.Status.SUCCEEDED
        ).exclude(status=GenerationRequest.Status.FAILED).exists()

    wait_for(all_done, timeout=240, what=lambda: f"every request to finish\n{worker.log[-3000:]}", every=0.5)
    for request in requests:
        request.refresh_from_db()
        assert request.status == GenerationRequest.Status.SUCCEEDED, request.error
        assert GenerationOption.objects.filter(request=request).count() == 1
        assert request.attempts == 1  # written once: a duplicate message finds it done and does nothing
    assert "'requeued_lost': [" in worker.log  # the worker's own sweep did it
