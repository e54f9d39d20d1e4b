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

urlpatterns += [
    path("adapters/", views.adapter_list, name="adapter_list"),
    path("adapters/<int:pk>/activate/", views.adapter_activate, name="adapter_activate"),
    path("adapters/<int:pk>/load/", views.adapter_load, name="adapter_load"),
    path("adapters/deactivate/", views.adapter_deactivate, name="adapter_deactivate"),
    path("leaderboard/", views.leaderboard, name="leaderboard"),
    path("evaluations/<int:pk>/", views.evaluation_detail, name="evaluation_detail"),
    path("evaluations/<int:pk>/progress/", views.evaluation_progress, name="evaluation_progress"),
]

urlpatterns += [
    path("books/", views.book_list, name="book_list"),
    path("books/<str:slug>/delete/", views.book_delete, name="book_delete"),
    path("datasets/", views.dataset_build, name="dataset_build"),
]

urlpatterns += [
    path("adapters/<int:pk>/export/", views.adapter_export, name="adapter_export"),
]
