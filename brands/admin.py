from __future__ import annotations

from django.contrib import admin

from brands.models import Brand, BrandAsset, ReaderSponsorshipPreference, StoryBrandSettings

# Vectors are shown as a model name and a hash, never as 384 numbers; admins edit texts, the
# embedding task follows (admin saves bypass the services: run `match_brands` or re-save to embed).
EMBEDDING_READONLY = ("embedding_model", "embedded_text_hash", "embedding_error")


class BrandAssetInline(admin.StackedInline):
    model = BrandAsset
    fields = ("kind", "name", "description", "terms", *EMBEDDING_READONLY)
    readonly_fields = EMBEDDING_READONLY
    extra = 0
    show_change_link = True


@admin.register(Brand)
class BrandAdmin(admin.ModelAdmin):
    list_display = ("name", "is_active", "max_placements_per_chapter", "embedding_model", "updated_at")
    list_filter = ("is_active",)
    search_fields = ("name", "slug", "description")
    prepopulated_fields = {"slug": ("name",)}
    filter_horizontal = ("managers",)
    exclude = ("embedding",)
    readonly_fields = EMBEDDING_READONLY
    inlines = [BrandAssetInline]


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
