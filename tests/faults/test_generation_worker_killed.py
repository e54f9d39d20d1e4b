"""kill -9 of a generation worker in the middle of a real streamed generation (the real vLLM CPU server):
a new worker's start-up sweep finds the request `running` with nobody holding its run lock, queues it
again, and it completes with exactly n options."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mesu_web.celery import app
from mesu_web.jobs import recovery
from tests.factories import story_with_chapters
from tests.fixtures_redis import wait_for
from writer import services
from writer.models import GenerationOption, GenerationRequest
from writer.tasks import generation_request_run_task

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.vllm]

N = 2
# Long enough to be mid-stream when killed: vLLM writes ~40 tokens/s for 2 options here (~4 s for 160).
NEW_TOKENS = 160


def test_a_request_whose_worker_is_killed_mid_stream_completes_once_with_n_options(
    users, vllm_settings, start_worker
):
    vllm_settings.WRITER_STREAM = True
    story = story_with_chapters(owner=users["alice"], chapters=2)
    first = start_worker("generation", RECOVERY_SWEEP_INTERVAL="0")
    request = services.generation_request_create(story=story, user=users["alice"], n=N, max_new_tokens=NEW_TOKENS)

    def streaming() -> bool:
        request.refresh_from_db()
        return request.status == GenerationRequest.Status.RUNNING and request.progress_tokens > 0

    wait_for(streaming, timeout=120, what="the first worker to stream tokens", every=0.1)
    first.kill()
    request.refresh_from_db()
    assert request.status == GenerationRequest.Status.RUNNING and request.attempts == 1
    assert not GenerationOption.objects.filter(request=request).exists()  # nothing half-written was stored

    second = start_worker("generation", RECOVERY_SWEEP_INTERVAL="0")  # its start-up sweep is the recovery

    def running_again() -> bool:
        request.refresh_from_db()
        return request.attempts == 2 and request.status == GenerationRequest.Status.RUNNING

    wait_for(running_again, timeout=60, what=lambda: f"the new worker to take the request\n{second.log[-2000:]}")
    # While the new worker writes it, a sweep (from anywhere) sees its run lock and leaves it alone.
    assert request.pk not in recovery.sweep(app=app, stale_after=timedelta(0))["generation_requests"]["requeued_dead_runs"]

    def finished() -> bool:
        request.refresh_from_db()
        return request.is_finished

    wait_for(finished, timeout=180, what="the request to finish")
    assert request.status == GenerationRequest.Status.SUCCEEDED, request.error
    options = list(GenerationOption.objects.filter(request=request).order_by("index"))
    assert [option.index for option in options] == list(range(N))
    assert all(option.text or option.raw_output for option in options)
    assert request.attempts == 2
    assert f"'requeued_dead_runs': [{request.pk}]" in second.log  # the sweep did it, and said so

    # The killed worker's original message is still unacknowledged in Redis; after the visibility timeout
    # Redis hands it out again. That run changes nothing.
    generation_request_run_task.apply(args=[request.pk])
    assert GenerationOption.objects.filter(request=request).count() == N
    request.refresh_from_db()
    assert request.attempts == 2 and request.status == GenerationRequest.Status.SUCCEEDED
