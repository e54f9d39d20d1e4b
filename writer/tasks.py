"""Thin tasks: take a primary key, call one service. Retries and the failure hook live here."""

from __future__ import annotations

from collections.abc import Callable

from celery import Task, shared_task

from mesu_web.errors import EngineError
from mesu_web.jobs.locks import exclusive_per_row
from mesu_web.jobs.tasks import RowTask
from writer import bible, passages, services, swipes

RETRY_DELAYS_SECONDS = (15, 60)  # after the engine's own quick retries: two slower ones


class GenerationTask(RowTask):
    what = "The writer"

    def record_failure(self, pk: int, reason: str) -> None:
        services.generation_request_fail(request_id=pk, error=reason)


@shared_task(bind=True, base=GenerationTask, max_retries=len(RETRY_DELAYS_SECONDS))
@exclusive_per_row  # one run per request at a time; the recovery sweep reads the same lock
def generation_request_run_task(self: Task, request_id: int) -> None:
    _run_with_retries(
        self,
        lambda: services.generation_request_run(request_id=request_id),
        lambda error, delay: services.generation_request_note_retry(
            request_id=request_id, error=error, delay_seconds=delay
        ),
    )


def _run_with_retries(task: Task, run: Callable[[], None], note_retry: Callable[[str, int], None]) -> None:
    """`run()`; a retryable EngineError is noted on the row (`note_retry(error, delay)`) and retried after
    RETRY_DELAYS_SECONDS[attempt], until they run out; anything else, or the last failure, is raised."""
    try:
        run()
    except EngineError as exc:
        if not exc.retryable or task.request.retries >= task.max_retries:
            raise
        delay = RETRY_DELAYS_SECONDS[task.request.retries]
        note_retry(exc.message, delay)
        raise task.retry(exc=exc, countdown=delay) from exc


class BibleProposalTask(RowTask):
    what = "The writer"

    def record_failure(self, pk: int, reason: str) -> None:
        bible.bible_proposals_fail(run_id=pk, error=reason)


@shared_task(bind=True, base=BibleProposalTask, max_retries=len(RETRY_DELAYS_SECONDS))
@exclusive_per_row  # one run per proposal request at a time
def bible_proposals_run_task(self: Task, run_id: int) -> None:
    """Story bible proposals from the newest chapters (writer.bible.bible_proposals_run)."""
    _run_with_retries(
        self,
        lambda: bible.bible_proposals_run(run_id=run_id),
        lambda error, delay: bible.bible_proposals_note_retry(run_id=run_id, error=error, delay_seconds=delay),
    )


class PassageEditTask(RowTask):
    what = "The writer"

    def record_failure(self, pk: int, reason: str) -> None:
        passages.passage_edit_fail(edit_id=pk, error=reason)


@shared_task(bind=True, base=PassageEditTask, max_retries=len(RETRY_DELAYS_SECONDS))
@exclusive_per_row  # one run per passage edit at a time
def passage_edit_run_task(self: Task, edit_id: int) -> None:
    """A passage tool's change (writer.passages.passage_edit_run)."""
    _run_with_retries(
        self,
        lambda: passages.passage_edit_run(edit_id=edit_id),
        lambda error, delay: passages.passage_edit_note_retry(edit_id=edit_id, error=error, delay_seconds=delay),
    )


class OptionSwipeTask(RowTask):
    what = "The writer"

    def record_failure(self, pk: int, reason: str) -> None:
        swipes.option_swipe_fail(swipe_id=pk, error=reason)


@shared_task(bind=True, base=OptionSwipeTask, max_retries=len(RETRY_DELAYS_SECONDS))
@exclusive_per_row  # one run per swipe at a time
def option_swipe_run_task(self: Task, swipe_id: int) -> None:
    """One option written again (writer.swipes.option_swipe_run)."""
    _run_with_retries(
        self,
        lambda: swipes.option_swipe_run(swipe_id=swipe_id),
        lambda error, delay: swipes.option_swipe_note_retry(swipe_id=swipe_id, error=error, delay_seconds=delay),
    )
