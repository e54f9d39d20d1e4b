"""A private Redis for the tests that read or stop the broker (so that stopping it disturbs nobody else
on the machine), and this process's Celery app pointed at it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    predicate: Callable[[], object], *, timeout: float, what: str | Callable[[], str], every: float = 0.2
) -> object:
    """Poll until `predicate()` is truthy; return it, or fail saying what did not happen (`what` may be
    a callable, to show a worker's log as it is at the time of the failure)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what() if callable(what) else what}")
        time.sleep(every)


class RedisServer:
    """A redis-server of our own on a free port, started like ./dev starts the shared one (no disk)."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder), "--logfile", str(self.folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for(self.ping, timeout=20, what=f"redis-server on port {self.port}", every=0.05)

    def ping(self) -> bool:
        return subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True).stdout.strip() == "PONG"

    def shutdown_nosave(self) -> None:
        """What a crash or a restart of a Redis that keeps nothing on disk does: every message is gone."""
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True)
        if self.proc is not None:
            self.proc.wait(timeout=20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=20)


@pytest.fixture
def private_redis(tmp_path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder)
    server.start()
    yield server
    server.stop()


def reset_pools(app) -> None:  # noqa: ANN001
    """Drop this process's broker connections. kombu keeps its pools in a global registry keyed by the
    connection: a pool closed but left there answers "Acquire on closed pool" to the next test."""
    from kombu import pools

    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    app.amqp._producer_pool = None
    pools.reset()


@pytest.fixture
def broker(private_redis: RedisServer) -> Iterator[str]:
    """This process's Celery app (the web side: enqueueing, control) on the private Redis; restored after."""
    from mesu_web.celery import app

    previous = app.conf.broker_url
    reset_pools(app)
    app.conf.broker_url = private_redis.url
    yield private_redis.url
    reset_pools(app)
    app.conf.broker_url = previous
