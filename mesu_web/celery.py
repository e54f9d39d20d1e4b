from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mesu_web.settings")

app = Celery("mesu_web")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
