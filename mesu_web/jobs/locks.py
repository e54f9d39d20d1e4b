"""One run per row at a time: a PostgreSQL session advisory lock per (task, row).

The lock outlives transactions and ends with the connection, so a worker that dies frees it at once;
the recovery sweep reads the same lock to tell a live run from a dead one (`mesu_web.jobs.recovery`).
"""

from __future__ import annotations

import functools
import logging
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import DatabaseError, connection

logger = logging.getLogger(__name__)

_INT4_MAX = 2**31 - 1


def lock_class(name: str) -> int:
    """A stable 31-bit number for a task name: the first half of the advisory lock's key."""
    return zlib.crc32(name.encode()) & _INT4_MAX


def _key(name: str, pk: int) -> list[int]:
    if not 0 <= pk <= _INT4_MAX:
        raise ValueError(f"primary key {pk} does not fit the advisory lock's 32-bit key")
    return [lock_class(name), pk]


def transaction_lock(name: str, pk: int) -> None:
    """Wait for the lock `(name, pk)` and hold it until this transaction ends (a PostgreSQL transaction
    advisory lock: callers that count rows before adding one take turns). Nothing elsewhere (SQLite)."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", _key(name, pk))


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
    key = _key(name, pk)
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

