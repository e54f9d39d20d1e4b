"""Parts of busy pages, cheaply: their HTML kept in the cache under a key made of everything it shows, and
addresses for many rows at the cost of one `reverse`.

A fragment (`Fragment`) is a template rendered alone (`render_to_string`, no request: no context
processors, no CSRF token; a form in it posts through a `<form id=...>` outside, with `form="..."` on its
buttons) from the context it is given. Its key is `key`, the values that decide its HTML (the rows shown,
or the timestamps that change whenever they do), plus a hash of the template's source, so that a deploy
that changes the template never shows the old HTML. Nothing is invalidated: a change makes a new key, and
the old entry expires (FRAGMENT_TIMEOUT). All of a page's fragments are read in one round trip
(`cache.get_many`); the cache unreachable, they are rendered as if missing, and the page is served.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from django.core.cache import cache
from django.template.loader import get_template, render_to_string
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe

logger = logging.getLogger(__name__)

# Seconds a fragment stays in the cache after it was written: its key changes with what it shows, so
# this only bounds the memory of old keys and of a change made behind the services' back (the admin).
FRAGMENT_TIMEOUT = 600

_MARKER = 987_654_321  # a number no real row has, where `numbered_url` cuts the address


@dataclass(frozen=True)
class Fragment:
    name: str  # a page's name for it
    template: str
    key: tuple  # everything its HTML depends on (str() of each part goes into the key)
    context: Callable[[], Mapping[str, object]]  # called only when the fragment must be rendered

    def cache_key(self) -> str:
        source = get_template(self.template).template.source  # a template changed by a deploy: new keys
        digest = hashlib.md5(repr((source, *map(str, self.key))).encode(), usedforsecurity=False).hexdigest()
        return f"fragment:{self.name}:{digest}"


def cached_fragments(*fragments: Fragment, timeout: int = FRAGMENT_TIMEOUT) -> dict[str, SafeString]:
    """{name: HTML} of each fragment, from the cache (one round trip) or rendered and then kept."""
    keys = {f.name: f.cache_key() for f in fragments}
    try:
        found = cache.get_many(list(keys.values()))
        reachable = True
    except Exception:  # noqa: BLE001 (Redis away: render everything; the page must not fail for a cache)
        logger.warning("The fragment cache is unreachable: rendering %s", sorted(keys), exc_info=True)
        found, reachable = {}, False
    out: dict[str, SafeString] = {}
    missing: dict[str, str] = {}
    for f in fragments:
        html = found.get(keys[f.name])
        if html is None:
            html = render_to_string(f.template, dict(f.context()))
            missing[keys[f.name]] = html
        out[f.name] = mark_safe(html)  # noqa: S308 (our own template's output, escaped when it was rendered)
    if missing and reachable:
        try:
            cache.set_many(missing, timeout)
        except Exception:  # noqa: BLE001
            logger.warning("Could not keep fragments %s in the cache", sorted(missing), exc_info=True)
    return out


def numbered_url(viewname: str, *args: object) -> Callable[[int], str]:
    """`reverse(viewname, args=[*args, n])` for any n, at the cost of one `reverse` (~60 us each, and a
    list of 50 rows with 4 links a row would pay it 200 times). The number must be the URL's last argument."""
    head, _, tail = reverse(viewname, args=[*args, _MARKER]).rpartition(str(_MARKER))
    return lambda number: f"{head}{number}{tail}"


def this_minute() -> int:
    """The minute now (since the epoch): in the key of a fragment that shows ages ("3 minutes ago"), which
    are then as exact as they read, to the minute."""
    return int(time.time() // 60)
