"""URLs of measurement pages (issue 17), included by brands/urls.py before the brand slug routes.

Each path starts with a fixed word ("register", "measure") or has more segments than "<slug>/"."""

from __future__ import annotations

from django.urls import URLPattern, path

from brands import measurement_views as views

urlpatterns: list[URLPattern] = [
    path("register/", views.register, name="placement_register"),
    path("measure/impression/<int:pk>/", views.impression, name="measure_impression"),
    path("measure/disclosure/<int:pk>/", views.disclosure_open, name="measure_disclosure"),
    path("<slug:slug>/reports/", views.reports, name="reports"),
    path("<slug:slug>/reports/stories.csv", views.story_report_csv, name="story_report_csv"),
    path("<slug:slug>/reports/campaigns/<int:pk>/", views.campaign_report, name="campaign_report"),
    path("<slug:slug>/reports/campaigns/<int:pk>/csv/", views.campaign_report_csv, name="campaign_report_csv"),
]
