from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from training.models import TrainingJob


def training_job_list() -> QuerySet[TrainingJob]:
    return TrainingJob.objects.select_related("created_by").order_by("-created_at")


def training_job_get(*, pk: int) -> TrainingJob:
    job = TrainingJob.objects.filter(pk=pk).first()
    if job is None:
        raise Http404("No such training job.")
    return job


def reward_chart(*, job: TrainingJob, width: int = 640, height: int = 220) -> dict:
    """SVG polylines of each reward over the steps (and the total), scaled into width x height pixels."""
    logs = [log for log in job.step_logs if log.get("step")]
    names = sorted({name for log in logs for name in (log.get("rewards") or {})})
    series = {name: [(log["step"], (log.get("rewards") or {}).get(name)) for log in logs] for name in names}
    series["total"] = [(log["step"], log.get("reward")) for log in logs]
    values = [v for points in series.values() for _, v in points if isinstance(v, int | float)]
    if not values:
        return {"lines": [], "width": width, "height": height}
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    last_step = max(job.max_steps, max(step for step, _ in series["total"]))
    pad = 24  # pixels around the plot for the axis labels
    lines = []
    for name, points in series.items():
        coords = [
            f"{pad + (step - 1) / max(1, last_step - 1) * (width - 2 * pad):.1f},"
            f"{height - pad - (value - low) / span * (height - 2 * pad):.1f}"
            for step, value in points
            if isinstance(value, int | float)
        ]
        if coords:
            lines.append({"name": name, "points": " ".join(coords), "last": points[-1][1]})
    return {"lines": lines, "width": width, "height": height, "low": low, "high": high, "last_step": last_step}
