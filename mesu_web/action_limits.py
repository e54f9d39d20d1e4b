"""Flood limits on a user's actions (ratings, passage-tool asks): fixed windows of the clock counted in
Django's cache (Redis in production, shared by every web process).

`spend` counts one action of a user in each window (this minute, this hour, ...) before it checks, so
that concurrent posts cannot all slip under a limit, and raises the caller's `ActionLimited` subclass
with the seconds until the window turns. While the cache is unreachable nothing is counted (a warning
is logged): the limit is a guard against floods, never a reason to lose a user's action.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

from django.conf import settings
from django.core.cache import cache

from mesu_web.errors import ApplicationError

logger = logging.getLogger(__name__)

Limit = tuple[int, int, str]  # (actions at most, window seconds, the window in words: "a minute")


class ActionLimited(ApplicationError):
    """Too many actions of one kind from one user: `retry_after` seconds until the next is taken."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, {"retry_after": retry_after})
        self.retry_after = retry_after


def per_minute_and_hour(setting_prefix: str, per_minute: int, per_hour: int) -> tuple[Limit, Limit]:
    """The limits of this minute and this hour: settings `<setting_prefix>_PER_MINUTE` and `_PER_HOUR`,
    else the defaults given."""
    return (
        (int(getattr(settings, f"{setting_prefix}_PER_MINUTE", per_minute)), 60, "a minute"),
        (int(getattr(settings, f"{setting_prefix}_PER_HOUR", per_hour)), 3600, "an hour"),
    )


def wait_words(seconds: int) -> str:
    """"40 seconds", "3 minutes": how long to wait, as a message says it."""
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    return f"{math.ceil(seconds / 60)} minutes"


def _count(key: str, timeout: int) -> int:
    if cache.add(key, 1, timeout=timeout):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add() and incr()
        cache.set(key, 1, timeout=timeout)
        return 1


def spend(
    *,
    key_prefix: str,
    user_id: object,
    limits: Sequence[Limit],
    error: type[ActionLimited],
    message: Callable[[int, str, int], str],
) -> None:
    """Count one action of `user_id` under `key_prefix`; raise `error(message(most, words, wait))` when a
    window is over its limit. `message(most, window words, seconds to wait)` words the refusal."""
    now = time.time()
    try:
        for most, window, words in limits:
            bucket = int(now // window)
            if _count(f"{key_prefix}:{user_id}:{window}:{bucket}", window + 5) > most:
                wait = max(1, math.ceil((bucket + 1) * window - now))
                raise error(message(most, words, wait), retry_after=wait)
    except ActionLimited:
        raise
    except Exception:  # noqa: BLE001 (redis.ConnectionError and friends: any cache failure)
        logger.warning("The rate limit is off (%s): the cache is unreachable", key_prefix, exc_info=True)
