"""Measurement pages (issue 17): the events impressions.js posts, the reports of a brand's managers and
their CSV, and the public placement register. Thin: a selector or one service call (brands.measurement)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from brands import measurement, selectors
from brands.models import Brand

REGISTER_PER_PAGE = 50


def _brand_for_reports(request: HttpRequest, slug: str) -> Brand:
    """403 for who is not a brand manager at all, 404 for a brand the manager does not manage."""
    if not selectors.user_can_manage_brands(user=request.user):
        raise PermissionDenied("Only brand managers can open the brand reports.")
    return selectors.brand_get_for_manager(slug=slug, user=request.user)


def _limited(exc: measurement.MeasurementLimited) -> JsonResponse:
    response = JsonResponse({"error": exc.message}, status=429)
    response["Retry-After"] = str(exc.retry_after)
    return response


def _csv(content: str, filename: str) -> HttpResponse:
    response = HttpResponse(content, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


# --- Events (POST only: a page read never writes) ------------------------------------------------------


@login_required
@require_POST
def impression(request: HttpRequest, pk: int) -> HttpResponse:
    option = measurement.option_get_for_measurement(pk=pk, user=request.user)
    try:
        measurement.impression_record(option=option, user=request.user)
    except measurement.MeasurementLimited as exc:
        return _limited(exc)
    return HttpResponse(status=204)


@login_required
@require_POST
def disclosure_open(request: HttpRequest, pk: int) -> HttpResponse:
    option = measurement.option_get_for_measurement(pk=pk, user=request.user)
    try:
        measurement.disclosure_open_record(option=option, user=request.user)
    except measurement.MeasurementLimited as exc:
        return _limited(exc)
    return HttpResponse(status=204)


# --- Reports ----------------------------------------------------------------------------------------


@login_required
@require_GET
def reports(request: HttpRequest, slug: str) -> HttpResponse:
    brand = _brand_for_reports(request, slug)
    return render(
        request,
        "brands/report_index.html",
        {
            "brand": brand,
            "campaigns": measurement.campaign_list_for_brand(brand=brand),
            "stories": measurement.story_report(brand=brand),
        },
    )


@login_required
@require_GET
def campaign_report(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    brand = _brand_for_reports(request, slug)
    campaign = measurement.campaign_get_for_brand(brand=brand, pk=pk)
    return render(
        request,
        "brands/report_campaign.html",
        {"brand": brand, "report": measurement.campaign_report(campaign=campaign)},
    )


@login_required
@require_GET
def campaign_report_csv(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    brand = _brand_for_reports(request, slug)
    campaign = measurement.campaign_get_for_brand(brand=brand, pk=pk)
    content = measurement.campaign_report_csv(report=measurement.campaign_report(campaign=campaign))
    return _csv(content, f"{brand.slug}-campaign-{campaign.pk}.csv")


@login_required
@require_GET
def story_report_csv(request: HttpRequest, slug: str) -> HttpResponse:
    brand = _brand_for_reports(request, slug)
    content = measurement.story_report_csv(rows=measurement.story_report(brand=brand))
    return _csv(content, f"{brand.slug}-stories.csv")


# --- The public register ------------------------------------------------------------------------------


@require_GET
def register(request: HttpRequest) -> HttpResponse:
    page = measurement.placement_register_page(number=request.GET.get("page"), per_page=REGISTER_PER_PAGE)
    return render(request, "brands/register.html", {"page": page})
