from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse


class TrainingJob(models.Model):
    """One GRPO run on the `gpu` queue. Job state is this row; pages read it, never Celery's state."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Training"
        SUCCEEDED = "succeeded", "Done"
        CANCELLED = "cancelled", "Cancelled"
        FAILED = "failed", "Failed"

    name = models.CharField(max_length=120)
    # None for jobs started from the command line (train_grpo).
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    dataset_dir = models.CharField(max_length=500, help_text="Folder with train.jsonl (build_dataset).")
    out_dir = models.CharField(max_length=500, help_text="Checkpoints and the adapter go here.")
    config = models.JSONField(help_text="GRPOJobConfig.to_dict(): validated before the job was queued.")

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    cancel_requested = models.BooleanField(default=False)
    step = models.PositiveIntegerField(default=0)
    max_steps = models.PositiveIntegerField()
    step_logs = models.JSONField(default=list, blank=True, help_text="Per step: loss, KL, rewards, tokens/s.")
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)

    adapter_path = models.CharField(max_length=500, blank=True)
    backend = models.CharField(max_length=16, blank=True)
    lora_nonzero = models.BooleanField(null=True)
    base_unchanged = models.BooleanField(null=True)
    resumed_from = models.CharField(max_length=500, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"

    def get_absolute_url(self) -> str:
        return reverse("training:job_detail", args=[self.pk])

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.CANCELLED, self.Status.FAILED)
