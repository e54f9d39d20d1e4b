"""Staff pages of the generation quotas (writer/quotas.py): who asked for the most chapters in the last day,
what they use and may use, and a form that gives a user their own limits. The Django admin has the same rows
(GenerationQuota) with the same usage."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from mesu_web.errors import ApplicationError
from writer import quotas

LIMIT_FIELD = {"required": False, "min_value": 0, "help_text": "Empty: the role's default."}


class QuotaForm(forms.Form):
    """One user's own limits; every field empty (and no note) gives them their role's defaults again."""

    username = forms.CharField(max_length=150)
    concurrent = forms.IntegerField(max_value=1000, label="At once", **LIMIT_FIELD)
    per_hour = forms.IntegerField(max_value=100_000, label="Per hour", **LIMIT_FIELD)
    per_day = forms.IntegerField(max_value=100_000, label="Per day", **LIMIT_FIELD)
    note = forms.CharField(max_length=200, required=False, help_text="Why this user has their own limits.")

    def clean_username(self) -> object:
        name = self.cleaned_data["username"].strip()
        user = get_user_model().objects.filter(username=name).first()
        if user is None:
            raise forms.ValidationError(f"No user named {name!r}.")
        return user


def _page(request: HttpRequest, form: QuotaForm, status: int = 200) -> HttpResponse:
    lines = quotas.heaviest_users()
    context = {
        "form": form,
        "addresses": quotas.heaviest_addresses(),
        "defaults": {tier: quotas.default_limits(tier) for tier in (*quotas.TIERS, "address")},
        # Each row with its own form, filled with the user's row (blank fields: the defaults).
        "rows": [
            (
                line,
                QuotaForm(
                    initial={
                        "username": line.username,
                        **({f: getattr(line.quota, f) for f in (*quotas.FIELDS, "note")} if line.quota else {}),
                    },
                    auto_id=f"id_quota_{line.user_id}_%s",
                ),
            )
            for line in lines
        ],
    }
    return render(request, "writer/quota_list.html", context, status=status)


@staff_member_required
@require_GET
def quota_list(request: HttpRequest) -> HttpResponse:
    return _page(request, QuotaForm())


@staff_member_required
@require_POST
def quota_set(request: HttpRequest) -> HttpResponse:
    form = QuotaForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        user = data["username"]
        try:
            quota = quotas.quota_set(
                user=user, staff_user=request.user, concurrent=data["concurrent"], per_hour=data["per_hour"],
                per_day=data["per_day"], note=data["note"],
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            if quota is None:
                messages.success(request, f"{user.username} has the role's default limits again.")
            else:
                messages.success(request, f"{user.username}'s own limits are saved.")
            return redirect("writer:quota_list")
    return _page(request, form, status=400)
