"""The abstract job row: job state is a row that pages read, never Celery's result."""

from __future__ import annotations

from django.db import models


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Done"
    CANCELLED = "cancelled", "Cancelled"
    FAILED = "failed", "Failed"


FINISHED_STATUSES = (JobStatus.SUCCEEDED, JobStatus.CANCELLED, JobStatus.FAILED)


class JobRow(models.Model):
    """Status, the reason it failed, and when it was made, started and finished.

    The recovery sweep (`mesu_web.jobs.recovery.rows_recover`) reads `status` and `created_at`. Pages
    show `status_label`, which names the running state after the work ("Training", "Exporting").
    """

    Status = JobStatus
    RUNNING_LABEL = "Running"

    status = models.CharField(max_length=12, choices=JobStatus.choices, default=JobStatus.QUEUED)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def status_label(self) -> str:
        if self.status == JobStatus.RUNNING:
            return self.RUNNING_LABEL
        return self.get_status_display()
