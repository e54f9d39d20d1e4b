from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse

from mesu_web.jobs.models import JobRow, JobStatus


class TrainingJob(JobRow):
    """One training run on the `gpu` queue: GRPO (`training.trainer.run_grpo`) or the supervised warm
    start (`training.sft.run_sft`), by `kind`. Job state is this row; pages read it, never Celery's state.

    Stages ("SFT then GRPO"): a GRPO job whose `previous_stage` is an SFT job starts from that job's
    adapter (`GRPOJobConfig.init_adapter`). It is created with the SFT job, in the `waiting` status (on
    this model only: not queued, so no worker and no recovery sweep touches it), and the SFT job's end
    decides it (`training.services`): success queues it with `init_adapter` set to the SFT adapter;
    failure or cancellation fails it with the reason. One job has at most one next stage.
    """

    RUNNING_LABEL = "Training"

    class Kind(models.TextChoices):
        GRPO = "grpo", "GRPO"
        SFT = "sft", "SFT"

    # A stage 2 waiting for its stage 1 (`previous_stage`) to succeed. Neither queued nor running: the
    # recovery sweep (which re-enqueues stale `queued` rows) leaves it alone, and `is_finished` is False.
    WAITING = "waiting"
    STATUS_CHOICES = [*JobStatus.choices, (WAITING, "Waiting for stage 1")]

    status = models.CharField(max_length=12, choices=STATUS_CHOICES, default=JobStatus.QUEUED)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.GRPO)
    previous_stage = models.OneToOneField(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="next_stage",
        help_text="The SFT job whose adapter this GRPO job starts from (SFT then GRPO).",
    )
    name = models.CharField(max_length=120)
    # None for jobs started from the command line (train_grpo).
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    dataset_dir = models.CharField(max_length=500, help_text="Folder with train.jsonl (build_dataset).")
    out_dir = models.CharField(max_length=500, help_text="Checkpoints and the adapter go here.")
    config = models.JSONField(
        help_text="GRPOJobConfig.to_dict() or SFTJobConfig.to_dict() (by kind): validated before the job was queued."
    )

    cancel_requested = models.BooleanField(default=False)
    step = models.PositiveIntegerField(default=0)
    max_steps = models.PositiveIntegerField()
    step_logs = models.JSONField(
        default=list, blank=True, help_text="Per step: GRPO loss, KL, rewards, tokens/s; SFT loss, token accuracy, lr."
    )
    attempts = models.PositiveSmallIntegerField(default=0)

    adapter_path = models.CharField(max_length=500, blank=True)
    backend = models.CharField(max_length=16, blank=True)
    lora_nonzero = models.BooleanField(null=True)
    base_unchanged = models.BooleanField(null=True)
    resumed_from = models.CharField(max_length=500, blank=True)
    summary = models.JSONField(
        default=dict,
        blank=True,
        help_text="What the run reported at its end: device, seconds; SFT rows used and skipped, final loss.",
    )

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"

    def get_absolute_url(self) -> str:
        return reverse("training:job_detail", args=[self.pk])

    @property
    def is_sft(self) -> bool:
        return self.kind == self.Kind.SFT

    @property
    def is_waiting(self) -> bool:
        return self.status == self.WAITING

    @property
    def final_loss(self) -> float | None:
        """The last logged step's loss (None before the first step)."""
        return next((log["loss"] for log in reversed(self.step_logs) if log.get("loss") is not None), None)


class WriterAdapter(models.Model):
    """A registered LoRA the writer can serve: its folder sits in settings.WRITER_ADAPTER_DIR/<name>,
    the path the vLLM server loads it from (`/v1/load_lora_adapter`, `model=<name>` per request).

    At most one row is active: the adapter new generation requests use (none active: the base model,
    or settings.WRITER_DEFAULT_ADAPTER)."""

    name = models.CharField(max_length=64, unique=True, help_text="The served model name; never reused.")
    base_model = models.CharField(max_length=500)
    path = models.CharField(max_length=500, help_text="The registered copy, in WRITER_ADAPTER_DIR.")
    source_path = models.CharField(max_length=500, blank=True, help_text="Where it was registered from.")
    job = models.ForeignKey(
        TrainingJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="adapters"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    config = models.JSONField(default=dict, blank=True, help_text="The job config saved beside the adapter.")
    metrics = models.JSONField(default=dict, blank=True, help_text="Training: last rewards, steps, checks.")
    lora_rank = models.PositiveIntegerField(null=True, blank=True)
    lora_nonzero = models.BooleanField(default=False)
    is_active = models.BooleanField(default=False)
    loaded_at = models.DateTimeField(null=True, blank=True, help_text="Last loaded into the writer server.")
    load_error = models.TextField(blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"], condition=models.Q(is_active=True), name="one_active_writer_adapter"
            )
        ]

    def __str__(self) -> str:
        return self.name


class EvaluationRun(JobRow):
    """One target (the base model or an adapter) generated through the writer engine on a dataset's
    held-out test split and scored with every chosen reward; the leaderboard reads these rows."""

    adapter = models.ForeignKey(
        WriterAdapter, null=True, blank=True, on_delete=models.CASCADE, related_name="evaluations"
    )  # None: the base model
    target_name = models.CharField(max_length=64, help_text="The adapter's name, or the base model's.")
    dataset_dir = models.CharField(max_length=500)
    split = models.CharField(max_length=10, default="test")
    engine = models.CharField(max_length=16)
    reward_names = models.JSONField(default=list)
    limit = models.PositiveIntegerField(null=True, blank=True, help_text="Pairs scored at most (None: all).")
    max_new_tokens = models.PositiveIntegerField()
    seed = models.IntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True, help_text="{reward: mean over the scored pairs}.")
    format_ok = models.FloatField(null=True, blank=True, help_text="Share of answers in the exact format.")
    quality = models.JSONField(
        default=dict, blank=True, help_text="Means of writer.quality: words, repetition, longest_repeat."
    )
    samples = models.JSONField(default=list, blank=True, help_text="Per pair: book, k, scores, an excerpt.")
    tokens = models.PositiveIntegerField(default=0)
    seconds = models.FloatField(default=0.0)

    def __str__(self) -> str:
        return f"{self.target_name} on {self.dataset_dir} ({self.status})"


class AdapterExport(JobRow):
    """One export of a registered adapter (training.export), run on the `gpu` queue: merging loads the
    base model, and merged 4-bit needs CUDA."""

    RUNNING_LABEL = "Exporting"

    adapter = models.ForeignKey(WriterAdapter, on_delete=models.CASCADE, related_name="exports")
    formats = models.JSONField(help_text="training.export.EXPORT_FORMATS names.")
    gguf_types = models.JSONField(default=list, blank=True)
    out_dir = models.CharField(max_length=500)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    stage = models.CharField(max_length=200, blank=True)
    entries = models.JSONField(default=list, blank=True, help_text="ExportEntry.to_dict() per format and type.")

    def __str__(self) -> str:
        return f"{self.adapter} → {', '.join(self.formats)} ({self.status})"


class JudgeComparison(models.Model):
    """One pairwise judgement on a dataset's held-out pairs (`training.judge`): a judge model said, for
    every pair both writers answered and in both orders, whose answer is closer to the real next chapter.
    Recorded by `judge_pairs --record` or brought in from a GPU run by `import_results`; the leaderboard
    shows them. `win_rate` is over the decisive pairs (wins + losses), with its 95 % Wilson interval
    (`ci_low`, `ci_high`); `win_rate_ties_half` counts a tie as half a win. One row per
    (dataset, target, baseline, source): recording the same comparison again replaces it."""

    dataset_dir = models.CharField(max_length=500, help_text="The dataset folder, or an imported run's dataset name.")
    target = models.CharField(max_length=64, help_text="The writer judged (A): an adapter's or the base model's name.")
    baseline = models.CharField(max_length=64, help_text="The writer it was compared with (B).")
    judge_model = models.CharField(max_length=200, blank=True)
    mode = models.CharField(max_length=16, help_text="logprobs or letters (training.judge.MODES).")
    pairs = models.PositiveIntegerField()
    wins = models.PositiveIntegerField()
    losses = models.PositiveIntegerField()
    ties = models.PositiveIntegerField()
    no_verdict = models.PositiveIntegerField(default=0)
    win_rate = models.FloatField(null=True, blank=True, help_text="Wins / (wins + losses); None: no decisive pair.")
    ci_low = models.FloatField(null=True, blank=True)
    ci_high = models.FloatField(null=True, blank=True)
    win_rate_ties_half = models.FloatField(null=True, blank=True)
    mean_preference = models.FloatField(null=True, blank=True, help_text="Mean P(target) (logprobs mode).")
    source = models.CharField(max_length=500, help_text="Where it came from: a results folder, or judge_pairs.")
    summary = models.JSONField(default=dict, blank=True, help_text="The judge's whole summary, as printed.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["dataset_dir", "target", "baseline", "source"], name="one_judge_comparison_per_source"
            )
        ]

    def __str__(self) -> str:
        return f"{self.target} vs {self.baseline} on {self.dataset_dir}"

    @staticmethod
    def _percent(share: float | None) -> float | None:
        return None if share is None else 100 * share

    @property
    def win_rate_percent(self) -> float | None:
        return self._percent(self.win_rate)

    @property
    def ci_percent(self) -> tuple[float, float] | None:
        if self.ci_low is None or self.ci_high is None:
            return None
        return (100 * self.ci_low, 100 * self.ci_high)

    @property
    def ties_half_percent(self) -> float | None:
        return self._percent(self.win_rate_ties_half)
