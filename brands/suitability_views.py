"""Suitability pages (issue 17): the author's review of a story's categories and tier, a brand's accepted
categories and tier, and the reader's age. Thin: a form in, one service call, errors as messages.
A GET never classifies (classifying writes): the author asks for it with a POST."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from brands import iab, selectors, suitability
from brands.models import Brand, RiskTier
from brands.suitability_forms import BrandSuitabilityForm, ReaderAgeForm, StorySuitabilityForm
from mesu_web.errors import ApplicationError
from writer import selectors as writer_selectors


def _get_brand_for_manager(request: HttpRequest, slug: str) -> Brand:
    if not selectors.user_can_manage_brands(user=request.user):
        raise PermissionDenied("Only brand managers can open the brand pages.")
    return selectors.brand_get_for_manager(slug=slug, user=request.user)


@login_required
@require_http_methods(["GET", "POST"])
def story_suitability(request: HttpRequest, slug: str) -> HttpResponse:
    story = writer_selectors.story_get_for_owner(slug=slug, user=request.user)
    row = suitability.story_suitability_get(story=story)
    initial = (
        {"categories": row.categories, "risk_tier": row.risk_tier} if row else {"risk_tier": RiskTier.LOW}
    )
    form = StorySuitabilityForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            suitability.story_suitability_set(story=story, **form.cleaned_data)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, "Saved: your categories and tier stand until you reset them.")
            return redirect("brands:story_suitability", slug=story.slug)
    context = {
        "story": story,
        "row": row,
        "form": form,
        "stale": suitability.story_suitability_is_stale(story=story, row=row),
        "categories": [iab.label(c) for c in row.categories] if row else [],
        "evidence": suitability.evidence_rows(row),
    }
    return render(request, "brands/suitability_story.html", context)


@login_required
@require_POST
def story_suitability_reset(request: HttpRequest, slug: str) -> HttpResponse:
    story = writer_selectors.story_get_for_owner(slug=slug, user=request.user)
    try:
        row = suitability.story_suitability_reset(story=story)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Classified again: {row.get_risk_tier_display().lower()}.")
    return redirect("brands:story_suitability", slug=story.slug)


@login_required
@require_http_methods(["GET", "POST"])
def brand_suitability(request: HttpRequest, slug: str) -> HttpResponse:
    brand = _get_brand_for_manager(request, slug)
    current = suitability.brand_suitability_get(brand=brand)
    initial = {
        "category": current.category,
        "accepted_categories": current.accepted_categories,
        "max_risk_tier": current.max_risk_tier,
        "allow_health": current.allow_health,
        "allow_politics": current.allow_politics,
        "review_sla_days": current.review_sla_days,
    }
    form = BrandSuitabilityForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            suitability.brand_suitability_update(brand=brand, **form.cleaned_data)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Suitability of {brand.name} saved.")
            return redirect("brands:brand_suitability", slug=brand.slug)
    return render(request, "brands/suitability_brand.html", {"brand": brand, "form": form})


@login_required
@require_POST
def reader_age(request: HttpRequest) -> HttpResponse:
    form = ReaderAgeForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Tell us whether you are 18 or older.")
    else:
        try:
            suitability.reader_age_set(
                user=request.user, adult=form.cleaned_data["adult"] == "yes", replace=False
            )
        except ApplicationError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, "Thank you: your age is saved.")
    return redirect("brands:sponsorship")
