"""Staff's page of brands waiting for approval (issue 18), and its Approve / Reject posts.

Staff only, as the training pages are (`staff_member_required`: anyone else is sent to the admin's login).
Thin views: a form in, one call into `brands.approval`, an ApplicationError out as a message."""

from __future__ import annotations

from collections.abc import Callable

from django import forms
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
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


@staff_member_required
@require_GET
def brand_approvals(request: HttpRequest) -> HttpResponse:
    page = approval.pending_brands_page(number=request.GET.get("page"), per_page=PAGE_SIZE)
    return render(
        request,
        "brands/approval_list.html",
        {"page": page, "approve_form": ApproveForm(), "reject_form": RejectForm()},
    )


def _decide(
    request: HttpRequest, pk: int, form: forms.Form, field: str, decide: Callable[..., object], done: str
) -> HttpResponse:
    """One staff decision: the form's `field` as the note, `decide(brand=, staff_user=, note=)`, and the
    outcome as a message on the approvals page."""
    brand = get_object_or_404(Brand, pk=pk)
    if not form.is_valid():
        messages.error(request, f"{brand.name}: {' '.join(form.errors.get(field, []))}")
        return redirect("brands:brand_approvals")
    try:
        decide(brand=brand, staff_user=request.user, note=form.cleaned_data[field])
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{brand.name} {done}")
    return redirect("brands:brand_approvals")


@staff_member_required
@require_POST
def brand_approve(request: HttpRequest, pk: int) -> HttpResponse:
    return _decide(
        request, pk, ApproveForm(request.POST), "note", approval.brand_approve,
        "approved: its managers were told, and chapters can carry it now.",
    )


@staff_member_required
@require_POST
def brand_reject(request: HttpRequest, pk: int) -> HttpResponse:
    return _decide(
        request, pk, RejectForm(request.POST), "reason", approval.brand_reject,
        "rejected: its managers read your reason.",
    )
