from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from brands import approval
from brands.models import Brand, BrandAsset, ReaderSponsorshipPreference, StoryBrandSettings
from mesu_web.errors import ApplicationError

# Vectors are shown as a model name and a hash, never as 384 numbers; admins edit texts, the
# embedding task follows (admin saves bypass the services: run `match_brands` or re-save to embed).
EMBEDDING_READONLY = ("embedding_model", "embedded_text_hash", "embedding_error")


class BrandAssetInline(admin.StackedInline):
    model = BrandAsset
    fields = ("kind", "name", "description", "terms", *EMBEDDING_READONLY)
    readonly_fields = EMBEDDING_READONLY
    extra = 0
    show_change_link = True


def _decide_each(modeladmin: admin.ModelAdmin, request: HttpRequest, brands: QuerySet[Brand], decide) -> None:  # noqa: ANN001
    done, refused = [], []
    for brand in brands:
        try:
            decide(brand)
        except (ApplicationError, PermissionDenied) as exc:
            refused.append(f"{brand.name}: {getattr(exc, 'message', exc)}")
        else:
            done.append(brand.name)
    if done:
        modeladmin.message_user(request, f"Done: {', '.join(done)}.", messages.SUCCESS)
    if refused:
        modeladmin.message_user(request, " ".join(refused), messages.WARNING)


@admin.register(Brand)
class BrandAdmin(admin.ModelAdmin):
    list_display = (
        "name", "approval", "is_active", "max_placements_per_chapter", "embedding_model", "created_at", "updated_at"
    )
    list_filter = ("approval", "is_active")
    search_fields = ("name", "slug", "description")
    prepopulated_fields = {"slug": ("name",)}
    filter_horizontal = ("managers",)
    exclude = ("embedding",)
    # Decisions go through brands.approval (the actions below, or the staff page): they notify the managers.
    readonly_fields = (*EMBEDDING_READONLY, "approval", "approval_note", "approval_decided_by", "approval_decided_at")
    inlines = [BrandAssetInline]
    actions = ["approve_brands", "reject_brands"]

    @admin.action(description="Approve the selected brands (their managers are notified)")
    def approve_brands(self, request: HttpRequest, queryset: QuerySet[Brand]) -> None:
        _decide_each(
            self, request, queryset, lambda brand: approval.brand_approve(brand=brand, staff_user=request.user)
        )

    @admin.action(description="Reject the selected brands, with a reason (their managers are notified)")
    def reject_brands(self, request: HttpRequest, queryset: QuerySet[Brand]) -> HttpResponse | None:
        """A page that asks for the reason first (Django's intermediate-page pattern), then the rejections."""
        reason = str(request.POST.get("reason") or "").strip()
        if "apply" in request.POST and reason:
            _decide_each(
                self,
                request,
                queryset,
                lambda brand: approval.brand_reject(brand=brand, staff_user=request.user, note=reason),
            )
            return None
        return render(
            request,
            "brands/approval_admin_reject.html",
            {
                **self.admin_site.each_context(request),
                "title": "Reject brands",
                "brands": queryset,
                "opts": self.model._meta,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "missing_reason": "apply" in request.POST,
            },
        )


@admin.register(BrandAsset)
class BrandAssetAdmin(admin.ModelAdmin):
    list_display = ("name", "brand", "kind", "embedding_model")
    list_filter = ("kind", "brand")
    search_fields = ("name", "brand__name")
    exclude = ("embedding",)
    readonly_fields = EMBEDDING_READONLY


@admin.register(StoryBrandSettings)
class StoryBrandSettingsAdmin(admin.ModelAdmin):
    list_display = ("story", "opt_in", "updated_at")
    list_filter = ("opt_in",)
    filter_horizontal = ("excluded_brands",)


@admin.register(ReaderSponsorshipPreference)
class ReaderSponsorshipPreferenceAdmin(admin.ModelAdmin):
    list_display = ("user", "sponsored_chapters_enabled", "updated_at")
