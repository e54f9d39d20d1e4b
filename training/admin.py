from __future__ import annotations

from django.contrib import admin

from training.models import JudgeComparison, TrainingJob


@admin.register(TrainingJob)
class TrainingJobAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "status", "step", "max_steps", "backend", "lora_nonzero", "created_at")
    list_filter = ("kind", "status", "backend")
    readonly_fields = ("config", "step_logs", "error", "adapter_path", "resumed_from")


@admin.register(JudgeComparison)
class JudgeComparisonAdmin(admin.ModelAdmin):
    list_display = ("target", "baseline", "dataset_dir", "mode", "wins", "losses", "ties", "win_rate", "created_at")
    list_filter = ("mode", "judge_model")
    search_fields = ("target", "baseline", "dataset_dir", "source")
    readonly_fields = ("summary", "created_at")
