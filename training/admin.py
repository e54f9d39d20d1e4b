from __future__ import annotations

from django.contrib import admin

from training.models import TrainingJob


@admin.register(TrainingJob)
class TrainingJobAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "status", "step", "max_steps", "backend", "lora_nonzero", "created_at")
    list_filter = ("kind", "status", "backend")
    readonly_fields = ("config", "step_logs", "error", "adapter_path", "resumed_from")
