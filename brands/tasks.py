"""Thin tasks on the `embeddings` queue (CELERY_TASK_ROUTES): take a primary key, call one service."""

from __future__ import annotations

from celery import Task, shared_task

from brands import services
from mesu_web.errors import EngineError
from mesu_web.jobs.tasks import RowTask

RETRY_DELAYS_SECONDS = (10, 60, 300)  # an embedding server that is down for minutes still catches up
# MiniLM loads in ~1 s and embeds a brand's assets in well under a second on one CPU core; an HTTP
# embedder waits at most 30 s per request. Minutes mean something is stuck.
SOFT_TIME_LIMIT_SECONDS = 120


class _EmbeddingTask(RowTask):
    what = "Embedding"


class BrandEmbeddingTask(_EmbeddingTask):
    def record_failure(self, pk: int, reason: str) -> None:
        services.brand_embedding_fail(brand_id=pk, error=reason)


class AssetEmbeddingTask(_EmbeddingTask):
    def record_failure(self, pk: int, reason: str) -> None:
        services.asset_embedding_fail(asset_id=pk, error=reason)


def _retry(task: Task, exc: EngineError) -> None:
    if not exc.retryable or task.request.retries >= task.max_retries:
        raise exc
    raise task.retry(exc=exc, countdown=RETRY_DELAYS_SECONDS[task.request.retries]) from exc


@shared_task(
    bind=True,
    base=BrandEmbeddingTask,
    max_retries=len(RETRY_DELAYS_SECONDS),
    soft_time_limit=SOFT_TIME_LIMIT_SECONDS,
    time_limit=SOFT_TIME_LIMIT_SECONDS + 30,
)
def brand_embed_task(self: Task, brand_id: int) -> None:
    """Embed a brand and its assets (their texts include the brand's)."""
    try:
        services.brand_embed(brand_id=brand_id)
    except EngineError as exc:
        _retry(self, exc)


@shared_task(
    bind=True,
    base=AssetEmbeddingTask,
    max_retries=len(RETRY_DELAYS_SECONDS),
    soft_time_limit=SOFT_TIME_LIMIT_SECONDS,
    time_limit=SOFT_TIME_LIMIT_SECONDS + 30,
)
def asset_embed_task(self: Task, asset_id: int) -> None:
    try:
        services.asset_embed(asset_id=asset_id)
    except EngineError as exc:
        _retry(self, exc)
