"""URLs of campaign pages (issue 17), included by brands/urls.py before the brand slug routes (each has
more segments than "<slug>/")."""

from __future__ import annotations

from django.urls import URLPattern, path

from brands import campaign_views

urlpatterns: list[URLPattern] = [
    path("<slug:slug>/campaigns/", campaign_views.campaign_list, name="campaign_list"),
    path("<slug:slug>/campaigns/new/", campaign_views.campaign_create, name="campaign_create"),
    path("<slug:slug>/campaigns/<int:pk>/edit/", campaign_views.campaign_edit, name="campaign_edit"),
    path("<slug:slug>/campaigns/<int:pk>/status/", campaign_views.campaign_status, name="campaign_status"),
]
