"""The running app's default path: the vllm engine on a real vLLM CPU server, and a real Celery worker."""

from __future__ import annotations

import json
import time
from io import StringIO

import pytest
from django.core.management import call_command

from tests.factories import story_with_chapters
from writer import services
from writer.models import GenerationOption, GenerationRequest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_generate_next_on_the_vllm_server_with_a_runtime_loaded_adapter(users, vllm_settings, lora_adapter_name):
    story = story_with_chapters(owner=users["alice"], chapters=3)
    out = StringIO()
    call_command(
        "generate_next", "--story", story.slug, "--n", "3", "--adapter", lora_adapter_name,
        "--preference", "a bit sad, not a tragedy", stdout=out,
    )
    payload = json.loads(out.getvalue())
    assert payload["status"] == "succeeded"
    assert len(payload["options"]) == 3
    assert {"id", "format_ok", "reasoning", "text", "tokens"} <= set(payload["options"][0])
    assert all(o["tokens"] > 0 for o in payload["options"])
    request = GenerationRequest.objects.get(pk=payload["request"])
    assert request.model_name == lora_adapter_name
    assert request.engine == "vllm" and request.preference == "a bit sad, not a tragedy"


def test_a_real_worker_runs_the_request_from_the_queue(users, vllm_settings, celery_worker_process):
    story = story_with_chapters(owner=users["alice"], chapters=2)
    # generation_request_create enqueues on commit; transactional_db commits at once.
    request = services.generation_request_create(story=story, user=users["alice"], n=2)
    deadline = time.monotonic() + 180
    while True:
        request.refresh_from_db()
        if request.is_finished or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    log = celery_worker_process.log_path.read_text()
    assert request.status == GenerationRequest.Status.SUCCEEDED, f"{request.error}\n{log[-3000:]}"
    assert GenerationOption.objects.filter(request=request).count() == 2
    assert "writer.tasks.generation_request_run_task" in log
    # A redelivered message (acks_late) for a finished request changes nothing.
    from writer.tasks import generation_request_run_task

    generation_request_run_task.delay(request.pk)
    time.sleep(3)
    assert GenerationOption.objects.filter(request=request).count() == 2
