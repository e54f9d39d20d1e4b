"""URLs of review pages (issue 17), included by brands/urls.py before the brand slug routes."""

from __future__ import annotations

from django.urls import URLPattern, path

from brands import review_views

urlpatterns: list[URLPattern] = [
    path("review/<int:pk>/changes/", review_views.option_request_changes, name="option_request_changes"),
    path("review/<int:pk>/approve-edit/", review_views.option_approve_edit, name="option_approve_edit"),
    path("review/<int:pk>/revise/", review_views.option_revise, name="option_revise"),
    path("<slug:slug>/auto-approve/", review_views.auto_approve_rules, name="auto_approve_rules"),
    path(
        "<slug:slug>/auto-approve/<int:pk>/switch/",
        review_views.auto_approve_switch,
        name="auto_approve_switch",
    ),
]
