"""URLs of partner pages (issue 17), included by brands/urls.py before the brand slug routes."""

from __future__ import annotations

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
