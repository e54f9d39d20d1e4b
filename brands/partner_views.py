"""Partner pages (issue 17): staff create partners and link them to brands; the managers of a partner's
brands (and staff) issue tokens, see each one once, list and revoke them, and read the partner's audit log.

Who sees what: anyone who is not a brand manager (or staff) gets 403; a manager of none of the partner's
brands 404 (nobody learns another brand's partners). Creating and editing a partner is staff's: a manager
who sees the partner gets 403 there.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from brands import partners
from brands.models import Partner
from brands.partner_forms import PartnerForm, TokenForm
from brands.selectors import user_can_manage_brands
from mesu_web import paging
from mesu_web.errors import ApplicationError

AUDIT_PER_PAGE = 50


def _require_brand_manager(request: HttpRequest) -> None:
    if not user_can_manage_brands(user=request.user):
        raise PermissionDenied("Only brand managers and staff can open the partner pages.")


def _get_partner_for_user(request: HttpRequest, pk: int) -> Partner:
    _require_brand_manager(request)
    return partners.partner_get_for_user(pk=pk, user=request.user)


def _require_staff(request: HttpRequest) -> None:
    if not request.user.is_staff:
        raise PermissionDenied("Only staff create and edit partners.")


@login_required
@require_GET
def partner_list(request: HttpRequest) -> HttpResponse:
    _require_brand_manager(request)
    return render(
        request, "brands/partner_list.html", {"partners": partners.partner_list_for_user(user=request.user)}
    )


@login_required
@require_http_methods(["GET", "POST"])
def partner_create(request: HttpRequest) -> HttpResponse:
    _require_brand_manager(request)
    _require_staff(request)
    form = PartnerForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            partner = partners.partner_create(**form.cleaned_data)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"{partner.name} created. Its brands' managers can now issue tokens.")
            return redirect("brands:partner_detail", pk=partner.pk)
    return render(request, "brands/partner_form.html", {"form": form, "creating": True})


@login_required
@require_http_methods(["GET", "POST"])
def partner_edit(request: HttpRequest, pk: int) -> HttpResponse:
    partner = _get_partner_for_user(request, pk)
    _require_staff(request)
    form = PartnerForm(request.POST or None, initial=PartnerForm.initial_for(partner))
    if request.method == "POST" and form.is_valid():
        try:
            partners.partner_update(partner=partner, **form.cleaned_data)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"{partner.name} saved.")
            return redirect("brands:partner_detail", pk=partner.pk)
    return render(request, "brands/partner_form.html", {"form": form, "partner": partner, "creating": False})


def _detail_page(
    request: HttpRequest,
    partner: Partner,
    form: TokenForm | None = None,
    new_key: str = "",
    status: int = 200,
) -> HttpResponse:
    return render(
        request,
        "brands/partner_detail.html",
        {
            "partner": partner,
            "brands": partner.brands.order_by("name"),
            "tokens": partners.token_list(partner=partner),
            "token_form": form or TokenForm(),
            "new_key": new_key,
            "audit": partners.audit_list(partner=partner)[:10],
        },
        status=status,
    )


@login_required
@require_GET
def partner_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _detail_page(request, _get_partner_for_user(request, pk))


@login_required
@require_POST
def token_create(request: HttpRequest, pk: int) -> HttpResponse:
    """The new token's key is in this answer only (never stored, never redirected to)."""
    partner = _get_partner_for_user(request, pk)
    form = TokenForm(request.POST)
    if form.is_valid():
        try:
            token, key = partners.token_create(partner=partner, **form.cleaned_data)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Token {token.prefix}… created: copy it now, it is shown only once.")
            response = _detail_page(request, partner, new_key=key)
            response["Cache-Control"] = "no-store"  # the key must not stay in any cache
            return response
    return _detail_page(request, partner, form=form, status=400)


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int, token_pk: int) -> HttpResponse:
    partner = _get_partner_for_user(request, pk)
    token = partners.token_get_for_partner(partner=partner, pk=token_pk)
    partners.token_revoke(token=token)
    messages.success(request, f"Token {token.prefix}… revoked: calls with it now get 401.")
    return redirect("brands:partner_detail", pk=partner.pk)


@login_required
@require_GET
def partner_audit(request: HttpRequest, pk: int) -> HttpResponse:
    partner = _get_partner_for_user(request, pk)
    page = paging.page_get(partners.audit_list(partner=partner), number=request.GET.get("page"), per_page=AUDIT_PER_PAGE)
    return render(request, "brands/partner_audit.html", {"partner": partner, "page": page})
