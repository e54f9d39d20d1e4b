from __future__ import annotations

from django.urls import path

from mesu_web.notifications import views

app_name = "notifications"

urlpatterns = [
    path("", views.notification_list, name="list"),
    # Reads never write (issue 18): marking read is a POST, one row or all of them.
    path("read/", views.notifications_read_all, name="read_all"),
    path("<int:pk>/read/", views.notification_read, name="read"),
]
