from __future__ import annotations

from django.urls import path

from training import views

app_name = "training"

urlpatterns = [
    path("", views.job_list, name="job_list"),
    path("<int:pk>/", views.job_detail, name="job_detail"),
    path("<int:pk>/progress/", views.job_progress, name="job_progress"),
    path("<int:pk>/cancel/", views.job_cancel, name="job_cancel"),
]
