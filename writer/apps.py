from __future__ import annotations

from django.apps import AppConfig


class WriterConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "writer"
    verbose_name = "Writer"

    def ready(self) -> None:
        from mesu_web.jobs.recovery import register_recovery, rows_recovery
        from writer import bible, passages, services, swipes, tasks
        from writer.models import BibleProposalRun, GenerationRequest, OptionSwipe, PassageEdit

        register_recovery(
            "generation_requests",
            rows_recovery(
                model=GenerationRequest,
                task=tasks.generation_request_run_task,
                requeue_dead_run=services.generation_request_requeue_dead_run,
            ),
        )
        register_recovery(
            "bible_proposal_runs",
            rows_recovery(
                model=BibleProposalRun,
                task=tasks.bible_proposals_run_task,
                requeue_dead_run=bible.bible_proposals_requeue_dead_run,
            ),
        )
        register_recovery(
            "option_swipes",
            rows_recovery(
                model=OptionSwipe,
                task=tasks.option_swipe_run_task,
                requeue_dead_run=swipes.option_swipe_requeue_dead_run,
            ),
        )
        register_recovery(
            "passage_edits",
            rows_recovery(
                model=PassageEdit,
                task=tasks.passage_edit_run_task,
                requeue_dead_run=passages.passage_edit_requeue_dead_run,
            ),
        )
