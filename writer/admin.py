from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, FilteredRelation, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from writer import quotas
from writer.models import (
    BibleProposalRun,
    Chapter,
    GenerationOption,
    GenerationQuota,
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


@admin.register(GenerationQuota)
class GenerationQuotaAdmin(admin.ModelAdmin):
    """A user's own generation limits (writer/quotas.py), with what they use now. The staff page
    /staff/quotas/ lists the heaviest users of the last day and sets these too."""

    list_display = ("user", "concurrent", "per_hour", "per_day", "usage", "note", "updated_by", "updated_at")
    search_fields = ("user__username", "note")
    raw_id_fields = ("user",)
    fields = ("user", "concurrent", "per_hour", "per_day", "note", "current_usage", "updated_by", "updated_at")
    readonly_fields = ("current_usage", "updated_by", "updated_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet[GenerationQuota]:
        # The list's usage column in the list's own query: the users' recent or unfinished requests only.
        now = timezone.now()
        return (
            super()
            .get_queryset(request)
            .select_related("user", "updated_by")
            .annotate(
                recent=FilteredRelation(
                    "user__generation_requests",
                    condition=Q(user__generation_requests__status__in=quotas.ACTIVE)
                    | Q(user__generation_requests__created_at__gte=now - quotas.DAY),
                ),
                used_concurrent=Count("recent", filter=Q(recent__status__in=quotas.ACTIVE)),
                used_hour=Count("recent", filter=Q(recent__created_at__gte=now - quotas.HOUR)),
                used_day=Count("recent", filter=Q(recent__created_at__gte=now - quotas.DAY)),
            )
        )

    @admin.display(description="now / last hour / last day")
    def usage(self, quota: GenerationQuota) -> str:
        return f"{quota.used_concurrent} / {quota.used_hour} / {quota.used_day}"

    @admin.display(description="Current usage")
    def current_usage(self, quota: GenerationQuota) -> str:
        if quota.pk is None:
            return "—"
        used = quotas.user_usage(user_id=quota.user_id)
        lines = []
        for label, own_story in (("others' stories", False), ("own stories", True)):
            limits = quotas.user_limits(user=quota.user, own_story=own_story)
            lines.append(
                f"{label}: {used.concurrent} of {limits.concurrent} at once, {used.last_hour} of "
                f"{limits.per_hour} in the last hour, {used.last_day} of {limits.per_day} in the last day"
            )
        return "; ".join(lines)

    def save_model(self, request: HttpRequest, obj: GenerationQuota, form: object, change: bool) -> None:
        obj.updated_by = request.user
        super().save_model(request, obj, form, change)
