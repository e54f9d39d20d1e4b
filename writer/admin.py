from __future__ import annotations

from django.contrib import admin

from writer.models import Chapter, GenerationOption, GenerationRequest, Story


class ChapterInline(admin.TabularInline):
    model = Chapter
    fields = ("number", "title", "source")
    readonly_fields = ("source",)
    extra = 0
    show_change_link = True


@admin.register(Story)
class StoryAdmin(admin.ModelAdmin):
    list_display = ("title", "owner", "genre", "is_published", "updated_at")
    list_filter = ("is_published", "genre")
    search_fields = ("title", "slug", "author_name")
    inlines = [ChapterInline]


@admin.register(GenerationRequest)
class GenerationRequestAdmin(admin.ModelAdmin):
    list_display = ("id", "story", "kind", "status", "n", "engine", "adapter", "created_at")
    list_filter = ("status", "kind", "engine")
    readonly_fields = ("prompt_report", "error")


@admin.register(GenerationOption)
class GenerationOptionAdmin(admin.ModelAdmin):
    list_display = ("id", "request", "index", "format_ok", "tokens")
    list_filter = ("format_ok",)
