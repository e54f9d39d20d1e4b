"""Brand managers' pages, the review queue, an author's story settings and a reader's switch.

Thin views: parse the request, call a selector or service, render. Errors become messages or form
errors. Every manager page first refuses anyone who is not a brand manager (403), then 404s on a
brand the manager does not manage, so nobody learns another manager's brands.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from brands import selectors, services
from brands.forms import AssetForm, BrandForm, RejectForm, SponsorshipForm, StoryBrandSettingsForm
from brands.models import Brand, BrandAsset
from brands.placements import highlight
from mesu_web.errors import ApplicationError
from mesu_web.fragments import Fragment, cached_fragments, numbered_url, this_minute
from writer import selectors as writer_selectors
from writer.models import GenerationOption, ReviewStatus


def _require_brand_manager(request: HttpRequest) -> None:
    if not selectors.user_can_manage_brands(user=request.user):
        raise PermissionDenied("Only brand managers can open the brand pages.")


def _get_brand_for_user(request: HttpRequest, slug: str) -> Brand:
    _require_brand_manager(request)
    return selectors.brand_get_for_manager(slug=slug, user=request.user)


def _get_asset_for_user(request: HttpRequest, slug: str, pk: int) -> BrandAsset:
    _require_brand_manager(request)
    asset = selectors.asset_get_for_manager(pk=pk, user=request.user)
    if asset.brand.slug != slug:
        raise Http404("No such brand asset.")
    return asset


def _get_option_for_user(request: HttpRequest, pk: int) -> GenerationOption:
    _require_brand_manager(request)
    return selectors.option_get_for_manager(pk=pk, user=request.user)


# --- Brands ----------------------------------------------------------------------------------------


@login_required
@require_GET
def brand_list(request: HttpRequest) -> HttpResponse:
    _require_brand_manager(request)
    return render(
        request, "brands/brand_list.html", {"brands": selectors.brand_list_for_manager(user=request.user)}
    )


@login_required
@require_http_methods(["GET", "POST"])
def brand_create(request: HttpRequest) -> HttpResponse:
    _require_brand_manager(request)
    form = BrandForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            brand = services.brand_create(managers=[request.user], **form.cleaned_data)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(
                request,
                f"{brand.name} created. Add its assets: the products, mascots and slogans. Staff approve "
                "every new brand before a chapter carries it.",
            )
            return redirect("brands:brand_detail", slug=brand.slug)
    return render(request, "brands/brand_form.html", {"form": form, "creating": True})


def _brand_page(request: HttpRequest, brand: Brand, asset_form: AssetForm | None = None) -> HttpResponse:
    return render(
        request,
        "brands/brand_detail.html",
        {
            "brand": brand,
            "assets": selectors.asset_list(brand=brand),
            "asset_form": asset_form or AssetForm(),
        },
    )


@login_required
@require_GET
def brand_detail(request: HttpRequest, slug: str) -> HttpResponse:
    return _brand_page(request, _get_brand_for_user(request, slug))


@login_required
@require_http_methods(["GET", "POST"])
def brand_edit(request: HttpRequest, slug: str) -> HttpResponse:
    brand = _get_brand_for_user(request, slug)
    form = BrandForm(request.POST or None, initial=BrandForm.initial_for(brand))
    if request.method == "POST" and form.is_valid():
        was_rejected = brand.approval == Brand.Approval.REJECTED
        try:
            services.brand_update(brand=brand, **form.cleaned_data)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            resent = " and sent back to staff for approval" if was_rejected else ""
            messages.success(request, f"{brand.name} saved{resent}.")
            return redirect("brands:brand_detail", slug=brand.slug)
    return render(request, "brands/brand_form.html", {"form": form, "brand": brand, "creating": False})


# --- Assets ----------------------------------------------------------------------------------------


def _assets_fragment(request: HttpRequest, brand: Brand, form: AssetForm, notice: str = "") -> HttpResponse:
    """The assets card alone, for htmx: the list, then the add form (fresh, or with its errors)."""
    return render(
        request,
        "brands/_assets.html",
        {"brand": brand, "assets": selectors.asset_list(brand=brand), "asset_form": form, "notice": notice},
    )


@login_required
@require_POST
def asset_create(request: HttpRequest, slug: str) -> HttpResponse:
    brand = _get_brand_for_user(request, slug)
    form = AssetForm(request.POST)
    if form.is_valid():
        try:
            asset = services.asset_create(brand=brand, **form.cleaned_data)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            notice = f"{asset.name} added."
            if request.htmx:
                return _assets_fragment(request, brand, AssetForm(), notice)
            messages.success(request, notice)
            return redirect("brands:brand_detail", slug=brand.slug)
    if request.htmx:
        return _assets_fragment(request, brand, form)
    return _brand_page(request, brand, asset_form=form)


@login_required
@require_http_methods(["GET", "POST"])
def asset_edit(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    asset = _get_asset_for_user(request, slug, pk)
    form = AssetForm(request.POST or None, initial=AssetForm.initial_for(asset))
    if request.method == "POST" and form.is_valid():
        try:
            services.asset_update(asset=asset, **form.cleaned_data)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"{asset.name} saved.")
            return redirect("brands:brand_detail", slug=asset.brand.slug)
    return render(request, "brands/asset_form.html", {"form": form, "asset": asset, "brand": asset.brand})


@login_required
@require_POST
def asset_delete(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    asset = _get_asset_for_user(request, slug, pk)
    brand, name = asset.brand, asset.name
    services.asset_delete(asset=asset)
    notice = f"{name} deleted."
    if request.htmx:
        return _assets_fragment(request, brand, AssetForm(), notice)
    messages.success(request, notice)
    return redirect("brands:brand_detail", slug=brand.slug)


# --- Dashboard -------------------------------------------------------------------------------------

CHART_BAR = 14  # px, one bar
CHART_STEP = 40  # px per week: two bars and a gap
CHART_PLOT = 100  # px, the height of the tallest bar
CHART_LEFT = 28  # px for the axis labels


@dataclass(frozen=True)
class _ChartWeek:
    label: str
    x: int
    approved: int
    rejected: int
    approved_height: int
    rejected_height: int

    @property
    def approved_y(self) -> int:
        return CHART_PLOT + 10 - self.approved_height

    @property
    def rejected_y(self) -> int:
        return CHART_PLOT + 10 - self.rejected_height

    @property
    def rejected_x(self) -> int:
        return self.x + CHART_BAR + 2


def _chart(rows: list) -> dict[str, object]:
    """Bar geometry for the inline SVG of approved vs rejected placements per week (no JS)."""
    peak = max([max(r.approved, r.rejected) for r in rows] + [1])
    weeks = [
        _ChartWeek(
            label=r.week_start.strftime("%d %b"),
            x=CHART_LEFT + i * CHART_STEP,
            approved=r.approved,
            rejected=r.rejected,
            approved_height=round(CHART_PLOT * r.approved / peak),
            rejected_height=round(CHART_PLOT * r.rejected / peak),
        )
        for i, r in enumerate(rows)
    ]
    return {
        "weeks": weeks,
        "peak": peak,
        "width": CHART_LEFT + CHART_STEP * max(len(rows), 1),
        "height": CHART_PLOT + 32,
        "baseline": CHART_PLOT + 10,
        "label_y": CHART_PLOT + 24,
    }


@login_required
@require_GET
def brand_dashboard(request: HttpRequest, slug: str) -> HttpResponse:
    brand = _get_brand_for_user(request, slug)
    dashboard = selectors.brand_dashboard(brand=brand)
    rate = dashboard.approval_rate
    return render(
        request,
        "brands/brand_dashboard.html",
        {
            "brand": brand,
            "dashboard": dashboard,
            "approval_percent": None if rate is None else round(100 * rate),
            "chart": _chart(list(reversed(dashboard.rows))),  # oldest week on the left
            "decisions": selectors.decision_list_for_brand(brand=brand),
        },
    )


# --- The review queue ------------------------------------------------------------------------------


def _group_by_request(rows: list[selectors.QueueRow]) -> list[tuple[selectors.QueueRow, list[selectors.QueueRow]]]:
    """Rows grouped by their request (the group's first row names it), the groups in the order of each
    one's oldest row."""
    groups: dict[int, tuple[selectors.QueueRow, list[selectors.QueueRow]]] = {}
    for row in rows:
        groups.setdefault(row.request_id, (row, []))[1].append(row)
    return list(groups.values())


def _with_review_urls(groups: list) -> list[tuple[selectors.QueueRow, list[tuple[selectors.QueueRow, str]]]]:
    review = numbered_url("brands:review_detail")
    return [(head, [(row, review(row.pk)) for row in rows]) for head, rows in groups]


# Placements per page of the review queue, oldest first: a manager works from the top. A row cost
# ~0.18 ms to render (its age, its date, its link) when the list was rendered for every view; it comes from
# the fragment cache now, keyed on the rows and the minute (mesu_web.fragments).
QUEUE_PAGE_SIZE = 25


@login_required
@require_GET
def review_queue(request: HttpRequest) -> HttpResponse:
    _require_brand_manager(request)
    page = selectors.review_queue_page(user=request.user, number=request.GET.get("page"), per_page=QUEUE_PAGE_SIZE)
    groups = _group_by_request(list(page))
    fragments = cached_fragments(
        Fragment(
            "review_queue", "brands/_review_queue_groups.html", (page.number, this_minute(), *page),
            lambda: {"linked_groups": _with_review_urls(groups)},
        )
    )
    return render(
        request,
        "brands/review_queue.html",
        {
            "groups": groups,
            "fragments": fragments,
            "page_obj": page,
            "pending_count": page.paginator.count,
            "overdue_count": selectors.review_queue_overdue_count(user=request.user),
            # The header's badge counts the same queue: reuse the count instead of a second query.
            "review_pending_count": page.paginator.count,
        },
    )


def _managed_brand_ids(request: HttpRequest) -> set[int]:
    return set(selectors.brand_list_for_manager(user=request.user).values_list("pk", flat=True))


def _highlighted(option: GenerationOption, *, field: str = "text") -> tuple[str, bool]:
    """The option's text (or reasoning) as HTML with its mentions marked; (html, whether the marks fit).

    Safe only because `highlight` escapes every segment of the text itself."""
    text = getattr(option, field)
    spans = (option.mentions if field == "text" else option.reasoning_mentions) or []
    try:
        return mark_safe(highlight(text, spans)), True
    except ValueError:
        # Offsets from another text: show the text plain rather than mark the wrong words.
        return mark_safe(highlight(text, [])), False


@dataclass(frozen=True)
class _Sibling:
    """Another option of the same request, as far as this manager may see it."""

    option: GenerationOption
    mine: bool  # a placement of a brand this manager manages: its text and review page are shown
    html: str = ""


def _siblings(option: GenerationOption, managed: set[int]) -> list[_Sibling]:
    others = (
        GenerationOption.objects.filter(request_id=option.request_id)
        .exclude(pk=option.pk)
        .select_related("brand", "asset")
        .order_by("index")
    )
    return [
        _Sibling(o, True, _highlighted(o)[0]) if o.brand_id in managed else _Sibling(o, False) for o in others
    ]


def _review_page(
    request: HttpRequest,
    option: GenerationOption,
    reject_form: RejectForm | None = None,
    *,
    changes_form: object = None,
    edit_form: object = None,
    status: int = 200,
) -> HttpResponse:
    from brands import review
    from brands.review_forms import ChangesForm, PassageForm

    span = review.editable_span(option.text, option.placed_passage or [], option.mentions or [])
    siblings = _siblings(option, _managed_brand_ids(request))
    text_html, marks_fit = _highlighted(option)
    approved_other = next(
        (s.option for s in siblings if s.option.review_status == ReviewStatus.APPROVED), None
    )
    return render(
        request,
        "brands/review_detail.html",
        {
            "option": option,
            "gen": option.request,
            "story": option.request.story,
            "text_html": text_html,
            "reasoning_html": _highlighted(option, field="reasoning")[0],
            "marks_fit": marks_fit,
            "mention_count": len(option.mentions or []) + len(option.reasoning_mentions or []),
            "siblings": siblings,
            "approved_other": approved_other,
            "is_pending": option.review_status == ReviewStatus.PENDING,
            "reject_form": reject_form or RejectForm(),
            # Issue 17's review workflow (brands.review): findings, request changes, approve with an edit.
            "findings": review.findings_labelled(option.policy_findings),
            "changes_form": changes_form or ChangesForm(),
            "edit_form": edit_form
            or (PassageForm(initial={"passage": option.text[span[0] : span[1]]}) if span else None),
            "can_edit_passage": span is not None,
        },
        status=status,
    )


def review_page(request: HttpRequest, option: GenerationOption, **forms: object) -> HttpResponse:
    """The review page with the workflow's forms as posted (brands.review_views)."""
    return _review_page(request, option, **forms)  # type: ignore[arg-type]


@login_required
@require_GET
def review_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _review_page(request, _get_option_for_user(request, pk))


@login_required
@require_POST
def option_approve(request: HttpRequest, pk: int) -> HttpResponse:
    option = _get_option_for_user(request, pk)
    try:
        services.option_approve(option=option, reviewer=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("brands:review_detail", pk=option.pk)
    messages.success(
        request,
        f"{option.label} for “{option.request.story.title}” approved: it is shown with the disclosure label.",
    )
    return redirect("brands:review_queue")


@login_required
@require_POST
def option_reject(request: HttpRequest, pk: int) -> HttpResponse:
    option = _get_option_for_user(request, pk)
    form = RejectForm(request.POST)
    if not form.is_valid():
        return _review_page(request, option, reject_form=form)
    try:
        services.option_reject(option=option, reviewer=request.user, reason=form.cleaned_data["reason"])
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("brands:review_detail", pk=option.pk)
    messages.success(
        request, f"{option.label} for “{option.request.story.title}” rejected; the author sees why."
    )
    return redirect("brands:review_queue")


# --- Authors and readers ---------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def story_settings(request: HttpRequest, slug: str) -> HttpResponse:
    story = writer_selectors.story_get_for_owner(slug=slug, user=request.user)
    current = selectors.story_brand_settings_get(story=story)
    excluded = selectors.story_excluded_brand_ids(story=story)
    # Active brands, and any excluded one that went inactive since: saving must not drop it.
    brands = selectors.brand_list_active() | Brand.objects.filter(pk__in=excluded)
    form = StoryBrandSettingsForm(
        request.POST if request.method == "POST" else None,  # all unticked posts nothing, and is valid
        brands=brands,
        initial={"opt_in": current.opt_in, "excluded_brands": list(excluded)},
    )
    if request.method == "POST" and form.is_valid():
        try:
            services.story_brand_settings_update(
                story=story,
                opt_in=form.cleaned_data["opt_in"],
                excluded_brand_ids=[b.pk for b in form.cleaned_data["excluded_brands"]],
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            state = "on" if form.cleaned_data["opt_in"] else "off"
            messages.success(request, f"Brand placements are {state} for “{story.title}”.")
            return redirect(story)
    return render(request, "brands/story_settings.html", {"story": story, "form": form})


@login_required
@require_http_methods(["GET", "POST"])
def sponsorship(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = SponsorshipForm(request.POST)
        if form.is_valid():
            services.reader_sponsorship_set(user=request.user, enabled=form.cleaned_data["enabled"])
            if not request.htmx:
                state = "on" if form.cleaned_data["enabled"] else "off"
                messages.success(request, f"Sponsored chapters are {state}.")
        elif not request.htmx:
            messages.error(request, "Choose on or off.")
        if not request.htmx:
            return redirect("brands:sponsorship")
    from brands.suitability import reader_age_bracket  # issue 17: a reader who has not said it says it here

    enabled = selectors.reader_sponsored_chapters_enabled(user=request.user)
    template = "brands/_sponsorship.html" if request.htmx else "brands/sponsorship.html"
    return render(request, template, {"enabled": enabled, "age_bracket": reader_age_bracket(user=request.user)})
