"""Which Celery queues have a worker listening: each worker says so in the cache (Redis) every few
seconds, for each queue it consumes, with a short expiry; a page that queues work reads one key per
queue (no broadcast to the workers, which would wait for a timeout when none answers).

A queue nobody listens on is the usual reason a job "waits forever" (a fresh install that runs no
worker for the `gpu` queue, say): the pages that queue work say so (`queues` in every template).
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
EXPIRES_SECONDS = 35  # three missed heartbeats: the worker is gone
_KEY = "mesu:queue-listener:{}"

_beat: tuple[threading.Thread, threading.Event] | None = None


def mark_listening(queues: list[str], worker: str) -> None:
    for queue in queues:
        cache.set(_KEY.format(queue), worker, EXPIRES_SECONDS)


def is_listened(queue: str) -> bool:
    """Whether a worker listened on `queue` within the last EXPIRES_SECONDS (always, with tasks run
    eagerly in the web process). A cache that cannot be read counts as listened: no false alarm."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return True
    try:
        return cache.get(_KEY.format(queue)) is not None
    except Exception:  # noqa: BLE001 (Redis down: the page says nothing rather than fail)
        logger.warning("Could not read which queues have a worker", exc_info=True)
        return True


class QueueStatus:
    """`queues.gpu` in a template: True when a worker listens on the `gpu` queue (read when used)."""

    def __getitem__(self, queue: str) -> bool:
        return is_listened(queue)


def queue_status(request: Any) -> dict[str, QueueStatus]:  # a context processor
    return {"queues": QueueStatus()}


def _consumed_queues(consumer: Any) -> list[str]:
    try:
        return sorted(q.name for q in consumer.task_consumer.queues)
    except AttributeError:
        return sorted(consumer.app.amqp.queues.consume_from)


def start_heartbeat(consumer: Any) -> None:
    """At a worker's start: mark its queues as listened now and every HEARTBEAT_SECONDS, in a daemon
    thread."""
    global _beat
    if _beat is not None:
        return
    queues = _consumed_queues(consumer)
    worker = getattr(consumer, "hostname", None) or socket.gethostname()
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            try:
                mark_listening(queues, worker)
            except Exception:  # noqa: BLE001 (Redis away for a moment: try again at the next beat)
                logger.warning("Could not mark queues %s as listened", queues, exc_info=True)
            stop.wait(HEARTBEAT_SECONDS)

    thread = threading.Thread(target=beat, name="mesu-queue-heartbeat", daemon=True)
    _beat = (thread, stop)
    thread.start()
    logger.info("Listening on %s (said in the cache every %.0f s)", ", ".join(queues), HEARTBEAT_SECONDS)


def stop_heartbeat() -> None:
    global _beat
    if _beat is not None:
        thread, stop = _beat
        stop.set()
        thread.join(timeout=5)
        _beat = None
