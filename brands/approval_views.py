"""Staff's page of brands waiting for approval (issue 18), and its Approve / Reject posts.

Staff only, as the training pages are (`staff_member_required`: anyone else is sent to the admin's login).
Thin views: a form in, one call into `brands.approval`, an ApplicationError out as a message."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from brands import approval
from brands.models import Brand
from mesu_web.errors import ApplicationError

PAGE_SIZE = 20  # brands a page: each shows its profile, assets and managers


class ApproveForm(forms.Form):
    note = forms.CharField(
        required=False,
        max_length=approval.NOTE_CHARS,
        widget=forms.Textarea(attrs={"rows": 2}),
        label="Note to the managers (optional)",
    )


class RejectForm(forms.Form):
    reason = forms.CharField(
        max_length=approval.NOTE_CHARS,
        widget=forms.Textarea(attrs={"rows": 2}),
        label="Why (the managers read it)",
        error_messages={"required": "Say why the brand is rejected: its managers read the reason."},
    )


def _get_brand_for_staff(pk: int) -> Brand:
    brand = Brand.objects.filter(pk=pk).first()
    if brand is None:
        raise Http404("No such brand.")
    return brand


@staff_member_required
@require_GET
def brand_approvals(request: HttpRequest) -> HttpResponse:
    page = approval.pending_brands_page(number=request.GET.get("page"), per_page=PAGE_SIZE)
    return render(
        request,
        "brands/approval_list.html",
        {"page": page, "approve_form": ApproveForm(), "reject_form": RejectForm()},
    )


@staff_member_required
@require_POST
def brand_approve(request: HttpRequest, pk: int) -> HttpResponse:
    brand = _get_brand_for_staff(pk)
    form = ApproveForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"{brand.name}: {' '.join(form.errors.get('note', []))}")
        return redirect("brands:brand_approvals")
    try:
        approval.brand_approve(brand=brand, staff_user=request.user, note=form.cleaned_data["note"])
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{brand.name} approved: its managers were told, and chapters can carry it now.")
    return redirect("brands:brand_approvals")


@staff_member_required
@require_POST
def brand_reject(request: HttpRequest, pk: int) -> HttpResponse:
    brand = _get_brand_for_staff(pk)
    form = RejectForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"{brand.name}: {' '.join(form.errors.get('reason', []))}")
        return redirect("brands:brand_approvals")
    try:
        approval.brand_reject(brand=brand, staff_user=request.user, note=form.cleaned_data["reason"])
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{brand.name} rejected: its managers read your reason.")
    return redirect("brands:brand_approvals")
