"""A real Celery worker process consuming the real Redis, on the test database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from writer.engines.vllm_server import stop_process_group

ROOT = Path(__file__).resolve().parent.parent


def _ping(app, name: str) -> bool:  # noqa: ANN001
    try:
        replies = app.control.ping(destination=[name], timeout=1.0) or []
    except Exception:  # noqa: BLE001 (the broker may still be connecting)
        return False
    return any(name in reply for reply in replies)


def launch_worker(
    module: list[str], *, name: str, queues: str, env: dict[str, str], log_path: Path, ready_within: float,
    poll: float = 0.5,
) -> subprocess.Popen:
    """Start `python -m <module> -Q queues -c 1 -n name` in its own session (so a stop takes its pool
    child too) and wait until it answers a ping; fail the test with its log if it does not within
    `ready_within` seconds."""
    from mesu_web.celery import app

    proc = subprocess.Popen(
        [sys.executable, "-m", *module, "-Q", queues, "-c", "1", "-n", name, "--without-gossip", "--without-mingle",
         "-l", "info"],
        cwd=ROOT, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + ready_within
    while not _ping(app, name):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process_group(proc, timeout=20)
            pytest.fail(f"the Celery worker did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(poll)
    return proc


def worker_env(*, broker_url: str) -> dict[str, str]:
    """The environment of a worker process: this one's, with the test's database, broker and the
    settings tests change (the worker reads its settings from the environment, like in production)."""
    env = dict(os.environ)
    env.update(
        POSTGRES_DB=settings.DATABASES["default"]["NAME"],  # the test database, by now
        REDIS_URL=broker_url,
        DJANGO_DEBUG="1",
        WRITER_ENGINE=settings.WRITER_ENGINE,
        WRITER_BASE_URL=settings.WRITER_BASE_URL,
        WRITER_MODEL=settings.WRITER_MODEL,
        WRITER_TOKENIZER_PATH=str(settings.WRITER_TOKENIZER_PATH),
        WRITER_MODEL_PATH=str(settings.WRITER_MODEL_PATH),
        WRITER_ADAPTER_DIR=str(settings.WRITER_ADAPTER_DIR),
        WRITER_CONTEXT_TOKENS=str(settings.WRITER_CONTEXT_TOKENS),
        WRITER_MAX_NEW_TOKENS=str(settings.WRITER_MAX_NEW_TOKENS),
        WRITER_TIMEOUT=str(settings.WRITER_TIMEOUT),
        WRITER_MAX_RETRIES=str(settings.WRITER_MAX_RETRIES),
        WRITER_RETRY_BACKOFF=str(settings.WRITER_RETRY_BACKOFF),
        WRITER_STREAM="1" if settings.WRITER_STREAM else "0",
        TRAINING_BOOKS_DIR=str(settings.TRAINING_BOOKS_DIR),
        TRAINING_DATASETS_DIR=str(settings.TRAINING_DATASETS_DIR),
        TRAINING_RUNS_DIR=str(settings.TRAINING_RUNS_DIR),
        TRAINING_EXPORTS_DIR=str(settings.TRAINING_EXPORTS_DIR),
    )
    return env


@pytest.fixture
def celery_worker_process(transactional_db, tmp_path):
    """Start `celery worker -Q generation,embeddings,gpu` against the test database; yield it; stop it.

    The test must commit its rows (transactional_db) so that the worker, another process, sees them.
    """
    from mesu_web.celery import app

    name = f"test-{os.getpid()}@localhost"
    env = worker_env(broker_url=settings.CELERY_BROKER_URL)
    app.control.purge()  # the suite's own broker database: nothing of value is queued there
    log = tmp_path / "worker.log"
    proc = launch_worker(
        ["celery", "-A", "mesu_web", "worker"], name=name, queues="generation,embeddings,gpu", env=env, log_path=log,
        ready_within=60,
    )
    proc.log_path = log
    yield proc
    stop_process_group(proc, timeout=20)
