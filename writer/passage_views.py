"""The passage tools' pages (writer.passages does the work). Only the story's author.

- Ask (`options/<pk>/passage/`, `s/<slug>/chapters/<n>/passage/`): GET shows the text with the tools (the
  page for a browser without JavaScript, and where a refused ask comes back); POST asks the writer and
  goes to the edit's page. A refused ask shows the same page again with the message and everything the
  author typed (400; 429 with Retry-After for a flood).
- The edit (`passages/<pk>/`): the original, the writer's progress (htmx polls `passages/<pk>/status/`,
  286 once it has finished), the change as a word-level diff, and Accept / Discard (POST).

Who: an option's page follows the request's rules (404 to who may not see the request, 403 to who may
but is not the story's author, as `option_accept`); a chapter's and an edit's follow the story's (404
to who may not see the story, 403 to who may: `selectors.story_get_for_owner`)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from mesu_web.errors import ApplicationError
from writer import passages, selectors
from writer.models import Chapter, GenerationOption, PassageEdit

Tool = PassageEdit.Tool


class PassageForm(forms.Form):
    """What the tools' form posts. The service checks the passage and the instruction (clear messages);
    the form only bounds what a post may carry."""

    tool = forms.ChoiceField(choices=Tool.choices, initial=Tool.REWRITE, widget=forms.RadioSelect)
    passage = forms.CharField(required=False, strip=False, max_length=50_000, widget=forms.Textarea)
    instruction = forms.CharField(required=False, max_length=2_000)
    start = forms.IntegerField(required=False, min_value=0)
    end = forms.IntegerField(required=False, min_value=0)
    occurrence = forms.IntegerField(required=False, min_value=1)  # which match of the passage (the script's)


def _option(pk: int, user) -> GenerationOption:  # noqa: ANN001
    option = selectors.option_get_for_author(pk=pk, user=user)  # 404 / 403
    return GenerationOption.objects.select_related("request__story", "accepted_chapter").get(pk=option.pk)


def _edit(pk: int, user) -> PassageEdit:  # noqa: ANN001
    edit = PassageEdit.objects.select_related("story", "option__request", "chapter").filter(pk=pk).first()
    if edit is None or not selectors.story_can_view(story=edit.story, user=user):
        raise Http404("No such passage change.")
    if edit.story.owner_id != user.pk:
        raise PermissionDenied("Only the story's author can change its passages.")
    return edit


def _ask_page(
    request: HttpRequest,
    *,
    form: PassageForm,
    option: GenerationOption | None = None,
    chapter: Chapter | None = None,
    refusal: str = "",
    status: int = 200,
) -> HttpResponse:
    if option is not None:
        story, text = option.request.story, option.text
        label, back = passages.option_label(option), f"{option.request.get_absolute_url()}#option-{option.index}"
    else:
        story, text = chapter.story, chapter.text
        label, back = passages.chapter_label(chapter), reverse("writer:chapter_detail", args=[story.slug, chapter.number])
    context = {
        "story": story, "option": option, "chapter": chapter, "text": text, "label": label, "back": back,
        "passage_form": form, "refusal": refusal, "open": True,
    }
    return render(request, "writer/passage_form.html", context, status=status)


def _ask(request: HttpRequest, *, option: GenerationOption | None, chapter: Chapter | None) -> HttpResponse:
    form = PassageForm(request.POST or None)
    if request.method != "POST":
        refusal = passages.option_tools_refusal(option, request.user) if option is not None else ""
        return _ask_page(request, form=form, option=option, chapter=chapter, refusal=refusal)
    if not form.is_valid():
        return _ask_page(request, form=form, option=option, chapter=chapter, status=400)
    data = form.cleaned_data
    try:
        edit = passages.passage_edit_request(
            user=request.user, option=option, chapter=chapter, tool=data["tool"], passage=data["passage"],
            start=data["start"], end=data["end"], occurrence=data["occurrence"], instruction=data["instruction"],
        )
    except passages.PassageLimited as exc:
        form.add_error(None, exc.message)
        response = _ask_page(request, form=form, option=option, chapter=chapter, status=429)
        response["Retry-After"] = str(exc.retry_after)
        return response
    except ApplicationError as exc:
        field = exc.extra.get("field")
        form.add_error(field if field in form.fields else None, exc.message)
        return _ask_page(request, form=form, option=option, chapter=chapter, status=400)
    return redirect("writer:passage_detail", pk=edit.pk)


@login_required
@require_http_methods(["GET", "POST"])
def passage_option(request: HttpRequest, pk: int) -> HttpResponse:
    option = _option(pk, request.user)
    if option.accepted_chapter_id and request.method != "POST":  # the tools act on its chapter now
        chapter = option.accepted_chapter
        return redirect("writer:passage_chapter", slug=option.request.story.slug, number=chapter.number)
    return _ask(request, option=option, chapter=None)


@login_required
@require_http_methods(["GET", "POST"])
def passage_chapter(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    story = selectors.story_get_for_owner(slug=slug, user=request.user)
    chapter = selectors.chapter_get(story=story, number=number)
    chapter.story = story
    return _ask(request, option=None, chapter=chapter)


def _edit_context(edit: PassageEdit) -> dict:
    return {
        "edit": edit,
        "story": edit.story,
        "label": passages.target_label(edit),
        "back": passages.target_url(edit),
        "diff": passages.passage_diff(edit.original, edit.result) if edit.result else [],
        "original_words": len(edit.original.split()),
        "result_words": len(edit.result.split()),
        "ask_url": (
            reverse("writer:passage_option", args=[edit.option_id])
            if edit.option_id
            else reverse("writer:passage_chapter", args=[edit.story.slug, edit.chapter.number])
        ),
    }


@login_required
@require_GET
def passage_detail(request: HttpRequest, pk: int) -> HttpResponse:
    edit = passages.passage_edit_refresh(edit=_edit(pk, request.user))
    return render(request, "writer/passage_edit.html", _edit_context(edit))


@login_required
@require_GET
def passage_status(request: HttpRequest, pk: int) -> HttpResponse:
    """The htmx-polled fragment of the edit; 286 (stop polling) once it has finished."""
    edit = passages.passage_edit_refresh(edit=_edit(pk, request.user))
    response = render(request, "writer/_passage_body.html", _edit_context(edit))
    if edit.is_finished:
        return HttpResponseStopPolling(response.content)
    return response


@login_required
@require_POST
def passage_accept(request: HttpRequest, pk: int) -> HttpResponse:
    edit = _edit(pk, request.user)
    try:
        accepted = passages.passage_edit_accept(edit=edit, user=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("writer:passage_detail", pk=edit.pk)
    if accepted.option is not None:
        what, url = accepted.option.label, passages.target_url(edit)
    else:
        chapter = accepted.chapter
        what, url = f"Chapter {chapter.number}", reverse("writer:chapter_detail", args=[edit.story.slug, chapter.number])
    messages.success(
        request,
        f"{what} now reads with the new passage (version {accepted.version}); the earlier versions are kept.",
    )
    return redirect(url)


@login_required
@require_POST
def passage_discard(request: HttpRequest, pk: int) -> HttpResponse:
    edit = _edit(pk, request.user)
    try:
        passages.passage_edit_discard(edit=edit, user=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("writer:passage_detail", pk=edit.pk)
    messages.success(request, f"Discarded: {passages.target_label(edit)} keeps its passage as it was.")
    return redirect(passages.target_url(edit))
