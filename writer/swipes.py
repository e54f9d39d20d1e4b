"""Swipes: one option of a finished request written again, from the request's prompt, while the other
options stay as they are.

Who asked for the chapter swipes (the author of an author's request, the reader of a reader's); never an
option already accepted as a chapter. The ask is an `OptionSwipe` row queued on the generation queue
(`tasks.option_swipe_run_task`); the run rebuilds the request's prompt for the option's plan as the
request's run built it (`services.request_prompt_builder`: the chapters before the request's chapter,
the wish, the bible, the author's note), writes and parses one answer and places its brand through the
same path (`services.options_write`), and then, in one transaction, keeps the option's earlier text as a
version (`writer.versions`), gives the option the new text and adds it as a version (cause swipe, who
asked, the request). A branded option's new text waits for its brand's review again: an approval covers
one text only, and a reader never reads a branded text its brand has not approved.

Limits: one swipe at a time per option, and SWIPES_PER_HOUR per person (rows, not a cache: a swipe is a
row anyway). A swipe whose worker died is failed with the reason when anyone looks at it.

Live text: the answer so far goes to the cache under the swipe's key (`writer.live.publish_swipe`, best
effort: a cache that fails never fails the swipe) and is cleared when a run of the swipe ends, however it
ends; the request page polls it (`live_views.option_swipe_live`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from mesu_web.errors import ApplicationError
from mesu_web.jobs.locks import run_lock
from writer import live, services
from writer.engines import get_engine, resolve_adapter, sampling_from_settings
from writer.models import GenerationOption, GenerationRequest, OptionSwipe, VersionCause
from writer.versions import (
    option_check_owner,
    option_plan_now,
    option_text_replace,
    option_version_add,
    option_versions_ensure,
)

SWIPES_PER_HOUR = 30  # per person: a reader trying each option a few times stays well inside
SWIPE_STALE_QUEUED = timedelta(minutes=10)  # a queued swipe this old lost its message
PROGRESS_EVERY_SECONDS = 1.0


def swipes_per_hour() -> int:
    return int(getattr(settings, "WRITER_SWIPES_PER_HOUR", SWIPES_PER_HOUR))


def swipe_expected_tokens(request: GenerationRequest) -> int:
    """The most tokens a swipe of one of `request`'s options writes: the reasoning's and the chapter's."""
    return settings.WRITER_REASONING_TOKENS + request.max_new_tokens


def option_swipe_in_progress(*, option: GenerationOption) -> OptionSwipe | None:
    """The option's swipe that is queued or running, if any; a dead one (its worker gone: the run lock is
    free; or queued so long that its message was lost) is failed with the reason instead."""
    from writer.tasks import option_swipe_run_task

    for swipe in OptionSwipe.objects.filter(
        option=option, status__in=(OptionSwipe.Status.QUEUED, OptionSwipe.Status.RUNNING)
    ).order_by("-created_at", "-pk"):
        if swipe.status == OptionSwipe.Status.RUNNING:
            with run_lock(option_swipe_run_task.name, swipe.pk) as free:
                if not free:
                    return swipe
            option_swipe_fail(swipe_id=swipe.pk, error="The worker writing it again stopped; ask again.")
        elif timezone.now() - swipe.created_at < SWIPE_STALE_QUEUED:
            return swipe
        else:
            option_swipe_fail(swipe_id=swipe.pk, error="No worker took the request in time; ask again.")
    return None


def _check_limit(user: AbstractBaseUser) -> None:
    most = swipes_per_hour()
    since = timezone.now() - timedelta(hours=1)
    recent = list(
        OptionSwipe.objects.filter(requested_by=user, created_at__gte=since)
        .order_by("-created_at")
        .values_list("created_at", flat=True)[:most]
    )
    if len(recent) >= most:
        wait = max(1, math.ceil((recent[-1] + timedelta(hours=1) - timezone.now()).total_seconds() / 60))
        raise ApplicationError(
            f"You have asked for {most} options to be written again within an hour, the most we take. "
            f"Try again in {wait} minute{'s' if wait != 1 else ''}.",
            {"retry_after_minutes": wait},
        )


def option_swipe_request(
    *, option: GenerationOption, user: AbstractBaseUser, enqueue: bool = True
) -> OptionSwipe:
    """Ask for `option` to be written again: a swipe row, queued on the generation queue. ApplicationError
    (nothing changed) for who may not, an accepted option, a swipe already running, or over the limit."""
    with transaction.atomic():
        # The request first, then the option: the order the review queue and acceptance lock them in.
        request = (
            GenerationRequest.objects.select_for_update().select_related("story").get(pk=option.request_id)
        )
        locked = (
            GenerationOption.objects.select_for_update(of=("self",))
            .select_related("accepted_chapter")
            .get(pk=option.pk)
        )
        locked.request = request
        option_check_owner(option=locked, request=request, user=user, verb="write again")
        if option_swipe_in_progress(option=locked) is not None:
            raise ApplicationError(f"{locked.label} is being written again already; wait for it.")
        _check_limit(user)
        get_engine(request.engine)  # the request's writer: fails now, with the reason, if it is gone
        resolve_adapter(request.adapter)
        swipe = OptionSwipe.objects.create(
            option=locked, requested_by=user, engine=request.engine, adapter=request.adapter
        )
    if enqueue:
        from writer.tasks import option_swipe_run_task

        swipe_id = swipe.pk
        transaction.on_commit(lambda: option_swipe_run_task.delay(swipe_id), robust=True)
    return swipe


def _start(swipe_id: int) -> OptionSwipe | None:
    with transaction.atomic():
        swipe = OptionSwipe.objects.select_for_update().get(pk=swipe_id)
        if swipe.is_finished:
            return None
        swipe.status = OptionSwipe.Status.RUNNING
        swipe.started_at = swipe.started_at or timezone.now()
        swipe.progress_tokens = 0
        swipe.error = ""
        swipe.save(update_fields=["status", "started_at", "progress_tokens", "error"])
    return swipe


def _accepted_message(option: GenerationOption) -> str:
    return (
        f"{option.label} was accepted as chapter {option.accepted_chapter.number} before it was written again; "
        "it stays as it was accepted."
    )


def option_swipe_run(*, swipe_id: int) -> OptionSwipe:
    """Write the swipe's option again and keep every text (see the module's docstring).

    Idempotent: a finished swipe is returned as it is. Raises ApplicationError (EngineError with
    `retryable`) on failure; the task retries or records it (`option_swipe_fail`)."""
    swipe = _start(swipe_id)
    if swipe is None:
        return OptionSwipe.objects.get(pk=swipe_id)
    live.clear_swipe(swipe_id=swipe_id)  # a run of it that died left its text: this run starts afresh
    try:
        return _run(swipe)
    finally:
        live.clear_swipe(swipe_id=swipe_id)  # done, failed, or to be tried again: the page shows the row


def _run(swipe: OptionSwipe) -> OptionSwipe:
    swipe_id = swipe.pk
    option = GenerationOption.objects.select_related(
        "request__story", "request__requested_by", "brand", "asset", "accepted_chapter"
    ).get(pk=swipe.option_id)
    request = option.request
    if option.accepted_chapter_id is not None:
        raise ApplicationError(_accepted_message(option))
    engine = get_engine(swipe.engine)
    adapter = resolve_adapter(swipe.adapter)
    place_after = settings.BRAND_PLACEMENT_METHOD == "rewrite"
    plan = option_plan_now(option=option, request=request, with_brief=not place_after)
    sampling = sampling_from_settings(max_tokens=request.max_new_tokens)
    expected = sampling.reasoning_tokens + sampling.max_tokens
    done = [0]
    model = [""]
    last_write = [0.0]

    def on_progress(tokens: int, texts: Mapping[int, str] | None = None) -> None:
        text = None if texts is None else texts.get(option.index)
        if text is not None:  # the answer so far: the page's live text (writer.live)
            live.publish_swipe(swipe_id=swipe_id, text=text)
        now = time.monotonic()
        if now - last_write[0] >= PROGRESS_EVERY_SECONDS:
            last_write[0] = now
            OptionSwipe.objects.filter(pk=swipe_id).update(progress_tokens=min(done[0] + tokens, expected))

    def written(tokens: int, model_name: str) -> None:
        done[0] += tokens
        model[0] = model_name

    [new] = services.options_write(
        request=request,
        plans=[plan],
        indices=[option.index],
        engine=engine,
        sampling=sampling,
        adapter=adapter,
        prompt_for=services.request_prompt_builder(request=request, engine=engine, sampling=sampling),
        on_progress=on_progress,
        on_written=written,
        note_stage=lambda stage: None,  # the swipe's page shows its tokens, not its stages
        place_after=place_after,
    )

    with transaction.atomic():
        GenerationRequest.objects.select_for_update().filter(pk=request.pk).first()
        locked = (
            GenerationOption.objects.select_for_update(of=("self",))
            .select_related("accepted_chapter")
            .get(pk=option.pk)
        )
        if locked.accepted_chapter_id is not None:  # the author accepted it while it was written
            raise ApplicationError(_accepted_message(locked))
        option_versions_ensure(option=locked)
        option_text_replace(option=locked, new=new)  # its ratings went with the earlier text
        version = option_version_add(
            option=locked,
            cause=VersionCause.SWIPE,
            created_by=swipe.requested_by,
            request=request,
            model_name=model[0],
        )
        OptionSwipe.objects.filter(pk=swipe_id).update(
            status=OptionSwipe.Status.SUCCEEDED,
            version=version,
            progress_tokens=done[0],
            finished_at=timezone.now(),
        )
    swipe.refresh_from_db()
    return swipe


def option_swipe_note_retry(*, swipe_id: int, error: str, delay_seconds: float) -> None:
    OptionSwipe.objects.filter(pk=swipe_id).update(
        status=OptionSwipe.Status.QUEUED, error=f"{error} Trying again in {delay_seconds:.0f} s."
    )


def option_swipe_fail(*, swipe_id: int, error: str) -> None:
    """Record a failure with its reason (a finished swipe stays as it is; the option keeps its text)."""
    OptionSwipe.objects.filter(pk=swipe_id).exclude(status=OptionSwipe.Status.SUCCEEDED).update(
        status=OptionSwipe.Status.FAILED,
        error=error or "The writer failed for an unknown reason.",
        finished_at=timezone.now(),
    )
    live.clear_swipe(swipe_id=swipe_id)  # a dead worker's run left its text behind


def option_swipe_requeue_dead_run(swipe_id: int) -> str | None:
    """For a recovery sweep (mesu_web.jobs.recovery): a `running` swipe whose worker died is failed with
    the reason (who asked swipes again with one click; the option kept its text)."""
    if not OptionSwipe.objects.filter(pk=swipe_id, status=OptionSwipe.Status.RUNNING).exists():
        return None
    option_swipe_fail(swipe_id=swipe_id, error="The worker writing it again stopped; ask again.")
    return "closed"
