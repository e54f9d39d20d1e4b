"""Live text: the options of a generation request as they are written, for its page.

The worker's progress callback (`services.generation_request_run`) hands the answers so far to
`publish`, which keeps them in Redis through Django's cache (one entry per request: the run's attempt
and each option's text, by option index), written at most every PUBLISH_EVERY_SECONDS and kept
TTL_SECONDS after the last write; `clear` drops it when the request ends. The request page polls
`live_views.request_live` about once a second, which reads it through `live_options_for`.

Writing is best effort: a cache that fails (Redis down) is logged and left alone for a while; the
generation never fails for it, and the page then shows the progress bar alone.

What is a draft may not be shown to everyone. A branded option waits for its brand's review before a
reader sees it (`GenerationOption.visible_to_requester`), and brands are placed after the writing (write
first, then place): the text written live is the draft, before any review. So the live text goes only
to those who see every option of the finished request (the story's author, staff) and to the reader who
asked where the request carries no brand (`use_brands` off). Reasoning so far is shown only where no
brand is asked for (a brand's brief may be in it, as the finished page hides a branded option's).

A swipe (writer.swipes: one option of a finished request written again) has its own entry, under the
swipe's key (`publish_swipe`, `read_swipe`, `clear_swipe`: the request's run is over), kept and shown the
same way and to the same people (`swipe_live_for`); its page polls `live_views.option_swipe_live`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from django.core.cache import cache

from writer.engines.base import ProgressCallback, progress_part
from writer.models import GenerationOption, GenerationRequest, OptionSwipe
from writer.parsing import strip_tags
from writer.prompting import REASONING_END, REASONING_START, SOLUTION_END, SOLUTION_START

logger = logging.getLogger(__name__)

PUBLISH_EVERY_SECONDS = 0.5  # the page polls every second: twice as often keeps it at most ~1.5 s behind
TTL_SECONDS = 120  # after the last write: a run that died leaves nothing behind for long
MAX_CHARS = 40_000  # per option (~10,000 tokens of English): a runaway answer is not kept whole
RETRY_AFTER_FAILURE_SECONDS = 10.0  # a cache that failed is not asked again before this
KEPT_RUNS = 64  # runs this process remembers the texts of (one worker runs one or a few at a time)

# A tag cut off at the end of a text written so far ("<SOLU", "</"): not shown until it is whole.
_PARTIAL_TAG = re.compile(r"<[/A-Za-z_ ]{0,24}$")


def cache_key(request_id: int) -> str:
    return f"writer:live:{request_id}"


def swipe_cache_key(swipe_id: int) -> str:
    """A swipe's entry: one option written again after its request ended (writer.swipes)."""
    return f"writer:live:swipe:{swipe_id}"


@dataclass
class _Run:
    attempt: int
    texts: dict[int, str] = field(default_factory=dict)
    written_at: float = -1e9  # time.monotonic() of the last write to the cache


_runs: OrderedDict[str, _Run] = OrderedDict()  # by cache key
_lock = threading.Lock()
_failed_at = [-1e9]  # time.monotonic() of the last failed cache write


def options_progress(callback: ProgressCallback | None, indices: Sequence[int]) -> ProgressCallback | None:
    """The progress callback of one engine call that writes the options `indices` (its k-th answer is
    option indices[k]): `callback`'s texts are then {option index: answer so far}."""
    return progress_part(callback, whole=lambda texts: dict(zip(indices, texts, strict=False)))


def publish(
    *, request_id: int, attempt: int, texts: Mapping[int, str], ttl_seconds: int = TTL_SECONDS
) -> bool:
    """Keep `texts` (option index -> the answer so far) as the request's live text for its run `attempt`.

    Called as often as the engine reports (every token); merges into what this process has for the run
    and writes the whole to the cache at most every PUBLISH_EVERY_SECONDS. True when it wrote."""
    return _publish(cache_key(request_id), f"request {request_id}", attempt, texts, ttl_seconds)


def publish_swipe(*, swipe_id: int, text: str, ttl_seconds: int = TTL_SECONDS) -> bool:
    """Keep `text` (the answer so far) as the swipe's live text; as `publish`, one option."""
    return _publish(swipe_cache_key(swipe_id), f"swipe {swipe_id}", 0, {0: text}, ttl_seconds)


def _publish(key: str, what: str, attempt: int, texts: Mapping[int, str], ttl_seconds: int) -> bool:
    now = time.monotonic()
    with _lock:
        run = _runs.get(key)
        if run is None or run.attempt != attempt:
            run = _runs[key] = _Run(attempt=attempt)
        _runs.move_to_end(key)
        while len(_runs) > KEPT_RUNS:
            _runs.popitem(last=False)
        run.texts.update({int(i): text[:MAX_CHARS] for i, text in texts.items()})
        if now - run.written_at < PUBLISH_EVERY_SECONDS or now - _failed_at[0] < RETRY_AFTER_FAILURE_SECONDS:
            return False
        run.written_at = now
        entry = {"attempt": attempt, "texts": {str(i): t for i, t in sorted(run.texts.items())}}
    try:
        cache.set(key, entry, timeout=ttl_seconds)
    except Exception:  # noqa: BLE001 (any cache failure: the live text is best effort, the run goes on)
        _failed_at[0] = time.monotonic()
        logger.warning(
            "Could not write the live text of %s; trying again in %.0f s",
            what,
            RETRY_AFTER_FAILURE_SECONDS,
            exc_info=True,
        )
        return False
    return True


def clear(*, request_id: int) -> None:
    """Forget the request's live text (it ended: its page shows the stored options or the failure)."""
    _clear(cache_key(request_id), f"request {request_id}")


def clear_swipe(*, swipe_id: int) -> None:
    """Forget the swipe's live text (it ended, or a run of it starts afresh)."""
    _clear(swipe_cache_key(swipe_id), f"swipe {swipe_id}")


def _clear(key: str, what: str) -> None:
    with _lock:
        _runs.pop(key, None)
    try:
        cache.delete(key)
    except Exception:  # noqa: BLE001 (the entry then expires after TTL_SECONDS)
        logger.warning("Could not clear the live text of %s", what, exc_info=True)


def reset() -> None:
    """Forget this process's runs and a past cache failure (tests that switch caches call this)."""
    with _lock:
        _runs.clear()
        _failed_at[0] = -1e9


def read(*, request_id: int, attempt: int) -> dict[int, str] | None:
    """The live text of the request's run `attempt` (option index -> the answer so far), or None: none
    written yet, one of an earlier attempt, or a cache that fails."""
    return _read(cache_key(request_id), f"request {request_id}", attempt)


def read_swipe(*, swipe_id: int) -> str | None:
    """The swipe's answer so far, or None: none written yet, or a cache that fails."""
    texts = _read(swipe_cache_key(swipe_id), f"swipe {swipe_id}", 0)
    return None if texts is None else texts.get(0)


def _read(key: str, what: str, attempt: int) -> dict[int, str] | None:
    try:
        entry = cache.get(key)
    except Exception:  # noqa: BLE001 (the page shows the progress bar alone)
        logger.warning("Could not read the live text of %s", what, exc_info=True)
        return None
    if not isinstance(entry, dict) or entry.get("attempt") != attempt:
        return None
    return {int(i): text for i, text in entry.get("texts", {}).items()}


# --- What the page shows -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveOption:
    index: int
    reasoning: str  # the reasoning so far, "" once the chapter has begun or where it is not shown
    text: str  # the chapter so far

    @property
    def label(self) -> str:
        return f"Option {self.index + 1}"  # as GenerationOption.label


def split_answer(text: str) -> tuple[str, str]:
    """(reasoning so far, chapter so far) of an answer being written, its tags taken out. An answer
    without the reasoning's tag (a one-phase writer) is all chapter."""
    # A tag cut off at the end, and half a character (a token that ends inside a UTF-8 sequence decodes
    # to U+FFFD until its next token comes).
    text = _PARTIAL_TAG.sub("", text).rstrip("\ufffd")
    if SOLUTION_START in text:
        head, chapter = text.split(SOLUTION_START, 1)
        chapter = chapter.split(SOLUTION_END, 1)[0]
    elif text.lstrip().startswith(REASONING_START):
        head, chapter = text, ""
    else:
        return "", strip_tags(text).strip()
    reasoning = head.split(REASONING_END, 1)[0]
    return strip_tags(reasoning).strip(), strip_tags(chapter).strip()


def may_see_live(*, gen: GenerationRequest, user) -> bool:  # noqa: ANN001 (a User or AnonymousUser)
    """Who sees the draft as it is written (see the module's docstring)."""
    if not user.is_authenticated:
        return False
    if user.pk == gen.story.owner_id or user.is_staff:
        return True
    return user.pk == gen.requested_by_id and not gen.use_brands


def live_options_for(*, gen: GenerationRequest, user) -> list[LiveOption] | None:  # noqa: ANN001
    """The options' text so far for `user`, in option order; None when there is nothing live to show
    them (the request is not being written, or they may not see its draft). No query: `gen` comes with
    its story (`selectors.request_get_for_user`); one cache read."""
    if gen.status != GenerationRequest.Status.RUNNING or not may_see_live(gen=gen, user=user):
        return None
    texts = read(request_id=gen.pk, attempt=gen.attempts) or {}
    return [_live_option(index, texts[index], use_brands=gen.use_brands) for index in sorted(texts)]


def swipe_live_for(*, option: GenerationOption, swipe: OptionSwipe | None, user) -> LiveOption | None:  # noqa: ANN001
    """The text so far of `swipe` (the option's swipe in progress, or None) for `user`: empty while none
    is written yet; None when there is nothing live to show them (no swipe being written, or they may not
    see its draft: the same people as the request's, `may_see_live`). `option` comes with its request
    and story; one cache read."""
    if swipe is None or swipe.status != OptionSwipe.Status.RUNNING:
        return None
    if not may_see_live(gen=option.request, user=user):
        return None
    text = read_swipe(swipe_id=swipe.pk) or ""
    return _live_option(option.index, text, use_brands=option.request.use_brands)


def _live_option(index: int, text: str, *, use_brands: bool) -> LiveOption:
    reasoning, chapter = split_answer(text)
    if use_brands or chapter:
        reasoning = ""
    return LiveOption(index=index, reasoning=reasoning, text=chapter)
