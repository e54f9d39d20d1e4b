"""A brand's campaigns, for its managers and staff: the list (spend against budget, pacing), create, edit
and status changes. Thin views: the brand checks of brands/views.py (403 for a non-manager, 404 for a
brand the manager does not manage), a form in, one call into `brands.campaigns`, its ApplicationError out
as a form error or a message."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from brands import campaigns, selectors
from brands.campaign_forms import CampaignForm, CampaignStatusForm
from brands.models import Brand, Campaign
from mesu_web.errors import ApplicationError


def _brand(request: HttpRequest, slug: str) -> Brand:
    """403 for anyone who is not a brand manager (or staff), then 404 for a brand they do not manage."""
    if not selectors.user_can_manage_brands(user=request.user):
        raise PermissionDenied("Only brand managers can open the brand pages.")
    return selectors.brand_get_for_manager(slug=slug, user=request.user)


def _campaign(request: HttpRequest, slug: str, pk: int) -> tuple[Brand, Campaign]:
    brand = _brand(request, slug)
    return brand, campaigns.campaign_get(brand=brand, pk=pk)


def _fields(form: CampaignForm) -> dict[str, object]:
    data = dict(form.cleaned_data)
    data.pop("assets", None)
    return data


@login_required
@require_GET
def campaign_list(request: HttpRequest, slug: str) -> HttpResponse:
    brand = _brand(request, slug)
    return render(
        request,
        "brands/campaign_list.html",
        {"brand": brand, "rows": campaigns.campaign_rows(brand=brand)},
    )


@login_required
@require_http_methods(["GET", "POST"])
def campaign_create(request: HttpRequest, slug: str) -> HttpResponse:
    brand = _brand(request, slug)
    form = CampaignForm(request.POST or None, brand=brand)
    if request.method == "POST" and form.is_valid():
        try:
            campaign = campaigns.campaign_create(
                brand=brand, user=request.user, assets=form.cleaned_data["assets"], **_fields(form)
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Campaign {campaign.name!r} created as a draft: activate it to run it.")
            return redirect("brands:campaign_list", slug=brand.slug)
    return render(request, "brands/campaign_form.html", {"brand": brand, "form": form, "creating": True})


@login_required
@require_http_methods(["GET", "POST"])
def campaign_edit(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    brand, campaign = _campaign(request, slug, pk)
    form = CampaignForm(request.POST or None, brand=brand, initial=CampaignForm.initial_for(campaign))
    if request.method == "POST" and form.is_valid():
        try:
            campaigns.campaign_update(campaign=campaign, assets=form.cleaned_data["assets"], **_fields(form))
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Campaign {campaign.name!r} saved.")
            return redirect("brands:campaign_list", slug=brand.slug)
    return render(
        request, "brands/campaign_form.html", {"brand": brand, "form": form, "campaign": campaign, "creating": False}
    )


@login_required
@require_POST
def campaign_status(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    brand, campaign = _campaign(request, slug, pk)
    form = CampaignStatusForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a status: draft, active, paused or ended.")
        return redirect("brands:campaign_list", slug=brand.slug)
    try:
        campaign = campaigns.campaign_set_status(campaign=campaign, status=form.cleaned_data["status"])
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Campaign {campaign.name!r} is now {campaign.get_status_display().lower()}.")
    return redirect("brands:campaign_list", slug=brand.slug)
