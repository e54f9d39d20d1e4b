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

`sweep()` re-enqueues both. It runs at every worker's start (the `worker_ready` signal), then every
RECOVERY_SWEEP_INTERVAL seconds in a thread of the worker's main process (there is no beat process), and
from `manage.py recover_stale`. One sweep runs at a time over all workers (an advisory lock too).

A second run of a row is harmless by construction: the services refuse to write a second set of options
(a row lock and a unique constraint) and a finished training job does nothing, and the run lock keeps two
workers from working on one row at once: a duplicate message finds the lock taken and does nothing.

Not covered: with PgBouncer in transaction mode session locks do not work (connect the workers directly);
a worker whose machine vanishes keeps its lock until PostgreSQL notices the dead TCP connection (set
`tcp_keepalives_idle` on the server to bound that); `idle_session_timeout` must stay off for workers.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import DatabaseError, connection, connections, models, transaction
from django.utils import timezone

logger = logging.getLogger(__name__)

_INT4_MAX = 2**31 - 1
# Where kombu's Redis transport keeps messages delivered to a worker and not yet acknowledged.
_UNACKED_KEY = "unacked"
# kombu's Redis transport keeps one list per queue and priority: "<queue>" for priority 0, else
# "<queue>\x06\x16<priority>" (its default priority steps).
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)


# ---------------------------------------------------------------------------------------------
# The run lock


def _lock_class(name: str) -> int:
    """A stable 31-bit number for a task name: the first half of the advisory lock's key."""
    return zlib.crc32(name.encode()) & _INT4_MAX


@contextmanager
def run_lock(name: str, pk: int) -> Iterator[bool]:
    """Try to take the lock `(name, pk)` on this thread's database connection; yield whether we got it.

    A PostgreSQL session advisory lock: it outlives transactions and ends with the connection, so a
    process that dies frees it at once. Released on exit (if the connection broke, the lock went with
    it). Databases without advisory locks (SQLite on a training-only box) always get it.
    """
    if connection.vendor != "postgresql":
        yield True
        return
    if not 0 <= pk <= _INT4_MAX:
        raise ValueError(f"primary key {pk} does not fit the advisory lock's 32-bit key")
    key = [_lock_class(name), pk]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", key)
        held = bool(cursor.fetchone()[0])
    try:
        yield held
    finally:
        if held:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s, %s)", key)
            except DatabaseError:
                # The connection is broken (so the lock is gone) or its transaction failed: closing it
                # makes sure no lock outlives the run on a reused connection.
                logger.warning("Could not release the run lock %s %s; closing the connection", name, pk)
                connection.close()


def exclusive_per_row(run: Callable[..., Any]) -> Callable[..., Any]:
    """For a bound task whose first argument is a row's primary key: one run per row at a time.

    The run holds `run_lock(<task name>, pk)`; a second message for the same row (a redelivery, a sweep's
    re-enqueue) that arrives while the first runs does nothing. The sweep reads the same lock to tell a
    live run from a dead one. Put it under `@shared_task(bind=True, ...)`.
    """

    @functools.wraps(run)
    def wrapper(task: Any, *args: Any, **kwargs: Any) -> Any:
        pk = args[0] if args else next(iter(kwargs.values()))
        with run_lock(task.name, pk) as held:
            if not held:
                logger.info("%s for row %s runs on another worker; this message does nothing", task.name, pk)
                return None
            return run(task, *args, **kwargs)

    return wrapper


# ---------------------------------------------------------------------------------------------
# What the broker still holds


@dataclass
class BrokerSnapshot:
    """The rows with a task message in the broker now, by task name (None: the broker was not read)."""

    pending: dict[str, set[int]] | None
    problem: str = ""

    @property
    def readable(self) -> bool:
        return self.pending is not None

    def has(self, task_name: str, pk: int) -> bool:
        return self.pending is not None and pk in self.pending.get(task_name, set())


def _queue_names(app: Any) -> list[str]:
    names = {app.conf.task_default_queue or "celery"}
    routes = app.conf.task_routes or {}
    if isinstance(routes, dict):
        names |= {r["queue"] for r in routes.values() if isinstance(r, dict) and r.get("queue")}
    return sorted(names)


def _message_row(payload: Any) -> tuple[str, int] | None:
    """(task name, primary key) of one Celery message as kombu's Redis transport stores it."""
    if not isinstance(payload, dict):
        return None
    name = (payload.get("headers") or {}).get("task")
    if not name:
        return None
    try:
        body = payload["body"]
        if (payload.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs = json.loads(body)[:2]  # task message protocol 2: [args, kwargs, embed]
        value = args[0] if args else next(iter(kwargs.values()))
        return name, int(value)
    except (KeyError, ValueError, TypeError, IndexError, StopIteration):
        return None


def broker_snapshot() -> BrokerSnapshot:
    """Every row with a message in Redis: waiting in one of the app's queues, or delivered and not yet
    acknowledged (running, prefetched, or held for a retry's countdown). Read in one MULTI, so a message
    is seen in one place or the other; the instant between a worker's pop and its bookkeeping can still
    hide one, which at worst enqueues a harmless duplicate."""
    from mesu_web.celery import app

    url = str(app.conf.broker_url or "")
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return BrokerSnapshot(None, f"only a Redis broker can be inspected, not {url.split(':', 1)[0]}")
    import redis

    suffixes = ["", *(f"{_PRIORITY_SEP}{step}" for step in _PRIORITY_STEPS)]
    keys = [f"{queue}{suffix}" for queue in _queue_names(app) for suffix in suffixes]
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        with client.pipeline(transaction=True) as pipe:
            for key in keys:
                pipe.lrange(key, 0, -1)
            pipe.hvals(_UNACKED_KEY)
            *queued, unacked = pipe.execute()
    except redis.RedisError as exc:
        return BrokerSnapshot(None, f"the broker could not be read ({exc})")
    finally:
        client.close()
    pending: dict[str, set[int]] = {}
    waiting = [(raw, False) for items in queued for raw in items]
    for raw, delivered in waiting + [(raw, True) for raw in unacked]:
        try:
            payload = json.loads(raw)
            row = _message_row(payload[0] if delivered else payload)  # delivered: [message, exchange, key]
        except (ValueError, TypeError, IndexError, KeyError):
            continue
        if row is not None:
            pending.setdefault(row[0], set()).add(row[1])
    return BrokerSnapshot(pending)


# ---------------------------------------------------------------------------------------------
# Recovering one kind of row (the apps' services call this with their model and task)


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
# The sweep, and where it runs


def sweep(*, stale_after: timedelta) -> dict[str, Any]:
    """Recover every kind of row once; returns what was done, per kind (see `Recovered`)."""
    from training.services import training_rows_recover
    from writer.services import generation_requests_recover

    with run_lock("mesu_web.recovery.sweep", 0) as alone:
        if not alone:
            return {"skipped": "another sweep is running"}
        broker = broker_snapshot()
        kinds: dict[str, Recovered] = {
            "generation_requests": generation_requests_recover(stale_after=stale_after, broker=broker),
            **training_rows_recover(stale_after=stale_after, broker=broker),
        }
    result: dict[str, Any] = {"broker": "read" if broker.readable else broker.problem}
    result.update({name: done.to_dict() for name, done in kinds.items()})
    for name, done in kinds.items():
        if done.changed:
            logger.warning("Recovery sweep: %s %s", name, done.to_dict())
    if not broker.readable and any(done.unchecked for done in kinds.values()):
        logger.warning("Recovery sweep: queued rows not checked: %s", broker.problem)
    return result


_sweeper: tuple[threading.Thread, threading.Event] | None = None


def start_sweeper() -> None:
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


def _sweep_loop(*, stop: threading.Event, interval: float, stale_after: timedelta) -> None:
    while not stop.is_set():
        try:
            sweep(stale_after=stale_after)
        except Exception:  # a database or broker that is down: the next round tries again
            logger.exception("The recovery sweep failed; it runs again in %s s", interval)
        finally:
            connections.close_all()  # this thread's connection only: nothing idles between sweeps
        if interval <= 0 or stop.wait(interval):
            return
