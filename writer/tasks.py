"""Thin tasks: take a primary key, call one service. Retries and the failure hook live here."""

from __future__ import annotations

from celery import Task, shared_task

from mesu_web.errors import EngineError
from mesu_web.jobs.locks import exclusive_per_row
from mesu_web.jobs.tasks import RowTask
from writer import bible, services

RETRY_DELAYS_SECONDS = (15, 60)  # after the engine's own quick retries: two slower ones


class GenerationTask(RowTask):
    what = "The writer"

    def record_failure(self, pk: int, reason: str) -> None:
        services.generation_request_fail(request_id=pk, error=reason)


@shared_task(bind=True, base=GenerationTask, max_retries=len(RETRY_DELAYS_SECONDS))
@exclusive_per_row  # one run per request at a time; the recovery sweep reads the same lock
def generation_request_run_task(self: Task, request_id: int) -> None:
    try:
        services.generation_request_run(request_id=request_id)
    except EngineError as exc:
        if not exc.retryable or self.request.retries >= self.max_retries:
            raise
        delay = RETRY_DELAYS_SECONDS[self.request.retries]
        services.generation_request_note_retry(request_id=request_id, error=exc.message, delay_seconds=delay)
        raise self.retry(exc=exc, countdown=delay) from exc


class BibleProposalTask(RowTask):
    what = "The writer"

    def record_failure(self, pk: int, reason: str) -> None:
        bible.bible_proposals_fail(run_id=pk, error=reason)


@shared_task(bind=True, base=BibleProposalTask, max_retries=len(RETRY_DELAYS_SECONDS))
@exclusive_per_row  # one run per proposal request at a time
def bible_proposals_run_task(self: Task, run_id: int) -> None:
    """Story bible proposals from the newest chapters (writer.bible.bible_proposals_run)."""
    try:
        bible.bible_proposals_run(run_id=run_id)
    except EngineError as exc:
        if not exc.retryable or self.request.retries >= self.max_retries:
            raise
        delay = RETRY_DELAYS_SECONDS[self.request.retries]
        bible.bible_proposals_note_retry(run_id=run_id, error=exc.message, delay_seconds=delay)
        raise self.retry(exc=exc, countdown=delay) from exc
