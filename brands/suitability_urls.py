"""URLs of suitability pages (issue 17), included by brands/urls.py before the brand slug routes."""

from __future__ import annotations

from django.urls import URLPattern, path

from brands import suitability_views

urlpatterns: list[URLPattern] = [
    path("story/<slug:slug>/suitability/", suitability_views.story_suitability, name="story_suitability"),
    path(
        "story/<slug:slug>/suitability/reset/",
        suitability_views.story_suitability_reset,
        name="story_suitability_reset",
    ),
    path("sponsorship/age/", suitability_views.reader_age, name="reader_age"),
    path("<slug:slug>/suitability/", suitability_views.brand_suitability, name="brand_suitability"),
]
