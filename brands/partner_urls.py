"""URLs of partner pages (issue 17), included by brands/urls.py before the brand slug routes."""

from __future__ import annotations

from django.urls import URLPattern, path

from brands import partner_views

urlpatterns: list[URLPattern] = [
    path("partners/", partner_views.partner_list, name="partner_list"),
    path("partners/new/", partner_views.partner_create, name="partner_create"),
    path("partners/<int:pk>/", partner_views.partner_detail, name="partner_detail"),
    path("partners/<int:pk>/edit/", partner_views.partner_edit, name="partner_edit"),
    path("partners/<int:pk>/tokens/", partner_views.token_create, name="partner_token_create"),
    path(
        "partners/<int:pk>/tokens/<int:token_pk>/revoke/",
        partner_views.token_revoke,
        name="partner_token_revoke",
    ),
    path("partners/<int:pk>/audit/", partner_views.partner_audit, name="partner_audit"),
]
