from __future__ import annotations

from django.apps import AppConfig


class TrainingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "training"
    verbose_name = "Training"

    def ready(self) -> None:
        from mesu_web.jobs.recovery import register_recovery, rows_recovery
        from training import services, tasks
        from training.models import AdapterExport, EvaluationRun, TrainingJob

        kinds = {
            "training_jobs": (TrainingJob, tasks.training_job_run_task, services.training_job_requeue_dead_run),
            "evaluation_runs": (EvaluationRun, tasks.evaluation_run_task, services.evaluation_run_close_dead_run),
            "adapter_exports": (AdapterExport, tasks.adapter_export_task, services.adapter_export_close_dead_run),
        }
        for name, (model, task, requeue_dead_run) in kinds.items():
            register_recovery(name, rows_recovery(model=model, task=task, requeue_dead_run=requeue_dead_run))
