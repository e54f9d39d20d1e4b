from __future__ import annotations

from django.contrib import admin

from writer.models import (
    BibleProposalRun,
    Chapter,
    GenerationOption,
    GenerationRequest,
    Story,
    StoryBibleEntry,
)


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


@admin.register(StoryBibleEntry)
class StoryBibleEntryAdmin(admin.ModelAdmin):
    list_display = ("name", "story", "kind", "status", "source", "from_chapter", "until_chapter", "updated_at")
    list_filter = ("kind", "status", "source")
    search_fields = ("name", "story__title", "story__slug")
    raw_id_fields = ("story",)


@admin.register(BibleProposalRun)
class BibleProposalRunAdmin(admin.ModelAdmin):
    list_display = ("id", "story", "status", "proposed", "duplicates", "skipped_lines", "not_in_chapters", "created_at")
    list_filter = ("status",)
    raw_id_fields = ("story", "requested_by")
    readonly_fields = ("answer", "error", "chapters")
