"""What the broker still holds: the rows with a task message in Redis, waiting or delivered."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

# Where kombu's Redis transport keeps messages delivered to a worker and not yet acknowledged.
_UNACKED_KEY = "unacked"
# kombu's Redis transport keeps one list per queue and priority: "<queue>" for priority 0, else
# "<queue>\x06\x16<priority>" (its default priority steps).
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)


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


def message_row(payload: Any) -> tuple[str, int] | None:
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


def broker_snapshot(app: Any) -> BrokerSnapshot:
    """Every row with a message in Redis: waiting in one of the app's queues, or delivered and not yet
    acknowledged (running, prefetched, or held for a retry's countdown). Read in one MULTI, so a message
    is seen in one place or the other; the instant between a worker's pop and its bookkeeping can still
    hide one, which at worst enqueues a harmless duplicate. `app`: the Celery app whose broker and
    queues are read (a task's `.app`)."""
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
            row = message_row(payload[0] if delivered else payload)  # delivered: [message, exchange, key]
        except (ValueError, TypeError, IndexError, KeyError):
            continue
        if row is not None:
            pending.setdefault(row[0], set()).add(row[1])
    return BrokerSnapshot(pending)

