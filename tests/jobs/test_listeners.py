"""Which queues have a worker (mesu_web/jobs/listeners.py): each worker says so in Redis; the pages that
queue work say when none listens."""

from __future__ import annotations

import time

import pytest
import redis
from django.core.cache import cache
from django.urls import reverse

from mesu_web.jobs import listeners
from tests.factories import story_with_chapters


def _forget(*queues: str) -> None:
    for queue in queues:
        cache.delete(listeners._KEY.format(queue))


def test_a_queue_is_listened_while_a_worker_says_so_and_eager_tasks_always_are(settings):
    _forget("gpu")
    assert listeners.is_listened("gpu") is False
    listeners.mark_listening(["gpu"], "gpu@test")
    assert listeners.is_listened("gpu") is True
    ttl = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"]).ttl(cache.make_key(listeners._KEY.format("gpu")))
    assert 0 < ttl <= listeners.EXPIRES_SECONDS  # gone when the worker stops saying so
    _forget("gpu")
    settings.CELERY_TASK_ALWAYS_EAGER = True
    assert listeners.is_listened("gpu") is True


def test_the_pages_that_queue_work_say_when_no_worker_listens(client_for, users, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    _forget("gpu", "generation")
    story = story_with_chapters(owner=users["alice"], chapters=1)
    jobs = client_for("root").get(reverse("training:job_list")).content.decode()
    assert 'data-queue-warning="gpu"' in jobs and "celery -A mesu_web worker -Q gpu" in jobs
    page = client_for("alice").get(story.get_absolute_url()).content.decode()
    assert 'data-queue-warning="generation"' in page
    listeners.mark_listening(["gpu", "generation"], "w@test")
    assert 'data-queue-warning' not in client_for("root").get(reverse("training:job_list")).content.decode()
    assert 'data-queue-warning' not in client_for("alice").get(story.get_absolute_url()).content.decode()
    _forget("gpu", "generation")


@pytest.mark.slow
def test_a_real_worker_says_which_queues_it_listens_on(celery_worker_process):
    deadline = time.monotonic() + 30
    queues = ("generation", "embeddings", "gpu")
    while not all(listeners.is_listened(q) for q in queues) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert all(listeners.is_listened(q) for q in queues), celery_worker_process.log_path.read_text()[-2000:]
    assert listeners.is_listened("a-queue-nobody-listens-on") is False
