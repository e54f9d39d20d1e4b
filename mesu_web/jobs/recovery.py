"""Recovery: the database is the source of truth, so a row that no worker will run any more is queued again.

Two things go wrong with a queue of real processes:

- **A worker dies mid-run** (kill -9, out of memory, a lost machine). Its message stays "unacknowledged" in
  Redis until the visibility timeout (CELERY_BROKER_TRANSPORT_OPTIONS, about 30 minutes) and the row says
  `running` for ever. Every run holds a PostgreSQL session advisory lock for its row (`exclusive_per_row`);
  the server drops it the moment the worker's connection closes, so a `running` row whose lock is free has
  no live worker: that is certain, not guessed from a timeout, and a slow run (minutes of prefill, a
  writer server that hangs) is never mistaken for a dead one.
- **A message is lost** (Redis restarted empty: it keeps nothing on disk here; or the broker was down when
  the row was made). The row says `queued` and no message for it is left in the broker: neither waiting in
  a queue nor delivered to a worker (running, prefetched, or waiting for a retry's countdown, which Redis
  keeps in its `unacked` hash). Rows younger than RECOVERY_STALE_AFTER are left alone: their message may
  be on its way.

`sweep()` re-enqueues both, for every kind of row an app registered (`register_recovery`, from its
`AppConfig.ready()`: this library imports no app). It runs at every worker's start (the `worker_ready`
signal), then every RECOVERY_SWEEP_INTERVAL seconds in a thread of the worker's main process (there is no
beat process), and from `manage.py recover_stale`. One sweep runs at a time over all workers (an advisory lock too).

A second run of a row is harmless by construction: the services refuse to write a second set of options
(a row lock and a unique constraint) and a finished training job does nothing, and the run lock keeps two
workers from working on one row at once: a duplicate message finds the lock taken and does nothing.

Not covered: with PgBouncer in transaction mode session locks do not work (connect the workers directly);
a worker whose machine vanishes keeps its lock until PostgreSQL notices the dead TCP connection (set
`tcp_keepalives_idle` on the server to bound that); `idle_session_timeout` must stay off for workers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from django.core.exceptions import ImproperlyConfigured
from django.db import connection, connections, models, transaction
from django.utils import timezone

from mesu_web.jobs.broker import BrokerSnapshot, broker_snapshot
from mesu_web.jobs.locks import run_lock

logger = logging.getLogger(__name__)




@dataclass
class Recovered:
    """What a sweep did for one kind of row (primary keys)."""

    # running, worker gone: queued again / failed or cancelled instead
    requeued_dead_runs: list[int] = field(default_factory=list)
    closed_dead_runs: list[int] = field(default_factory=list)
    # queued and stale, no message anywhere: enqueued again / the broker could not be read
    requeued_lost: list[int] = field(default_factory=list)
    unchecked: list[int] = field(default_factory=list)
    # the broker refused the new message (the row stays queued: the next sweep sends it)
    enqueue_failed: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[int]]:
        return {name: list(value) for name, value in self.__dict__.items()}

    @property
    def changed(self) -> bool:
        return any((self.requeued_dead_runs, self.closed_dead_runs, self.requeued_lost, self.enqueue_failed))


def rows_recover(
    *,
    model: type[models.Model],
    task: Any,
    stale_after: timedelta,
    broker: BrokerSnapshot,
    requeue_dead_run: Callable[[int], str | None],
    queued: str = "queued",
    running: str = "running",
) -> Recovered:
    """Re-enqueue the rows of `model` (a `status` field, `created_at`) that `task` (decorated with
    `exclusive_per_row`) will never run otherwise.

    `requeue_dead_run(pk)` is called, under the row's run lock, for a `running` row whose worker is gone:
    it moves the row back to `queued` and returns "requeued" (it is then enqueued), or closes it (failed,
    cancelled) and returns "closed"; None when the row was no longer `running`.
    """
    done = Recovered()
    if connection.vendor == "postgresql":  # elsewhere a live run cannot be told from a dead one
        for pk in list(model.objects.filter(status=running).values_list("pk", flat=True)):
            with run_lock(task.name, pk) as free:  # taken: a live worker runs it
                if not free:
                    continue
                with transaction.atomic():
                    outcome = requeue_dead_run(pk)
            # Enqueued once the lock is released: a worker that takes the message at once must get it.
            if outcome == "requeued":
                done.requeued_dead_runs.append(pk)
                _enqueue(task, pk, done)
            elif outcome == "closed":
                done.closed_dead_runs.append(pk)
    cutoff = timezone.now() - stale_after
    stale = (
        model.objects.filter(status=queued, created_at__lt=cutoff)
        .exclude(pk__in=done.requeued_dead_runs)
        .values_list("pk", flat=True)
    )
    for pk in stale:
        if not broker.readable:
            done.unchecked.append(pk)
        elif not broker.has(task.name, pk):
            done.requeued_lost.append(pk)
            _enqueue(task, pk, done)
    return done


def _enqueue(task: Any, pk: int, done: Recovered) -> None:
    def send() -> None:
        try:
            task.delay(pk)
        except Exception as exc:  # noqa: BLE001 (kombu's errors vary by transport; the next sweep retries)
            logger.warning("Recovery could not enqueue %s for row %s: %s", task.name, pk, exc)
            done.enqueue_failed.append(pk)

    # The row's change is committed first (at once outside a transaction), never the message before it.
    transaction.on_commit(send)


# ---------------------------------------------------------------------------------------------
# The registry: each app says which kinds of row it has, from its AppConfig.ready()


class RecoverFunction(Protocol):
    def __call__(self, *, stale_after: timedelta, broker: BrokerSnapshot) -> Recovered: ...


_registry: dict[str, RecoverFunction] = {}


def register_recovery(name: str, recover: RecoverFunction) -> None:
    """Sweep one kind of row: `recover(stale_after=..., broker=...)` re-enqueues the rows of that kind no
    worker will run otherwise (usually `rows_recovery(...)`). `name` keys its part of the sweep's result."""
    if _registry.get(name, recover) is not recover:
        raise ImproperlyConfigured(f"Two recovery functions are registered as {name!r}.")
    _registry[name] = recover


def registered_recoveries() -> dict[str, RecoverFunction]:
    return dict(_registry)


def rows_recovery(
    *, model: type[models.Model], task: Any, requeue_dead_run: Callable[[int], str | None]
) -> RecoverFunction:
    """The recovery function of one model whose rows `task` runs: `rows_recover` with these three."""

    def recover(*, stale_after: timedelta, broker: BrokerSnapshot) -> Recovered:
        return rows_recover(
            model=model, task=task, stale_after=stale_after, broker=broker, requeue_dead_run=requeue_dead_run
        )

    return recover


# ---------------------------------------------------------------------------------------------
# The sweep, and where it runs


def sweep(*, app: Any, stale_after: timedelta) -> dict[str, Any]:
    """Recover every registered kind of row once; returns what was done, per kind (see `Recovered`).
    `app`: the Celery app whose broker is read."""
    with run_lock("mesu_web.recovery.sweep", 0) as alone:
        if not alone:
            return {"skipped": "another sweep is running"}
        broker = broker_snapshot(app)
        kinds = {name: recover(stale_after=stale_after, broker=broker) for name, recover in _registry.items()}
    result: dict[str, Any] = {"broker": "read" if broker.readable else broker.problem}
    result.update({name: done.to_dict() for name, done in kinds.items()})
    for name, done in kinds.items():
        if done.changed:
            logger.warning("Recovery sweep: %s %s", name, done.to_dict())
    if not broker.readable and any(done.unchecked for done in kinds.values()):
        logger.warning("Recovery sweep: queued rows not checked: %s", broker.problem)
    return result


_sweeper: tuple[threading.Thread, threading.Event] | None = None


def start_sweeper(app: Any) -> None:
    """At a worker's start: sweep now, then every RECOVERY_SWEEP_INTERVAL seconds (0: only now), in a
    daemon thread, so that a slow or unreachable database never blocks the worker's event loop."""
    global _sweeper
    from django.conf import settings

    if _sweeper is not None:
        return
    stop = threading.Event()
    thread = threading.Thread(
        target=_sweep_loop,
        kwargs={
            "app": app,
            "stop": stop,
            "interval": settings.RECOVERY_SWEEP_INTERVAL,
            "stale_after": timedelta(seconds=settings.RECOVERY_STALE_AFTER),
        },
        name="mesu-recovery",
        daemon=True,
    )
    _sweeper = (thread, stop)
    thread.start()


def stop_sweeper() -> None:
    global _sweeper
    if _sweeper is not None:
        thread, stop = _sweeper
        stop.set()
        thread.join(timeout=10)
        _sweeper = None


def _sweep_loop(*, app: Any, stop: threading.Event, interval: float, stale_after: timedelta) -> None:
    while not stop.is_set():
        try:
            sweep(app=app, stale_after=stale_after)
        except Exception:  # a database or broker that is down: the next round tries again
            logger.exception("The recovery sweep failed; it runs again in %s s", interval)
        finally:
            connections.close_all()  # this thread's connection only: nothing idles between sweeps
        if interval <= 0 or stop.wait(interval):
            return
