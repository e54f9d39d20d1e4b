"""Admin pages for training jobs: start one (GRPO, SFT, or SFT then GRPO), watch it live (htmx polling,
the reward or loss chart, the stages), cancel it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from mesu_web.errors import ApplicationError
from training import selectors, services
from training.config import GRPOJobConfig, SFTJobConfig
from training.forms import (
    AdapterRegisterForm,
    BookUploadForm,
    DatasetForm,
    EvaluationForm,
    ExportForm,
    TrainingJobForm,
)
from training.models import TrainingJob


@staff_member_required
@require_http_methods(["GET", "POST"])
def job_list(request: HttpRequest) -> HttpResponse:
    dataset = request.GET.get("dataset", "")
    initial = {"dataset_dir": dataset}
    if dataset:
        initial["out_dir"] = str(settings.TRAINING_RUNS_DIR / f"{Path(dataset).name}-{timezone.now():%Y%m%d-%H%M%S}")
    form = TrainingJobForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        job = _queue_from_form(request, form)
        if job is not None:
            return redirect("training:job_detail", pk=job.pk)
    context = {"jobs": selectors.training_job_list()[:50], "form": form, "model_roles": selectors.model_roles()}
    return render(request, "training/job_list.html", context)


def _queue_from_form(request: HttpRequest, form: TrainingJobForm) -> TrainingJob | None:
    """Validate the chosen kind's configs and queue the job (or both stages); the job to show, or None
    with the reasons on the form. Each config is built before anything is recorded, so that one
    refused value queues nothing."""
    data = form.cleaned_data
    base_model = str(settings.WRITER_MODEL_PATH)
    sft_config = grpo_config = None
    if form.wants_sft:
        try:
            sft_config = SFTJobConfig.from_form(data, base_model=base_model)
        except ApplicationError as exc:
            form.add_application_error(exc, sft=True)
    if form.wants_grpo:
        try:
            grpo_config = GRPOJobConfig.from_form(data, base_model=base_model)
            if data.get("lora_alpha") is not None:
                grpo_config = dataclasses.replace(grpo_config, lora_alpha=data["lora_alpha"])
        except ApplicationError as exc:
            form.add_application_error(exc)
    if form.errors:
        return None
    where = {"dataset_dir": Path(data["dataset_dir"]), "out_dir": Path(data["out_dir"]), "name": data["name"]}
    try:
        if sft_config is not None and grpo_config is not None:
            sft, grpo = services.training_pipeline_create(
                user=request.user, sft_config=sft_config, grpo_config=grpo_config, **where
            )
            messages.success(
                request,
                f"“{sft.name}” is queued on the gpu workers; “{grpo.name}” waits for it and starts from its adapter.",
            )
            return sft
        job = services.training_job_create(user=request.user, config=sft_config or grpo_config, **where)
    except ApplicationError as exc:
        form.add_application_error(exc, sft=sft_config is not None)
        return None
    messages.success(request, f"Training job “{job.name}” is queued on the gpu workers.")
    return job


def _context(job: TrainingJob) -> dict:
    last = job.step_logs[-1] if job.step_logs else {}
    stages = selectors.training_job_stages(job=job)
    return {
        "job": job,
        "last": last,
        "chart": selectors.training_job_chart(job=job),
        "stages": stages,
        # The page polls while this job or another stage of its run has not ended.
        "polling": not all(row.is_finished for row in [job, *(stage["job"] for stage in stages)]),
    }


@staff_member_required
@require_GET
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = selectors.training_job_get(pk=pk)
    return render(request, "training/job_detail.html", _context(job))


@staff_member_required
@require_GET
def job_progress(request: HttpRequest, pk: int) -> HttpResponse:
    """The htmx-polled fragment; 286 (stop polling) once the job (and every stage of its run) has ended."""
    job = selectors.training_job_get(pk=pk)
    context = _context(job)
    response = render(request, "training/_job_body.html", context)
    return response if context["polling"] else HttpResponseStopPolling(response.content)


@staff_member_required
@require_POST
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = selectors.training_job_get(pk=pk)
    try:
        services.training_job_cancel(job=job)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Cancelling: the job stops after its current step and keeps a checkpoint.")
    return redirect("training:job_detail", pk=pk)


# ---------------------------------------------------------------------------------------------
# Adapters


@staff_member_required
@require_http_methods(["GET", "POST"])
def adapter_list(request: HttpRequest) -> HttpResponse:
    form = AdapterRegisterForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            adapter = services.adapter_register(
                name=form.cleaned_data["name"], source_dir=Path(form.cleaned_data["path"]), user=request.user
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            if adapter.load_error:
                messages.warning(request, f"Registered {adapter.name}, not loaded yet: {adapter.load_error}")
            else:
                messages.success(request, f"Registered {adapter.name} and loaded it into the writer.")
            return redirect("training:adapter_list")
    context = {
        "adapters": selectors.adapter_list().prefetch_related("exports"),
        "active_name": selectors.active_adapter_name(),
        "form": form,
        "export_form": ExportForm(),
        "model_roles": selectors.model_roles(),
    }
    return render(request, "training/adapter_list.html", context)


@staff_member_required
@require_POST
def adapter_activate(request: HttpRequest, pk: int) -> HttpResponse:
    adapter = selectors.adapter_get(pk=pk)
    try:
        services.adapter_activate(adapter=adapter)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{adapter.name} now writes every new chapter.")
    return redirect("training:adapter_list")


@staff_member_required
@require_POST
def adapter_load(request: HttpRequest, pk: int) -> HttpResponse:
    adapter = selectors.adapter_get(pk=pk)
    if services.adapter_load(adapter=adapter):
        messages.success(request, f"{adapter.name} is loaded into the writer.")
    else:
        messages.error(request, f"{adapter.name} could not be loaded: {adapter.load_error}")
    return redirect("training:adapter_list")


@staff_member_required
@require_POST
def adapter_deactivate(request: HttpRequest) -> HttpResponse:
    services.adapter_deactivate()
    messages.success(request, "New chapters use the base model again.")
    return redirect("training:adapter_list")


# ---------------------------------------------------------------------------------------------
# Evaluation and the leaderboard


def _targets() -> list[tuple[str, str]]:
    base = [("base", f"Base model ({settings.WRITER_MODEL})")]
    return base + [(str(a.pk), a.name) for a in selectors.adapter_list()]


@staff_member_required
@require_http_methods(["GET", "POST"])
def leaderboard(request: HttpRequest) -> HttpResponse:
    form = EvaluationForm(request.POST or None, targets=_targets(), initial={"dataset_dir": request.GET.get("evaluate", "")})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        adapter = None if data["target"] == "base" else selectors.adapter_get(pk=int(data["target"]))
        try:
            run = services.evaluation_run_create(
                user=request.user,
                adapter=adapter,
                dataset_dir=Path(data["dataset_dir"]),
                rewards=data["rewards"],
                limit=data["limit"],
                max_new_tokens=data["max_new_tokens"],
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Evaluating {run.target_name} on {run.total} held-out pair(s).")
            return redirect("training:evaluation_detail", pk=run.pk)
    try:
        board = selectors.leaderboard(
            dataset_dir=request.GET.get("dataset"), metric=request.GET.get("metric") or "format_ok"
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
        board = selectors.leaderboard(dataset_dir=request.GET.get("dataset"), metric="format_ok")
    if not form.is_bound and not form.initial.get("dataset_dir"):
        form.initial["dataset_dir"] = board["dataset_dir"] or ""  # the dataset on show, for the next writer
    context = {
        "board": board, "form": form, "model_roles": selectors.model_roles(), "human": selectors.human_preference(),
    }
    return render(request, "training/leaderboard.html", context)


@staff_member_required
@require_GET
def evaluation_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = selectors.evaluation_run_get(pk=pk)
    return render(request, "training/evaluation_detail.html", {"run": run})


@staff_member_required
@require_GET
def evaluation_progress(request: HttpRequest, pk: int) -> HttpResponse:
    run = selectors.evaluation_run_get(pk=pk)
    response = render(request, "training/_evaluation_body.html", {"run": run})
    return HttpResponseStopPolling(response.content) if run.is_finished else response


# ---------------------------------------------------------------------------------------------
# Books and datasets


def _library_context(upload_form: BookUploadForm, dataset_form: DatasetForm) -> dict:
    return {
        "books": selectors.library_books(),
        "datasets": selectors.datasets(),
        "upload_form": upload_form,
        "dataset_form": dataset_form,
        "library_dir": settings.TRAINING_BOOKS_DIR,
    }


@staff_member_required
@require_http_methods(["GET", "POST"])
def book_list(request: HttpRequest) -> HttpResponse:
    form = BookUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            if upload.size > settings.TRAINING_BOOK_MAX_BYTES:  # before reading it into memory
                raise ApplicationError(
                    f"{upload.name} is {upload.size / 2**20:.1f} MiB; the largest book is "
                    f"{settings.TRAINING_BOOK_MAX_BYTES / 2**20:.0f} MiB."
                )
            book = services.book_import(
                data=upload.read(),
                filename=upload.name,
                author=form.cleaned_data["author"],
                version=form.cleaned_data["version"],
                overwrite=form.cleaned_data["overwrite"],
            )
        except ApplicationError as exc:
            form.add_error("file", exc.message)
        else:
            notes = f" ({'; '.join(book.notes)})" if book.notes else ""
            messages.success(
                request, f"Imported “{book.metadata.title}”: {len(book.chapters)} chapters, {book.pairs} pairs{notes}."
            )
            return redirect("training:book_list")
    return render(request, "training/books.html", _library_context(form, DatasetForm()))


@staff_member_required
@require_POST
def book_delete(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        services.book_delete(slug=slug)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "The book is out of the library (datasets built from it keep their pairs).")
    return redirect("training:book_list")


@staff_member_required
@require_POST
def dataset_build(request: HttpRequest) -> HttpResponse:
    form = DatasetForm(request.POST)
    if form.is_valid():
        try:
            result = services.dataset_build(**form.cleaned_data)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(
                request,
                f"Dataset {form.cleaned_data['name']}: {result['train']} training and {result['test']} held-out pairs "
                f"({result['skipped']} skipped, {result['trimmed']} trimmed to the prompt budget).",
            )
            return redirect("training:book_list")
    return render(request, "training/books.html", _library_context(BookUploadForm(), form), status=400)


@staff_member_required
@require_POST
def adapter_export(request: HttpRequest, pk: int) -> HttpResponse:
    adapter = selectors.adapter_get(pk=pk)
    form = ExportForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose at least one export format.")
        return redirect("training:adapter_list")
    try:
        export = services.adapter_export_create(
            adapter=adapter, formats=form.cleaned_data["formats"], gguf_types=form.cleaned_data["gguf_types"], user=request.user
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Exporting {adapter.name} ({', '.join(export.formats)}) to {export.out_dir}.")
    return redirect("training:adapter_list")
