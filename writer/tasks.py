"""Thin tasks: take a primary key, call one service. Retries and the failure hook live here."""

from __future__ import annotations

import logging

from celery import Task, shared_task

from mesu_web.errors import ApplicationError, EngineError
from writer import services

logger = logging.getLogger(__name__)

RETRY_DELAYS_SECONDS = (15, 60)  # after the engine's own quick retries: two slower ones


class GenerationTask(Task):
    acks_late = True
    reject_on_worker_lost = True  # a killed worker's request goes back to the queue

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:  # noqa: ANN001 (Celery's signature)
        request_id = args[0] if args else kwargs.get("request_id")
        if isinstance(exc, ApplicationError):
            reason = exc.message
        else:
            logger.error("Generation request %s crashed", request_id, exc_info=einfo.exc_info if einfo else None)
            reason = f"The writer crashed unexpectedly ({type(exc).__name__}). The team has the details in the logs."
        services.generation_request_fail(request_id=request_id, error=reason)


@shared_task(bind=True, base=GenerationTask, max_retries=len(RETRY_DELAYS_SECONDS))
def generation_request_run_task(self: Task, request_id: int) -> None:
    try:
        services.generation_request_run(request_id=request_id)
    except EngineError as exc:
        if not exc.retryable or self.request.retries >= self.max_retries:
            raise
        delay = RETRY_DELAYS_SECONDS[self.request.retries]
        services.generation_request_note_retry(request_id=request_id, error=exc.message, delay_seconds=delay)
        raise self.retry(exc=exc, countdown=delay) from exc
