from __future__ import annotations

from django.apps import AppConfig


class WriterConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "writer"
    verbose_name = "Writer"
