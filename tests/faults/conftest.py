"""Real processes for the fault tests: Celery workers that a test can kill -9, on the private Redis of
tests/fixtures_redis.py."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures_worker import ROOT, launch_worker, worker_env  # noqa: F401 (ROOT: the fault tests import it from here)
from writer.engines.vllm_server import stop_process_group

_names = itertools.count(1)


class Worker:
    def __init__(self, proc: subprocess.Popen, name: str, log_path: Path) -> None:
        self.proc, self.name, self.log_path = proc, name, log_path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """kill -9 of the whole worker: its main process and its pool child, with no chance to clean up."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=20)

    def stop(self) -> None:
        stop_process_group(self.proc, timeout=20)


@pytest.fixture
def start_worker(transactional_db, broker: str, tmp_path) -> Iterator[Callable[..., Worker]]:
    """start_worker(queues="generation", **env) -> a running Celery worker on the test database and the
    private Redis (rows must be committed: transactional_db). Every one is stopped after the test."""

    started: list[Worker] = []

    def start(queues: str = "generation", **env: str) -> Worker:
        name = f"faults-{next(_names)}-{os.getpid()}@localhost"
        full_env = worker_env(broker_url=broker)
        full_env.update(env)
        log_path = tmp_path / f"{name.split('@')[0]}.log"
        proc = launch_worker(
            ["tests.faults.worker"], name=name, queues=queues, env=full_env, log_path=log_path, ready_within=90,
            poll=0.3,
        )
        worker = Worker(proc, name, log_path)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
