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
from writer.models import GenerationRequest
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


@dataclass
class _Run:
    attempt: int
    texts: dict[int, str] = field(default_factory=dict)
    written_at: float = -1e9  # time.monotonic() of the last write to the cache


_runs: OrderedDict[int, _Run] = OrderedDict()
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
    now = time.monotonic()
    with _lock:
        run = _runs.get(request_id)
        if run is None or run.attempt != attempt:
            run = _runs[request_id] = _Run(attempt=attempt)
        _runs.move_to_end(request_id)
        while len(_runs) > KEPT_RUNS:
            _runs.popitem(last=False)
        run.texts.update({int(i): text[:MAX_CHARS] for i, text in texts.items()})
        if now - run.written_at < PUBLISH_EVERY_SECONDS or now - _failed_at[0] < RETRY_AFTER_FAILURE_SECONDS:
            return False
        run.written_at = now
        entry = {"attempt": attempt, "texts": {str(i): t for i, t in sorted(run.texts.items())}}
    try:
        cache.set(cache_key(request_id), entry, timeout=ttl_seconds)
    except Exception:  # noqa: BLE001 (any cache failure: the live text is best effort, the run goes on)
        _failed_at[0] = time.monotonic()
        logger.warning("Could not write the live text of request %s; trying again in %.0f s",
                       request_id, RETRY_AFTER_FAILURE_SECONDS, exc_info=True)
        return False
    return True


def clear(*, request_id: int) -> None:
    """Forget the request's live text (it ended: its page shows the stored options or the failure)."""
    with _lock:
        _runs.pop(request_id, None)
    try:
        cache.delete(cache_key(request_id))
    except Exception:  # noqa: BLE001 (the entry then expires after TTL_SECONDS)
        logger.warning("Could not clear the live text of request %s", request_id, exc_info=True)


def reset() -> None:
    """Forget this process's runs and a past cache failure (tests that switch caches call this)."""
    with _lock:
        _runs.clear()
        _failed_at[0] = -1e9


def read(*, request_id: int, attempt: int) -> dict[int, str] | None:
    """The live text of the request's run `attempt` (option index -> the answer so far), or None: none
    written yet, one of an earlier attempt, or a cache that fails."""
    try:
        entry = cache.get(cache_key(request_id))
    except Exception:  # noqa: BLE001 (the page shows the progress bar alone)
        logger.warning("Could not read the live text of request %s", request_id, exc_info=True)
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
    options = []
    for index in sorted(texts):
        reasoning, chapter = split_answer(texts[index])
        if gen.use_brands or chapter:
            reasoning = ""
        options.append(LiveOption(index=index, reasoning=reasoning, text=chapter))
    return options
