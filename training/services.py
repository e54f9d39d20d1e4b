"""Training jobs (GRPO and SFT, alone or as the stages of "SFT then GRPO"; create, run, cancel, fail:
the `gpu` task and `train_grpo` call the same functions), the adapter registry (register, hot-load, make active) and evaluation runs on the held-out split."""

from __future__ import annotations

import dataclasses
import filecmp
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from mesu_web.errors import ApplicationError
from mesu_web.slugs import slug_of, unique_slug
from training.config import CONFIG_FILENAME, GRPOJobConfig, SFTJobConfig
from training.dataset import build_dataset, read_jsonl
from training.evaluation import evaluate_pairs, reward_names
from training.library import ImportedBook, delete_book, import_book_file
from training.models import AdapterExport, EvaluationRun, JudgeComparison, TrainingJob, WriterAdapter
from training.selectors import IMPORTED_ENGINE
from training.sft import SFTResult, run_sft
from training.trainer import GRPOResult, check_adapter_nonzero, read_pairs, run_grpo
from writer.engines.base import Sampling

TEST_FILE = "test.jsonl"


# ---------------------------------------------------------------------------------------------
# Training jobs: GRPO, SFT, and "SFT then GRPO" (two jobs, the second waiting for the first)
#
# Life cycle of a row: queued -> running -> succeeded | cancelled | failed (the failure hook of the
# `gpu` task, `training_job_fail`). A stage 2 (a GRPO job with a `previous_stage`) starts `waiting`
# instead of queued: `_stage_finished` runs at every end of its stage 1 and queues it (stage 1
# succeeded: `init_adapter` = stage 1's adapter) or fails it with the reason (failed, cancelled).

# The row's step columns are PostgreSQL integers.
_INT4_MAX = 2**31 - 1


def _with_reasoning(rows: Sequence[dict]) -> int:
    from training.sft import plain_reasoning

    return sum(1 for row in rows if plain_reasoning(str(row.get("reasoning") or "")))


def sft_dataset_dir(dataset_dir: Path, *, without_reasoning: str = "skip") -> tuple[Path, list[dict]]:
    """The folder an SFT job trains on, and its rows: `dataset_dir` when its train.jsonl has distilled
    rows (a reasoning to learn), else its `distilled/` folder (where `distill` writes them) when that
    has some. The dataset pages link the dataset itself, so an admin starts "SFT then GRPO" on it: the
    SFT stage takes the distilled rows, the GRPO stage every row. ApplicationError (extra "field":
    "dataset_dir") when neither has a row with reasoning while such rows are skipped (run_sft's default):
    the job would train on nothing, so it is refused before anything is queued."""
    dataset_dir = Path(dataset_dir)
    rows = read_pairs(dataset_dir)
    if _with_reasoning(rows) or without_reasoning != "skip":
        return dataset_dir, rows
    distilled = dataset_dir / "distilled"
    if (distilled / "train.jsonl").is_file():
        distilled_rows = read_pairs(distilled)
        if _with_reasoning(distilled_rows):
            return distilled, distilled_rows
    raise ApplicationError(
        f"None of the {len(rows)} training row(s) of {dataset_dir} has a distilled reasoning, and SFT skips "
        "rows without one: it would train on nothing. Distil the dataset first (manage.py distill writes "
        f"{distilled}), then start the job on the dataset or on its distilled folder.",
        {"field": "dataset_dir", "rows": len(rows)},
    )


def planned_sft_steps(config: SFTJobConfig, rows: int) -> int:
    """The optimizer steps an SFT job will take on `rows` trainable rows (transformers' own count:
    ceil(epochs x ceil(ceil(rows / batch) / accumulation))); max_steps when set. Rows too long for
    max_length are only known on the worker: the row's max_steps is set to the real count at the end."""
    if config.max_steps is not None:
        return config.max_steps
    batches = math.ceil(rows / config.per_device_train_batch_size)
    per_epoch = max(1, math.ceil(batches / config.gradient_accumulation_steps))
    return min(_INT4_MAX, max(1, math.ceil(config.num_train_epochs * per_epoch)))


def training_job_create(
    *,
    user: AbstractBaseUser | None,
    config: GRPOJobConfig | SFTJobConfig,
    dataset_dir: Path,
    out_dir: Path,
    name: str = "",
    enqueue: bool = True,
    previous_stage: TrainingJob | None = None,
) -> TrainingJob:
    """Record a job whose config already passed validation (its kind follows the config's class), and
    queue it on `gpu` after the commit. An SFT job trains on `sft_dataset_dir(dataset_dir)`. With
    `previous_stage` (a GRPO job after an SFT job: `training_pipeline_create`) the job waits instead."""
    if isinstance(config, SFTJobConfig):
        kind = TrainingJob.Kind.SFT
        dataset_dir, rows = sft_dataset_dir(Path(dataset_dir), without_reasoning=config.without_reasoning)
        trainable = len(rows) if config.without_reasoning != "skip" else _with_reasoning(rows)
        max_steps = planned_sft_steps(config, trainable)
    else:
        kind = TrainingJob.Kind.GRPO
        read_pairs(Path(dataset_dir))  # a missing or malformed dataset fails now, not on the GPU worker
        max_steps = config.max_steps
    if previous_stage is not None and (kind != TrainingJob.Kind.GRPO or not previous_stage.is_sft):
        raise ApplicationError("Only a GRPO job can follow a stage, and only an SFT job.")
    job = TrainingJob.objects.create(
        name=name.strip()[:120] or Path(out_dir).name,
        kind=kind,
        previous_stage=previous_stage,
        status=TrainingJob.WAITING if previous_stage is not None else TrainingJob.Status.QUEUED,
        created_by=user,
        dataset_dir=str(Path(dataset_dir).resolve()),
        out_dir=str(Path(out_dir).resolve()),
        config=config.to_dict(),
        max_steps=max_steps,
    )
    if enqueue and previous_stage is None:
        _enqueue(job.pk)
    return job


def _enqueue(job_id: int) -> None:
    from training.tasks import training_job_run_task

    transaction.on_commit(lambda: training_job_run_task.delay(job_id), robust=True)


def training_pipeline_create(
    *,
    user: AbstractBaseUser | None,
    sft_config: SFTJobConfig,
    grpo_config: GRPOJobConfig,
    dataset_dir: Path,
    out_dir: Path,
    name: str = "",
    enqueue: bool = True,
) -> tuple[TrainingJob, TrainingJob]:
    """"SFT then GRPO": an SFT job (queued now, on `sft_dataset_dir(dataset_dir)`, into <out_dir>/sft)
    and a GRPO job on `dataset_dir` (into <out_dir>/grpo) that waits for it and then starts from its
    adapter. The GRPO job takes the SFT job's LoRA shape (rank, alpha, target modules): a LoRA of
    another shape could not be continued. Both rows or neither. `enqueue`: queue the SFT job on `gpu`
    after the commit (False: the caller runs it, as tests do)."""
    out_dir = Path(out_dir)
    name = name.strip()[:100] or out_dir.name
    grpo_config = dataclasses.replace(
        grpo_config,
        lora_rank=sft_config.lora_rank,
        lora_alpha=sft_config.effective_lora_alpha,
        target_modules=list(sft_config.target_modules),
        init_adapter="",  # set to the SFT adapter when stage 1 succeeds
    )
    with transaction.atomic():
        sft = training_job_create(
            user=user, config=sft_config, dataset_dir=dataset_dir, out_dir=out_dir / "sft",
            name=f"{name} SFT", enqueue=enqueue,
        )  # fmt: skip
        grpo = training_job_create(
            user=user, config=grpo_config, dataset_dir=dataset_dir, out_dir=out_dir / "grpo",
            name=f"{name} GRPO", previous_stage=sft,
        )  # fmt: skip
    return sft, grpo


def _start(job_id: int) -> TrainingJob | None:
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job_id)
        if job.is_finished or job.is_waiting:
            return None  # a redelivered task for a finished job (or a stray one for a waiting stage) does nothing
        job.status = TrainingJob.Status.RUNNING
        job.attempts += 1
        job.started_at = job.started_at or timezone.now()
        job.error = ""
        job.save(update_fields=["status", "attempts", "started_at", "error"])
    return job


def training_job_run(
    *,
    job_id: int,
    should_stop: Callable[[], bool] | None = None,
    on_step: Callable[[dict], None] | None = None,
) -> GRPOResult | SFTResult | None:
    """Train (GRPO or SFT, by the row's kind); every step lands on the row at once. Resumes from the
    last checkpoint of a job that crashed or was cancelled. Returns None when the job had already
    finished (or is a stage still waiting for its stage 1)."""
    job = _start(job_id)
    if job is None:
        return None

    def record_step(entry: dict) -> None:
        with transaction.atomic():
            row = TrainingJob.objects.select_for_update().get(pk=job_id)
            logs = [log for log in row.step_logs if log.get("step") != entry.get("step")] + [entry]
            row.step_logs = sorted(logs, key=lambda log: log.get("step") or 0)
            row.step = max(row.step, int(entry.get("step") or 0))
            row.max_steps = max(row.max_steps, row.step)  # an SFT job's planned count was an estimate
            row.save(update_fields=["step_logs", "step", "max_steps"])
        if on_step is not None:
            on_step(entry)

    def stop() -> bool:
        cancelled = TrainingJob.objects.filter(pk=job_id, cancel_requested=True).exists()
        return cancelled or (should_stop is not None and should_stop())

    result: GRPOResult | SFTResult
    if job.is_sft:
        result = run_sft(
            config=SFTJobConfig.from_dict(job.config),
            dataset_dir=Path(job.dataset_dir),
            out_dir=Path(job.out_dir),
            on_step=record_step,
            should_stop=stop,
        )
        backend = "trl"
        summary = {
            key: getattr(result, key)
            for key in ("device", "seconds", "final_loss", "rows_used", "rows_without_reasoning", "rows_trimmed",
                        "rows_too_long", "without_reasoning")
        }  # fmt: skip
        summary["rows_skipped"] = result.rows_skipped
    else:
        result = run_grpo(
            config=GRPOJobConfig.from_dict(job.config),
            dataset_dir=Path(job.dataset_dir),
            out_dir=Path(job.out_dir),
            on_step=record_step,
            should_stop=stop,
        )
        backend = result.backend
        summary = {key: getattr(result, key) for key in ("device", "seconds", "prompts_used", "prompts_skipped")}
    # The results first, the status last: a page (or a test) that sees "succeeded" also sees the
    # registered adapter.
    done = {"max_steps": result.steps} if job.is_sft and not result.cancelled else {}
    TrainingJob.objects.filter(pk=job_id).update(
        step=result.steps,
        adapter_path=str(result.adapter_path or ""),
        backend=backend,
        lora_nonzero=None if result.cancelled else result.lora_nonzero,
        base_unchanged=result.base_unchanged,
        resumed_from=result.resumed_from or "",
        summary=summary,
        **done,
    )
    if not result.cancelled and result.adapter_path is not None:
        try:
            _register_job_adapter(job_id)
        except ApplicationError as exc:  # trained and saved: say why it is not in the registry
            TrainingJob.objects.filter(pk=job_id).update(error=f"Trained, but not registered: {exc.message}")
    TrainingJob.objects.filter(pk=job_id).update(
        status=TrainingJob.Status.CANCELLED if result.cancelled else TrainingJob.Status.SUCCEEDED,
        finished_at=timezone.now(),
    )
    _stage_finished(job_id)
    return result


def training_job_cancel(*, job: TrainingJob) -> TrainingJob:
    """Ask a running job to stop after its current step (it keeps a checkpoint); a queued or waiting one
    stops at once. A stage 2 waiting for this job fails (`_stage_finished`)."""
    if job.is_finished:
        raise ApplicationError(f"This job is already {job.status_label.lower()}.")
    TrainingJob.objects.filter(pk=job.pk).update(cancel_requested=True)
    TrainingJob.objects.filter(pk=job.pk, status__in=[TrainingJob.Status.QUEUED, TrainingJob.WAITING]).update(
        status=TrainingJob.Status.CANCELLED, finished_at=timezone.now()
    )
    _stage_finished(job.pk)
    job.refresh_from_db()
    return job


def training_job_fail(*, job_id: int, error: str) -> None:
    TrainingJob.objects.filter(pk=job_id).exclude(status=TrainingJob.Status.SUCCEEDED).update(
        status=TrainingJob.Status.FAILED,
        error=error or "Training failed for an unknown reason.",
        finished_at=timezone.now(),
    )
    _stage_finished(job_id)


def _stage_finished(job_id: int) -> None:
    """Decide the stage waiting for job `job_id`, once that job has ended (a no-op otherwise, and when
    no stage waits): it succeeded -> the next stage's `init_adapter` is its adapter and it is queued
    (the adapter's LoRA shape is checked here first); failed or cancelled -> the next stage fails with
    the reason. Run from every path that ends a job, so a waiting stage never waits for ever."""
    with transaction.atomic():
        previous = TrainingJob.objects.filter(pk=job_id).first()
        if previous is None or not previous.is_finished:
            return
        nxt = TrainingJob.objects.select_for_update().filter(previous_stage_id=job_id, status=TrainingJob.WAITING).first()
        if nxt is None:
            return
        stage1 = f"Stage 1 ({previous.get_kind_display()} job #{previous.pk} “{previous.name}”)"
        if previous.status == TrainingJob.Status.SUCCEEDED:
            config = {**nxt.config, "init_adapter": previous.adapter_path}
            try:
                GRPOJobConfig.from_dict(config)  # the adapter exists here and has the job's LoRA shape
            except ApplicationError as exc:
                _fail_waiting(nxt, f"{stage1} succeeded, but its adapter cannot start this stage: {exc.message}")
                return
            TrainingJob.objects.filter(pk=nxt.pk).update(config=config, status=TrainingJob.Status.QUEUED)
            _enqueue(nxt.pk)
        elif previous.status == TrainingJob.Status.CANCELLED:
            _fail_waiting(nxt, f"{stage1} was cancelled, so this stage never started (it starts from stage 1's adapter).")
        else:
            reason = (previous.error or "no reason recorded")[:500]
            _fail_waiting(nxt, f"{stage1} failed, so this stage never started: {reason}")


def _fail_waiting(job: TrainingJob, error: str) -> None:
    TrainingJob.objects.filter(pk=job.pk, status=TrainingJob.WAITING).update(
        status=TrainingJob.Status.FAILED, error=error, finished_at=timezone.now()
    )
    _stage_finished(job.pk)  # a stage after this one, should there ever be one


# ---------------------------------------------------------------------------------------------
# The adapter registry: register (copy into WRITER_ADAPTER_DIR), hot-load, make active


def _adapter_name_for_job(job: TrainingJob) -> str:
    """A served name for a job's adapter: '<slug of the job name>-j<id>', unique in the registry."""
    slug = slug_of(job.name, max_length=50) or "writer"

    def taken(name: str) -> bool:
        return WriterAdapter.objects.filter(name=name).exists() or (settings.WRITER_ADAPTER_DIR / name).exists()

    return unique_slug(f"{slug}-j{job.pk}", taken=taken, fallback="writer")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ApplicationError(f"{path.name} in the adapter folder is not readable JSON ({exc}).") from exc
    return data if isinstance(data, dict) else {}


def _same_files(a: Path, b: Path) -> bool:
    names = {p.name for p in a.iterdir() if p.is_file()}
    if names != {p.name for p in b.iterdir() if p.is_file()}:
        return False
    return all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def adapter_register(
    *,
    name: str,
    source_dir: Path,
    user: AbstractBaseUser | None = None,
    job: TrainingJob | None = None,
    metrics: dict | None = None,
    load: bool = True,
) -> WriterAdapter:
    """Check a saved LoRA (files, the seed's non-zero check), copy it to WRITER_ADAPTER_DIR/<name>
    (the folder the writer server loads it from) and record it; then load it into the writer server
    when `load` (a server that is down leaves `load_error`, not a failed registration)."""
    from writer.engines import resolve_adapter

    name = (name or "").strip()
    if not name:
        raise ApplicationError("Give the adapter a name: 1-64 letters, digits, '.', '_' or '-'.")
    adapter = resolve_adapter(name)  # validates the name (a vLLM model name and a folder name)
    if adapter is None:
        raise ApplicationError(f"{name!r} is the base model's name; choose another adapter name.")
    source = Path(source_dir).resolve()
    if not (source / "adapter_config.json").is_file():
        raise ApplicationError(f"{source} is not a LoRA adapter folder (no adapter_config.json).")
    adapter_config = _read_json(source / "adapter_config.json")
    job_config = _read_json(source / CONFIG_FILENAME)
    nonzero, zero = check_adapter_nonzero(source)  # ApplicationError when the weights file is missing
    if WriterAdapter.objects.filter(name=name).exists():
        raise ApplicationError(f"An adapter called {name!r} is already registered; names are never reused.")
    target = adapter.path
    if target.resolve() != source:
        if target.exists():
            # vLLM keeps the first weights it loaded under a name: a folder with other weights under a
            # taken name would be served as the old ones.
            if not (target.is_dir() and _same_files(source, target)):
                raise ApplicationError(
                    f"{target} already holds different files; choose another name (served names are never reused)."
                )
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=target.parent))
            try:
                for item in source.iterdir():
                    if item.is_file():
                        shutil.copy2(item, tmp / item.name)
                os.chmod(tmp, 0o755)  # the vLLM server may run as another user
                tmp.rename(target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    row = WriterAdapter.objects.create(
        name=name,
        base_model=str(job_config.get("base_model") or adapter_config.get("base_model_name_or_path") or ""),
        path=str(target),
        source_path=str(source),
        job=job,
        created_by=user,
        config=job_config,
        metrics={**(metrics or {}), "lora_zero_tensors": zero[:20]},
        lora_rank=adapter_config.get("r") if isinstance(adapter_config.get("r"), int) else None,
        lora_nonzero=nonzero,
    )
    if load:
        adapter_load(adapter=row)
    return row


def adapter_load(*, adapter: WriterAdapter) -> bool:
    """Load the adapter into the writer server now (vLLM's /v1/load_lora_adapter; the local engine
    loads it on first use). Records loaded_at or the reason it could not load; True when loaded."""
    from writer.engines import get_engine, resolve_adapter

    engine = get_engine()
    ensure = getattr(engine, "ensure_adapter", None)
    health = getattr(engine, "health", None)
    try:
        spec = resolve_adapter(adapter.name)
        if not spec.path.is_dir():
            raise ApplicationError(f"The adapter folder {spec.path} is missing.")
        if health is not None and not health():  # one quick try instead of the retries with backoff
            raise ApplicationError(
                "The writer server is not answering; load the adapter from the adapters page once it is up."
            )
        if ensure is not None:
            ensure(spec)
    except ApplicationError as exc:
        WriterAdapter.objects.filter(pk=adapter.pk).update(load_error=exc.message[:2000])
        adapter.refresh_from_db()
        return False
    WriterAdapter.objects.filter(pk=adapter.pk).update(loaded_at=timezone.now(), load_error="")
    adapter.refresh_from_db()
    return True


def adapter_activate(*, adapter: WriterAdapter) -> WriterAdapter:
    """Make `adapter` the writer's adapter for new requests (one click). It must pass the non-zero
    check and load into the writer server first: readers never get a request that cannot be served."""
    if not adapter.lora_nonzero:
        raise ApplicationError(
            f"{adapter.name} failed the LoRA check (some A or B matrices are all zero): it did not learn; "
            "it cannot be made active."
        )
    if not adapter_load(adapter=adapter):
        raise ApplicationError(f"{adapter.name} could not be loaded into the writer: {adapter.load_error}")
    with transaction.atomic():
        # Lock every row: two admins activating at once serialize here instead of hitting the constraint.
        list(WriterAdapter.objects.select_for_update().order_by("pk").values_list("pk", flat=True))
        WriterAdapter.objects.filter(is_active=True).exclude(pk=adapter.pk).update(is_active=False)
        WriterAdapter.objects.filter(pk=adapter.pk).update(is_active=True, activated_at=timezone.now())
    adapter.refresh_from_db()
    return adapter


# The trained writer committed with the code (issue 15): `./dev up` installs it with
# `install_shipped_writer` (shipped_writer_install).
SHIPPED_WRITER_NAME = "mesu-writer-v3"
SHIPPED_WRITER_DIR = Path(__file__).resolve().parent / "shipped" / SHIPPED_WRITER_NAME


def shipped_writer_install(*, source_dir: Path = SHIPPED_WRITER_DIR, name: str = SHIPPED_WRITER_NAME) -> dict:
    """Register the shipped writer once, and make it the active writer when it is new and no adapter is
    active: a new install writes with the trained writer from its first request, and an admin's choice
    (another adapter active, or this one deactivated: "Use the base model") is never undone, because an
    adapter already registered under `name` is left as it is. Returns {"name", "registered" (now),
    "active", "note"}; a writer server that is down leaves it registered, inactive, with the reason."""
    existing = WriterAdapter.objects.filter(name=name).first()
    if existing is not None:
        return {"name": name, "registered": False, "active": existing.is_active, "note": "already registered; left as it is"}
    adapter = adapter_register(name=name, source_dir=source_dir, load=False)
    active = WriterAdapter.objects.filter(is_active=True).exclude(pk=adapter.pk).first()
    if active is not None:
        return {"name": name, "registered": True, "active": False, "note": f"{active.name} stays the active writer"}
    try:
        adapter = adapter_activate(adapter=adapter)
    except ApplicationError as exc:
        return {"name": name, "registered": True, "active": False, "note": f"not made active: {exc.message}"}
    return {"name": name, "registered": True, "active": adapter.is_active, "note": "the active writer"}


def adapter_deactivate() -> None:
    """Back to the base model (or settings.WRITER_DEFAULT_ADAPTER) for new requests."""
    WriterAdapter.objects.filter(is_active=True).update(is_active=False)


def _register_job_adapter(job_id: int) -> WriterAdapter | None:
    """After a successful job: register its adapter under a fresh name and try to load it."""
    job = TrainingJob.objects.get(pk=job_id)
    if not job.adapter_path or WriterAdapter.objects.filter(job=job).exists():
        return None
    last = job.step_logs[-1] if job.step_logs else {}
    if job.is_sft:  # what train_sft --register records
        metrics = {"stage": "sft", "steps": job.step, "final_loss": job.final_loss}
    else:
        metrics = {"reward": last.get("reward"), "rewards": last.get("rewards") or {}, "steps": job.step}
        if job.previous_stage_id is not None:
            metrics["init_adapter"] = job.config.get("init_adapter") or ""
    metrics.update(base_unchanged=job.base_unchanged, backend=job.backend)
    return adapter_register(
        name=_adapter_name_for_job(job),
        source_dir=Path(job.adapter_path),
        user=job.created_by,
        job=job,
        metrics=metrics,
    )


# ---------------------------------------------------------------------------------------------
# Evaluation on the held-out split


def evaluation_run_create(
    *,
    user: AbstractBaseUser | None,
    adapter: WriterAdapter | None,
    dataset_dir: Path,
    rewards: Sequence[str] | str,
    limit: int | None = None,
    max_new_tokens: int | None = None,
    engine: str | None = None,
    seed: int = 0,
    enqueue: bool = True,
) -> EvaluationRun:
    """Check everything a run needs (the test split, the rewards, the engine), record it, queue it."""
    from writer.engines import get_engine

    pairs = _test_pairs(Path(dataset_dir))  # a missing or empty split fails now
    names = reward_names(rewards)
    engine_name = engine or settings.WRITER_ENGINE
    get_engine(engine_name)
    max_new = max_new_tokens or settings.WRITER_MAX_NEW_TOKENS
    if not 8 <= max_new <= settings.WRITER_CONTEXT_TOKENS // 2:
        raise ApplicationError(
            f"New tokens per answer must be between 8 and {settings.WRITER_CONTEXT_TOKENS // 2}."
        )
    if limit is not None and limit < 1:
        raise ApplicationError("Evaluate at least one pair (or leave the limit empty for all).")
    total = len(pairs) if limit is None else min(limit, len(pairs))
    run = EvaluationRun.objects.create(
        adapter=adapter,
        target_name=adapter.name if adapter else settings.WRITER_MODEL,
        dataset_dir=str(Path(dataset_dir).resolve()),
        engine=engine_name,
        reward_names=names,
        limit=limit,
        max_new_tokens=max_new,
        seed=seed,
        created_by=user,
        total=total,
    )
    if enqueue:
        from training.tasks import evaluation_run_task

        run_id = run.pk
        transaction.on_commit(lambda: evaluation_run_task.delay(run_id), robust=True)
    return run


def _test_pairs(dataset_dir: Path) -> list:
    path = dataset_dir / TEST_FILE
    if not path.is_file():
        raise ApplicationError(f"No {TEST_FILE} in {dataset_dir}: build the dataset first (build_dataset).")
    pairs = read_jsonl(path)
    if not pairs:
        raise ApplicationError(
            f"{path} holds no pairs: the held-out books gave none (each needs at least 2 chapters)."
        )
    return pairs


def evaluation_run_execute(*, run_id: int, keep_text: bool = False, concurrency: int = 1) -> EvaluationRun | None:
    """Generate and score; progress lands on the row after each pair. None if it already finished.
    `keep_text`: each sample keeps its whole answer (for the pairwise judge), not only an excerpt."""
    from writer.engines import get_engine, resolve_adapter
    from writer.prompting import REASONING_START

    with transaction.atomic():
        run = EvaluationRun.objects.select_for_update(of=("self",)).select_related("adapter").get(pk=run_id)
        if run.is_finished:
            return None
        run.status = EvaluationRun.Status.RUNNING
        run.started_at = timezone.now()
        run.done = 0
        run.error = ""
        run.save(update_fields=["status", "started_at", "done", "error"])
    pairs = _test_pairs(Path(run.dataset_dir))
    if run.limit is not None:
        pairs = pairs[: run.limit]
    adapter = resolve_adapter(run.adapter.name) if run.adapter else None
    sampling = Sampling(
        max_tokens=run.max_new_tokens,
        temperature=settings.WRITER_TEMPERATURE,
        top_p=settings.WRITER_TOP_P,
        seed=run.seed,  # the same draws for every target: differences come from the weights
        prefill=REASONING_START if settings.WRITER_PREFILL_REASONING else "",
    )

    def on_pair(done: int, sample: dict) -> None:
        EvaluationRun.objects.filter(pk=run_id).update(done=done)

    result = evaluate_pairs(
        pairs,
        engine=get_engine(run.engine),
        adapter=adapter,
        sampling=sampling,
        rewards=run.reward_names,
        on_pair=on_pair,
        keep_text=keep_text,
        concurrency=concurrency,
    )
    EvaluationRun.objects.filter(pk=run_id).update(
        status=EvaluationRun.Status.SUCCEEDED,
        done=len(result.samples),
        total=len(result.samples),
        metrics=result.metrics,
        format_ok=result.format_ok,
        quality=result.quality,
        samples=result.samples,
        tokens=result.tokens,
        seconds=result.seconds,
        finished_at=timezone.now(),
    )
    run.refresh_from_db()
    return run


def evaluation_run_fail(*, run_id: int, error: str) -> None:
    EvaluationRun.objects.filter(pk=run_id).exclude(status=EvaluationRun.Status.SUCCEEDED).update(
        status=EvaluationRun.Status.FAILED,
        error=error or "Evaluation failed for an unknown reason.",
        finished_at=timezone.now(),
    )


# ---------------------------------------------------------------------------------------------
# Results from elsewhere: a pairwise judgement (judge_pairs --record), a GPU run (import_results)


def judge_comparison_record(
    *, dataset_dir: str, target: str, baseline: str, summary: dict, source: str
) -> JudgeComparison:
    """Record the summary of `training.judge.judge_pairs` (as judge_pairs prints it: mode, pairs,
    wins, losses, ties, no_verdict, win_rate, ci95, win_rate_ties_half, mean_preference, model) for
    `target` against `baseline` on a dataset; the same (dataset, target, baseline, source) again
    replaces the row."""
    ci95 = summary.get("ci95") or (None, None)
    row, _ = JudgeComparison.objects.update_or_create(
        dataset_dir=dataset_dir,
        target=target,
        baseline=baseline,
        source=source[:500],
        defaults={
            "judge_model": str(summary.get("model") or "")[:200],
            "mode": summary.get("mode") or "letters",
            "pairs": summary["pairs"],
            "wins": summary["wins"],
            "losses": summary["losses"],
            "ties": summary["ties"],
            "no_verdict": summary.get("no_verdict") or 0,
            "win_rate": summary.get("win_rate"),
            "ci_low": ci95[0],
            "ci_high": ci95[1],
            "win_rate_ties_half": summary.get("win_rate_ties_half"),
            "mean_preference": summary.get("mean_preference"),
            "summary": summary,
        },
    )
    return row


@transaction.atomic
def gpu_results_import(
    *, dataset_name: str, source: str, targets: Sequence[dict], judged: Sequence[dict]
) -> dict:
    """One succeeded EvaluationRun per target of a GPU run (engine IMPORTED_ENGINE; linked to the
    registered adapter of its name, if any) and a JudgeComparison per judgement, on `dataset_name`.
    A target is {"name", "role" (base, sft, grpo), "pairs", "metrics", "format_ok", "quality",
    "samples", "tokens", "seconds", "max_new_tokens"} and optionally "adapter_name" (the adapter its row
    links to when that is not its name: another seed's answers); a judgement is {"target", "baseline",
    "summary"}. Keyed on (dataset, target, source): importing the same results again updates the rows
    it made. EvaluationRun has no column for the source or the role: they sit in its `quality`.
    Returns how many rows were made and updated."""
    source = source[:500]
    now = timezone.now()
    counts = {"runs_created": 0, "runs_updated": 0, "judged_created": 0, "judged_updated": 0}
    for target in targets:
        values = {
            "adapter": WriterAdapter.objects.filter(name=target.get("adapter_name") or target["name"]).first(),
            "status": EvaluationRun.Status.SUCCEEDED,
            "error": "",
            "split": "test",
            "reward_names": list(target["metrics"]),
            "max_new_tokens": target["max_new_tokens"],
            "done": target["pairs"],
            "total": target["pairs"],
            "metrics": target["metrics"],
            "format_ok": target["format_ok"],
            "quality": {**target["quality"], "source": source, "role": target["role"]},
            "samples": target["samples"],
            "tokens": target["tokens"],
            "seconds": target["seconds"],
        }
        run = (
            EvaluationRun.objects.filter(
                dataset_dir=dataset_name,
                target_name=target["name"],
                engine=IMPORTED_ENGINE,
                quality__source=source,
            )
            .order_by("pk")
            .first()
        )
        if run is None:
            EvaluationRun.objects.create(
                dataset_dir=dataset_name,
                target_name=target["name"],
                engine=IMPORTED_ENGINE,
                started_at=now,
                finished_at=now,
                **values,
            )
            counts["runs_created"] += 1
        else:
            for field, value in values.items():
                setattr(run, field, value)
            run.save()
            counts["runs_updated"] += 1
    for item in judged:
        known = JudgeComparison.objects.filter(
            dataset_dir=dataset_name, target=item["target"], baseline=item["baseline"], source=source
        ).exists()
        judge_comparison_record(
            dataset_dir=dataset_name,
            target=item["target"],
            baseline=item["baseline"],
            summary=item["summary"],
            source=source,
        )
        counts["judged_updated" if known else "judged_created"] += 1
    return counts


# ---------------------------------------------------------------------------------------------
# The book library and datasets (the pages; import_books and build_dataset run the same code)


def serving_token_counter() -> Callable[[str], int]:
    """The writer's tokenizer, without the model: WRITER_TOKENIZER_PATH's tokenizer files when there
    are some, else the local engine's count_tokens (which reads the packaged GGUF's tokenizer)."""
    from writer.model_files import is_model_folder

    folder = Path(settings.WRITER_TOKENIZER_PATH)
    if (folder / "tokenizer.json").is_file() or is_model_folder(folder):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)

        def count(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

        return count
    from writer.engines import get_engine

    return get_engine("local").count_tokens


def serving_prompt_budget() -> int:
    """The prompt budget the writer gives a prompt, so training prompts match served ones: room is left
    for the whole answer, the reasoning's tokens and the chapter's (a held-out prompt built for the
    chapter alone left 3,393 + 640 tokens over a 4,096-token server on the GPU host)."""
    from writer.engines import sampling_from_settings
    from writer.prompting import prompt_budget

    return prompt_budget(
        context_tokens=settings.WRITER_CONTEXT_TOKENS, max_new_tokens=sampling_from_settings().answer_tokens
    )


def book_import(
    *,
    data: bytes,
    filename: str,
    author: str | None = None,
    version: str | None = None,
    overwrite: bool = False,
) -> ImportedBook:
    """One uploaded book into settings.TRAINING_BOOKS_DIR (the library build_dataset reads)."""
    if len(data) > settings.TRAINING_BOOK_MAX_BYTES:
        raise ApplicationError(
            f"{filename} is {len(data) / 2**20:.1f} MiB; the largest book is "
            f"{settings.TRAINING_BOOK_MAX_BYTES / 2**20:.0f} MiB."
        )
    return import_book_file(
        data,
        filename=filename,
        library_dir=settings.TRAINING_BOOKS_DIR,
        author=author or None,
        version=version or None,
        overwrite=overwrite,
        max_bytes=settings.TRAINING_BOOK_MAX_BYTES,
    )


def book_delete(*, slug: str) -> None:
    delete_book(settings.TRAINING_BOOKS_DIR, slug)


DATASET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def dataset_build(*, name: str, test_fraction: float = 0.3, seed: int = 0) -> dict:
    """build_dataset over the whole library into settings.TRAINING_DATASETS_DIR/<name>."""
    name = (name or "").strip()
    if not DATASET_NAME_RE.match(name):
        raise ApplicationError("Name the dataset with 1-64 letters, digits, '.', '_' or '-'.")
    if not 0 < test_fraction < 1:
        raise ApplicationError("The held-out share must be between 0 and 1 (0.3 holds out 30 % of the books).")
    out = settings.TRAINING_DATASETS_DIR / name
    if (out / "train.jsonl").exists():
        raise ApplicationError(f"A dataset called {name!r} exists; choose another name (trained jobs point at it).")
    if not settings.TRAINING_BOOKS_DIR.is_dir():
        raise ApplicationError("The book library is empty: import books first.")
    return build_dataset(
        books_dir=settings.TRAINING_BOOKS_DIR,
        out_dir=out,
        count_tokens=serving_token_counter(),
        budget_tokens=serving_prompt_budget(),
        test_fraction=test_fraction,
        seed=seed,
    )


# ---------------------------------------------------------------------------------------------
# Export of a registered adapter (the page; export_adapter runs training.export directly)


def adapter_export_create(
    *, adapter: WriterAdapter, formats: Sequence[str], gguf_types: Sequence[str] = (), user: AbstractBaseUser | None = None
) -> AdapterExport:
    """Validate the choice now (names, the adapter folder) and queue the export on `gpu`."""
    from training.export import parse_formats, parse_gguf_types

    names = parse_formats(list(formats))
    types = parse_gguf_types(list(gguf_types)) if "gguf" in names else []
    if "gguf" in names and not types:
        raise ApplicationError("Choose at least one GGUF type (f16, q8_0, q4_k_m).")
    if not (Path(adapter.path) / "adapter_config.json").is_file():
        raise ApplicationError(f"The adapter folder {adapter.path} is missing; register the adapter again.")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    export = AdapterExport.objects.create(
        adapter=adapter,
        formats=names,
        gguf_types=types,
        out_dir=str(settings.TRAINING_EXPORTS_DIR / adapter.name / stamp),
        created_by=user,
    )
    from training.tasks import adapter_export_task

    export_id = export.pk
    transaction.on_commit(lambda: adapter_export_task.delay(export_id), robust=True)
    return export


def adapter_export_run(*, export_id: int) -> AdapterExport | None:
    """Run one queued export; each format's outcome lands on the row as it ends."""
    from training.export import default_base_model, export_adapter

    with transaction.atomic():
        export = AdapterExport.objects.select_for_update(of=("self",)).select_related("adapter").get(pk=export_id)
        if export.is_finished:
            return None
        export.status = AdapterExport.Status.RUNNING
        export.started_at = export.started_at or timezone.now()
        export.save(update_fields=["status", "started_at"])

    def on_progress(event: dict) -> None:
        AdapterExport.objects.filter(pk=export_id).update(
            stage=f"{event['key']}: {event['status']} ({event['index']} of {event['total']})"[:200]
        )

    adapter_dir = Path(export.adapter.path)
    result = export_adapter(
        adapter_dir=adapter_dir,
        base_model=default_base_model(adapter_dir, Path(settings.WRITER_MODEL_PATH)),
        out_dir=Path(export.out_dir),
        formats=export.formats,
        gguf_types=export.gguf_types or (),
        on_progress=on_progress,
    )
    failed = [entry.key for entry in result.entries if not entry.ok and not entry.skipped]
    AdapterExport.objects.filter(pk=export_id).update(
        status=AdapterExport.Status.FAILED if failed else AdapterExport.Status.SUCCEEDED,
        entries=[entry.to_dict() for entry in result.entries],
        error=f"Failed: {', '.join(failed)} (see each format's message)." if failed else "",
        stage="Done",
        finished_at=timezone.now(),
    )
    export.refresh_from_db()
    return export


def adapter_export_fail(*, export_id: int, error: str) -> None:
    AdapterExport.objects.filter(pk=export_id).exclude(status=AdapterExport.Status.SUCCEEDED).update(
        status=AdapterExport.Status.FAILED, error=error or "Export failed for an unknown reason.", finished_at=timezone.now()
    )


# ---------------------------------------------------------------------------------------------
# Recovery (TrainingConfig.ready() registers each kind; mesu_web/jobs/recovery.py sweeps them)
#
# Jobs, evaluations and exports that no `gpu` worker will run otherwise: `running` whose worker died
# (their run lock is free), or `queued` for longer than `stale_after` with no message in the broker.
# A dead job goes back to `queued` and resumes from its last checkpoint (a job that was being cancelled
# is cancelled instead, and one that has been started RECOVERY_MAX_ATTEMPTS times fails: a job that
# kills its worker each time must not loop). Evaluations and exports keep no attempt count, so a dead
# one fails with the reason, to be started again from its page, rather than risk such a loop.


def training_job_requeue_dead_run(job_id: int) -> str | None:
    job = TrainingJob.objects.select_for_update().filter(pk=job_id).first()
    if job is None or job.status != TrainingJob.Status.RUNNING:
        return None
    if job.cancel_requested:
        TrainingJob.objects.filter(pk=job_id).update(status=TrainingJob.Status.CANCELLED, finished_at=timezone.now())
        _stage_finished(job_id)
        return "closed"
    if job.attempts >= settings.RECOVERY_MAX_ATTEMPTS:
        training_job_fail(
            job_id=job_id,
            error=(
                f"The training worker stopped during this job (killed or out of memory), {job.attempts} starts "
                "in all; it will not start again on its own. Its last checkpoint is kept."
            ),
        )
        return "closed"
    TrainingJob.objects.filter(pk=job_id).update(status=TrainingJob.Status.QUEUED)
    return "requeued"


def evaluation_run_close_dead_run(run_id: int) -> str | None:
    return _close_dead_run(EvaluationRun, run_id, "evaluation")


def adapter_export_close_dead_run(export_id: int) -> str | None:
    return _close_dead_run(AdapterExport, export_id, "export")


def _close_dead_run(model: type[EvaluationRun] | type[AdapterExport], pk: int, what: str) -> str | None:
    updated = model.objects.filter(pk=pk, status=model.Status.RUNNING).update(
        status=model.Status.FAILED,
        error=f"The worker running this {what} stopped (killed or out of memory); start it again.",
        finished_at=timezone.now(),
    )
    return "closed" if updated else None

