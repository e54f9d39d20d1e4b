"""Pages of the review workflow (issue 17): request changes, approve with an edit of the placed passage,
the author's revision, and a brand's auto-approve rules. Thin: a form in, one service call, an
ApplicationError out as a message. Managers' pages 403 anyone who is not a brand manager, then 404 an
option or brand they do not manage; the revision 404s anyone but the story's author."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from brands import review, selectors, services
from brands.models import AutoApproveRule, Brand
from brands.review_forms import AutoApproveRuleForm, ChangesForm, PassageForm
from brands.views import review_page
from mesu_web.errors import ApplicationError
from writer.models import GenerationOption


def _require_brand_manager(request: HttpRequest) -> None:
    if not selectors.user_can_manage_brands(user=request.user):
        raise PermissionDenied("Only brand managers can open the brand pages.")


def _get_option_for_manager(request: HttpRequest, pk: int) -> GenerationOption:
    _require_brand_manager(request)
    return selectors.option_get_for_manager(pk=pk, user=request.user)


def _get_brand_for_manager(request: HttpRequest, slug: str) -> Brand:
    _require_brand_manager(request)
    return selectors.brand_get_for_manager(slug=slug, user=request.user)


def _get_option_for_author(request: HttpRequest, pk: int) -> GenerationOption:
    """A branded option of a story the user wrote; 404 for anyone else (nobody learns it exists)."""
    option = (
        GenerationOption.objects.select_related("request", "request__story", "brand", "asset")
        .filter(pk=pk, brand__isnull=False, request__story__owner_id=request.user.pk)
        .first()
    )
    if option is None:
        raise Http404("No such placement.")
    return option


# --- A manager's decisions -------------------------------------------------------------------------


@login_required
@require_POST
def option_request_changes(request: HttpRequest, pk: int) -> HttpResponse:
    option = _get_option_for_manager(request, pk)
    form = ChangesForm(request.POST)
    if not form.is_valid():
        return review_page(request, option, changes_form=form, status=400)
    try:
        services.option_changes_request(
            option=option, reviewer=request.user, comment=form.cleaned_data["comment"]
        )
    except ApplicationError as exc:  # said once, above the page; the comment stays in its box
        messages.error(request, exc.message)
        return review_page(request, option, changes_form=form, status=400)
    messages.success(
        request,
        f"Changes asked for {option.label} of “{option.request.story.title}”: it comes back once revised.",
    )
    return redirect("brands:review_queue")


@login_required
@require_POST
def option_approve_edit(request: HttpRequest, pk: int) -> HttpResponse:
    option = _get_option_for_manager(request, pk)
    form = PassageForm(request.POST)
    if not form.is_valid():
        return review_page(request, option, edit_form=form, status=400)
    try:
        text = review.text_with_passage(option=option, passage=form.cleaned_data["passage"])
        services.option_approve_with_edit(option=option, reviewer=request.user, text=text)
    except ApplicationError as exc:  # said once, above the page; the edit stays in its box
        messages.error(request, exc.message)
        return review_page(request, option, edit_form=form, status=400)
    messages.success(
        request,
        f"{option.label} for “{option.request.story.title}” approved with your edit of the placed passage.",
    )
    return redirect("brands:review_queue")


# --- The author's revision -------------------------------------------------------------------------


def _revise_fragment(
    request: HttpRequest, option: GenerationOption, passage: str, error: str = ""
) -> HttpResponse:
    return render(
        request,
        "brands/_changes_requested.html",
        {"option": option, "revise_loaded": True, "revise_passage": passage, "revise_error": error},
    )


@login_required
@require_http_methods(["GET", "POST"])
def option_revise(request: HttpRequest, pk: int) -> HttpResponse:
    option = _get_option_for_author(request, pk)
    if request.method == "GET":  # the form, with the placed passage as it is now
        span = review.editable_span(option.text, option.placed_passage or [], option.mentions or [])
        return _revise_fragment(request, option, option.text[span[0] : span[1]] if span else "")
    form = PassageForm(request.POST)
    error = ""
    if form.is_valid():
        try:
            review.option_revise(option=option, user=request.user, passage=form.cleaned_data["passage"])
        except ApplicationError as exc:
            error = exc.message
    else:
        error = " ".join(e for errors in form.errors.values() for e in errors)
    if error:
        if request.htmx:  # the form again, with what was written and why it was refused
            return _revise_fragment(request, option, request.POST.get("passage", ""), error)
        messages.error(request, error)
        return redirect(option.request)
    messages.success(request, f"{option.label} revised: it waits for {option.brand.name}'s review again.")
    if request.htmx:
        response = HttpResponse(status=204)
        response["HX-Redirect"] = option.request.get_absolute_url()
        return response
    return redirect(option.request)


# --- Auto-approve rules ----------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def auto_approve_rules(request: HttpRequest, slug: str) -> HttpResponse:
    brand = _get_brand_for_manager(request, slug)
    form = AutoApproveRuleForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            review.auto_approve_rule_create(brand=brand, user=request.user, **form.cleaned_data)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Auto-approve rule added for {brand.name}.")
            return redirect("brands:auto_approve_rules", slug=brand.slug)
    rules = (
        AutoApproveRule.objects.filter(brand=brand)
        .select_related("created_by")
        .order_by("-is_active", "-created_at")
    )
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "brands/auto_approve_rules.html",
        {"brand": brand, "rules": rules, "form": form},
        status=status,
    )


@login_required
@require_POST
def auto_approve_switch(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    brand = _get_brand_for_manager(request, slug)
    rule = AutoApproveRule.objects.filter(pk=pk, brand=brand).first()
    if rule is None:
        raise Http404("No such rule.")
    active = request.POST.get("active") == "1"
    review.auto_approve_rule_switch(rule=rule, active=active)
    messages.success(request, f"Rule {'switched on' if active else 'switched off'}.")
    return redirect("brands:auto_approve_rules", slug=brand.slug)
