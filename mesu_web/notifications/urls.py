from __future__ import annotations

from django.urls import path

from mesu_web.notifications import views

app_name = "notifications"

urlpatterns = [
    path("", views.notification_list, name="list"),
]
