from __future__ import annotations

from django.urls import path

from brands import (
    approval_views,
    campaign_urls,
    measurement_urls,
    partner_urls,
    review_urls,
    suitability_urls,
    views,
)

app_name = "brands"

# The fixed paths come before "<slug>/": a brand's slug never shadows them.
urlpatterns = [
    path("", views.brand_list, name="brand_list"),
    path("new/", views.brand_create, name="brand_create"),
    path("review/", views.review_queue, name="review_queue"),
    path("review/<int:pk>/", views.review_detail, name="review_detail"),
    path("review/<int:pk>/approve/", views.option_approve, name="option_approve"),
    path("review/<int:pk>/reject/", views.option_reject, name="option_reject"),
    path("story/<slug:slug>/settings/", views.story_settings, name="story_settings"),
    path("sponsorship/", views.sponsorship, name="sponsorship"),
    # Issue 18: staff approve new brands ("approvals" is a reserved slug, brands.services.RESERVED_SLUGS).
    path("approvals/", approval_views.brand_approvals, name="brand_approvals"),
    path("approvals/<int:pk>/approve/", approval_views.brand_approve, name="brand_approve"),
    path("approvals/<int:pk>/reject/", approval_views.brand_reject, name="brand_reject"),
    # Issue 17: each part's own routes (each module's paths either start with a fixed word or have more
    # segments than "<slug>/", so none is shadowed by a brand's slug).
    *campaign_urls.urlpatterns,
    *suitability_urls.urlpatterns,
    *measurement_urls.urlpatterns,
    *review_urls.urlpatterns,
    *partner_urls.urlpatterns,
    path("<slug:slug>/", views.brand_detail, name="brand_detail"),
    path("<slug:slug>/edit/", views.brand_edit, name="brand_edit"),
    path("<slug:slug>/dashboard/", views.brand_dashboard, name="brand_dashboard"),
    path("<slug:slug>/assets/new/", views.asset_create, name="asset_create"),
    path("<slug:slug>/assets/<int:pk>/edit/", views.asset_edit, name="asset_edit"),
    path("<slug:slug>/assets/<int:pk>/delete/", views.asset_delete, name="asset_delete"),
]
