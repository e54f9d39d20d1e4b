from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.db.models import QuerySet
from django.http import Http404

from mesu_web.errors import ApplicationError, redact
from training.models import EvaluationRun, JudgeComparison, TrainingJob, WriterAdapter
from training.teacher import url_without_credentials
from writer.model_files import PACKAGED_MODELS


def training_job_list() -> QuerySet[TrainingJob]:
    return TrainingJob.objects.select_related("created_by", "previous_stage", "next_stage").order_by("-created_at")


def training_job_get(*, pk: int) -> TrainingJob:
    job = TrainingJob.objects.select_related("previous_stage", "next_stage").filter(pk=pk).first()
    if job is None:
        raise Http404("No such training job.")
    return job


def _next_stage(job: TrainingJob) -> TrainingJob | None:
    try:
        return job.next_stage
    except TrainingJob.DoesNotExist:
        return None


def training_job_stages(*, job: TrainingJob) -> list[dict]:
    """The stages of the "SFT then GRPO" run `job` belongs to, stage 1 first, each {"number", "job",
    "current"} (`job` itself: current); [] for a job that is no stage of a pipeline."""
    chain = [job]
    while chain[0].previous_stage_id is not None and len(chain) < 10:
        previous = chain[0].previous_stage
        if previous is None:
            break
        chain.insert(0, previous)
    while (nxt := _next_stage(chain[-1])) is not None and len(chain) < 10:
        chain.append(nxt)
    if len(chain) < 2:
        return []
    return [{"number": n, "job": j, "current": j.pk == job.pk} for n, j in enumerate(chain, start=1)]


def reward_chart(*, job: TrainingJob, width: int = 640, height: int = 220) -> dict:
    """SVG polylines of each reward over the steps (and the total), scaled into width x height pixels."""
    logs = [log for log in job.step_logs if log.get("step")]
    names = sorted({name for log in logs for name in (log.get("rewards") or {})})
    series = {name: [(log["step"], (log.get("rewards") or {}).get(name)) for log in logs] for name in names}
    series["total"] = [(log["step"], log.get("reward")) for log in logs]
    return _chart(series, max_steps=job.max_steps, width=width, height=height)


def loss_chart(*, job: TrainingJob, width: int = 640, height: int = 220) -> dict:
    """The SFT job's training loss over the steps, as `reward_chart` draws rewards."""
    logs = [log for log in job.step_logs if log.get("step")]
    return _chart({"loss": [(log["step"], log.get("loss")) for log in logs]}, max_steps=job.max_steps, width=width, height=height)


def training_job_chart(*, job: TrainingJob) -> dict:
    """The job page's live chart: the rewards of a GRPO job, the loss of an SFT job ("title" says which)."""
    if job.is_sft:
        return {**loss_chart(job=job), "title": "Loss over steps"}
    return {**reward_chart(job=job), "title": "Rewards over steps"}


def _chart(series: dict[str, list[tuple[int, object]]], *, max_steps: int, width: int, height: int) -> dict:
    values = [v for points in series.values() for _, v in points if isinstance(v, int | float)]
    if not values:
        return {"lines": [], "width": width, "height": height}
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    last_step = max(max_steps, max(step for points in series.values() for step, _ in points))
    pad = 24  # pixels around the plot for the axis labels
    lines = []
    for name, points in series.items():
        coords = [
            f"{pad + (step - 1) / max(1, last_step - 1) * (width - 2 * pad):.1f},"
            f"{height - pad - (value - low) / span * (height - 2 * pad):.1f}"
            for step, value in points
            if isinstance(value, int | float)
        ]
        if coords:
            lines.append({"name": name, "points": " ".join(coords), "last": points[-1][1]})
    return {
        "lines": lines,
        "width": width,
        "height": height,
        "low": low,
        "high": high,
        "last_step": last_step,
    }


# ---------------------------------------------------------------------------------------------
# Adapters and the leaderboard


def active_adapter_name() -> str:
    """The adapter new generation requests use: the registry's active one, else
    settings.WRITER_DEFAULT_ADAPTER ("" = the base model)."""
    name = WriterAdapter.objects.filter(is_active=True).values_list("name", flat=True).first()
    return name or settings.WRITER_DEFAULT_ADAPTER


def adapter_list() -> QuerySet[WriterAdapter]:
    return WriterAdapter.objects.select_related("job").order_by("-is_active", "-created_at")


def adapter_get(*, pk: int) -> WriterAdapter:
    adapter = WriterAdapter.objects.filter(pk=pk).first()
    if adapter is None:
        raise Http404("No such adapter.")
    return adapter


def adapter_by_name(*, name: str) -> WriterAdapter | None:
    return WriterAdapter.objects.filter(name=name).first()


def evaluation_run_get(*, pk: int) -> EvaluationRun:
    run = EvaluationRun.objects.select_related("adapter").filter(pk=pk).first()
    if run is None:
        raise Http404("No such evaluation.")
    return run


def evaluation_datasets() -> list[str]:
    """Datasets with at least one finished evaluation, newest first; then those with only judged
    comparisons (judge_pairs --record)."""
    rows = (
        EvaluationRun.objects.filter(status=EvaluationRun.Status.SUCCEEDED)
        .order_by("-finished_at")
        .values_list("dataset_dir", flat=True)
    )
    judged = JudgeComparison.objects.order_by("-created_at").values_list("dataset_dir", flat=True)
    return list(dict.fromkeys([*rows, *judged]))


# Scores beside the rewards (bench/writer_training.py, brought in by import_results): the perplexity of
# the real next chapter under the writer. The share of repeated 4-grams is the "repeated 4-grams"
# column (EvaluationRun.quality["repetition"], the same measure for every run), sorted as repeat_share.
IMPORTED_ENGINE = "vllm (GPU host)"  # the engine of an evaluation import_results brought in
EXTRA_METRICS: tuple[str, ...] = ("real_chapter_ppl",)
REPEAT_SHARE = "repeat_share"
# Where a lower mean is better; every reward in the registry is "higher is better".
LOWER_IS_BETTER: frozenset[str] = frozenset({"real_chapter_ppl", REPEAT_SHARE})


def _metric_value(run: EvaluationRun, metric: str) -> float | None:
    if metric == "format_ok":
        return run.format_ok
    if metric == REPEAT_SHARE:
        return (run.quality or {}).get("repetition")
    return run.metrics.get(metric)


def judge_comparisons(*, dataset_dir: str | None) -> list[JudgeComparison]:
    """The latest judged comparison of each (target, baseline, judge, mode) on a dataset, by target."""
    if dataset_dir is None:
        return []
    return list(
        JudgeComparison.objects.filter(dataset_dir=dataset_dir)
        .order_by("target", "baseline", "judge_model", "mode", "-created_at")
        .distinct("target", "baseline", "judge_model", "mode")
    )


def leaderboard(*, dataset_dir: str | None, metric: str) -> dict:
    """The latest finished run of each target on a dataset, sorted by `metric` (best first, lower first
    for LOWER_IS_BETTER; targets without that metric last). Also the metrics any row has, for the
    column headers and the sort menu, and the dataset's judged comparisons ("judged")."""
    from training.rewards import REWARDS

    sortable = ("format_ok", *REWARDS, *EXTRA_METRICS, REPEAT_SHARE)
    if metric not in sortable:
        raise ApplicationError(f"Unknown metric {metric!r}. Choose one of: {', '.join(sortable)}.")
    datasets = evaluation_datasets()
    dataset_dir = dataset_dir if dataset_dir in datasets else (datasets[0] if datasets else None)
    runs = list(
        EvaluationRun.objects.filter(status=EvaluationRun.Status.SUCCEEDED, dataset_dir=dataset_dir)
        .select_related("adapter")
        .order_by("target_name", "-finished_at")
        .distinct("target_name")
    )

    def value(run: EvaluationRun) -> float | None:
        return _metric_value(run, metric)

    sign = 1 if metric in LOWER_IS_BETTER else -1
    runs.sort(key=lambda r: (value(r) is None, sign * (value(r) or 0.0), r.target_name))
    names = [n for n in (*REWARDS, *EXTRA_METRICS) if any(n in r.metrics for r in runs)]
    rows = [
        {
            "run": r,
            "rank": i,
            "values": [r.metrics.get(n) for n in names],
            "note": _writer_note(r),
        }
        for i, r in enumerate(runs, start=1)
    ]
    return {
        "rows": rows,
        "metrics": names,
        "metric": metric,
        "lower_is_better": sorted(LOWER_IS_BETTER),
        "dataset_dir": dataset_dir,
        "datasets": datasets,
        "judged": judge_comparisons(dataset_dir=dataset_dir),
    }


def _writer_note(run: EvaluationRun) -> str:
    """"base" for the base model; "not registered here" for an imported adapter of no registered name."""
    if run.adapter_id is not None:
        return ""
    role = (run.quality or {}).get("role")
    if run.engine == IMPORTED_ENGINE and role and role != "base":
        return "not registered here"
    return "base"


# ---------------------------------------------------------------------------------------------
# The models in use


def packaged_model_key(name: str) -> str:
    """The PACKAGED_MODELS key that a served name or a model folder (its last part) is, else ""."""
    last = Path(name.strip().rstrip("/")).name.lower().removesuffix(".gguf") if name.strip() else ""
    return next((key for key in PACKAGED_MODELS if key.lower() == last), "")


def _role(role: str, *, engine: str, model: str, where: str, served: bool, note: str = "") -> dict:
    # A served model is known by its name at the server; an in-process one by its folder.
    return {
        "role": role,
        "engine": engine,
        "model": model,
        "where": where,
        "packaged": packaged_model_key(model if served else where),
        "note": note,
    }


def model_roles() -> list[dict]:
    """Which model plays each role, from the settings (and the adapter registry): the writer's base, the
    active adapter (when there is one), the distillation teacher and the pairwise judge. Each: role,
    engine, model (a served or reported name), where (a URL without credentials, or a folder),
    packaged (the PACKAGED_MODELS key it is, or "") and a note. Never an API key."""
    writer_local = settings.WRITER_ENGINE == "local"
    writer_where = str(settings.WRITER_MODEL_PATH) if writer_local else url_without_credentials(settings.WRITER_BASE_URL)
    roles = [
        _role(
            "Writer (base model)", engine=settings.WRITER_ENGINE, model=settings.WRITER_MODEL,
            where=writer_where, served=not writer_local,
        )
    ]
    adapter_name = active_adapter_name()
    if adapter_name:
        adapter = adapter_by_name(name=adapter_name)
        folder = adapter.path if adapter is not None else str(settings.WRITER_ADAPTER_DIR / adapter_name)
        base = packaged_model_key(adapter.base_model) if adapter is not None else ""
        roles.append(
            {
                **_role("Active adapter", engine=settings.WRITER_ENGINE, model=adapter_name, where=folder, served=True),
                "packaged": base,  # a LoRA is no packaged model; the base it was trained on may be one
                "note": "LoRA on the writer's base" + ("" if adapter is not None else " (WRITER_DEFAULT_ADAPTER)"),
            }
        )
    if settings.TEACHER_ENGINE == "local":  # training.teacher.LocalTeacher: the writer's in-process engine
        teacher = _role(
            "Distillation teacher", engine="local", model=settings.WRITER_MODEL,
            where=str(settings.WRITER_MODEL_PATH), served=False,
        )
    else:
        teacher = _role(
            "Distillation teacher", engine=settings.TEACHER_ENGINE, model=settings.TEACHER_MODEL,
            where=url_without_credentials(settings.TEACHER_BASE_URL), served=True,
        )
    roles.append(teacher)
    judge_local = settings.JUDGE_ENGINE == "local"  # as training.judge.judge_engine builds it
    roles.append(
        _role(
            "Pairwise judge", engine=settings.JUDGE_ENGINE, model=settings.JUDGE_MODEL,
            where=str(settings.JUDGE_MODEL_PATH) if judge_local else url_without_credentials(settings.JUDGE_BASE_URL),
            served=not judge_local,
        )
    )
    # Belt and braces: a key pasted into a name or a path must not reach the page either.
    keys = [settings.WRITER_API_KEY, settings.TEACHER_API_KEY, settings.JUDGE_API_KEY]
    for row in roles:
        for field in ("model", "where"):
            for key in keys:
                row[field] = redact(row[field], key)
    return roles


# ---------------------------------------------------------------------------------------------
# The book library and datasets


def library_books() -> list:
    from training.library import list_books

    folder = settings.TRAINING_BOOKS_DIR
    return list_books(folder) if folder.is_dir() else []


def _lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def datasets() -> list[dict]:
    """Each folder of settings.TRAINING_DATASETS_DIR holding a train.jsonl, newest first, with counts."""
    root = settings.TRAINING_DATASETS_DIR
    if not root.is_dir():
        return []
    out = []
    for folder in root.iterdir():
        train = folder / "train.jsonl"
        if not train.is_file():
            continue
        test = folder / "test.jsonl"
        split = {}
        try:
            split = json.loads((folder / "split.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
        out.append(
            {
                "name": folder.name,
                "path": str(folder.resolve()),
                "train": _lines(train),
                "test": _lines(test) if test.is_file() else 0,
                "train_books": len(split.get("train") or []),
                "test_books": len(split.get("test") or []),
                "distilled": (folder / "distilled" / "train.jsonl").is_file(),
                "modified": datetime.fromtimestamp(train.stat().st_mtime, tz=UTC),
            }
        )
    return sorted(out, key=lambda d: d["modified"], reverse=True)


# ---------------------------------------------------------------------------------------------
# Human preference: readers' ratings and people's choices (writer.preferences records them), per writer


def human_preference() -> dict:
    """Per writer (the adapter's name, else the base model's, as writer.preferences.writer_of records it),
    from the rows writer.preferences keeps:

    - `ratings`, `mean_stars`, `liked_rate`: readers' 1-5 star ratings of that writer's options; the
      human preference rate is `liked_rate`, the share of those ratings with 4 or 5 stars (None without
      a rating);
    - `wins`, `head_to_head`, `win_rate`: of the preference pairs comparing an option of this writer with
      one of another writer, how many chose this writer's (None without such a pair; the options of one
      request share a writer, so such pairs are rare);
    - `reader_pairs`, `author_pairs`: the choices recorded with this writer's option chosen.

    {"rows": [...] best liked_rate first, "ratings": total, "pairs": total}."""
    from django.db.models import Avg, Count, F, Q

    from writer.models import OptionPreference, OptionRating

    rows: dict[str, dict] = {}

    def row(writer: str) -> dict:
        return rows.setdefault(
            writer,
            {"writer": writer, "ratings": 0, "mean_stars": None, "liked_rate": None, "wins": 0, "head_to_head": 0,
             "win_rate": None, "reader_pairs": 0, "author_pairs": 0},
        )

    rated = OptionRating.objects.values("writer").annotate(
        n=Count("id"), mean=Avg("stars"), liked=Count("id", filter=Q(stars__gte=4))
    )
    for r in rated:
        row(r["writer"]).update(ratings=r["n"], mean_stars=r["mean"], liked_rate=r["liked"] / r["n"])
    chosen = OptionPreference.objects.values("chosen_writer").annotate(
        reader=Count("id", filter=Q(source="reader")),
        author=Count("id", filter=Q(source="author")),
        wins=Count("id", filter=~Q(rejected_writer=F("chosen_writer"))),
    )
    for r in chosen:
        row(r["chosen_writer"]).update(reader_pairs=r["reader"], author_pairs=r["author"], wins=r["wins"])
    losses = (
        OptionPreference.objects.exclude(rejected_writer=F("chosen_writer"))
        .values("rejected_writer")
        .annotate(n=Count("id"))
    )
    for r in losses:
        row(r["rejected_writer"])["head_to_head"] += r["n"]
    for r in rows.values():
        r["head_to_head"] += r["wins"]
        if r["head_to_head"]:
            r["win_rate"] = r["wins"] / r["head_to_head"]
    ordered = sorted(rows.values(), key=lambda r: (r["liked_rate"] is None, -(r["liked_rate"] or 0.0), r["writer"]))
    return {
        "rows": ordered,
        "ratings": sum(r["ratings"] for r in ordered),
        "pairs": sum(r["reader_pairs"] + r["author_pairs"] for r in ordered),
    }
