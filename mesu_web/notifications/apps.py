from __future__ import annotations

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "mesu_web.notifications"
    label = "notifications"
    verbose_name = "Notifications"
