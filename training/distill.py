"""Distil reasoning: ask a teacher model WHY each real next chapter is the way it is.

For every pair {chapter 0 + chapters 1..k -> chapter k+1} of a `build_dataset` folder, a reasoning
model (Venice.AI's DeepSeek R1, the project's own vLLM server, any OpenAI-compatible endpoint, or the
in-process local engine) reads the story so far AND the chapter the author really wrote next, and
explains the choices behind it (plot, characters, intent, pacing) as the plan a writer would make
before writing it. The result is a triple {existing_chapters, output_chapter, reasoning}, and a
`completion` that is a whole training target in the writer's format:

    <start_working_out>\n{reasoning}\n<end_working_out>\n<SOLUTION>\n{the real chapter k+1}\n</SOLUTION>

Importable without Django (the local teacher alone needs it: it goes through `writer.engines`), so a
management command, a Celery task or a GPU box run the same code. This module is the pipeline: the
question, the checks on each answer, the cache and the run. The teacher itself (its settings, the
HTTP client, retries and errors) is `training.teacher`.

Files (defaults; `out_dir` and `cache_dir` move them):
- `<dataset>/distilled/train.jsonl`, `test.jsonl`: the original fields of each row that got its
  reasoning, plus `existing_chapters`, `output_chapter`, `reasoning` (tagged), `completion`, `teacher`;
  pairs that failed are left out and listed in the summary;
- `<dataset>/distilled/distill_summary.json`: counts (done, cached, failed with reasons), tokens,
  teacher calls, seconds, and the teacher's settings without its key;
- `<dataset>/distill_cache/<key>.json`: one file per answered pair, written atomically, where
  key = sha256(prompt version, teacher model, prompt, answer). A rerun (after a crash, a Ctrl-C or a
  failure) reads these and asks the teacher only for pairs that have none: a pair is never paid twice.
  Failures are not cached, so a rerun asks again for them only.

`reuse_reasoning` rebuilds `distilled/` from an earlier run's reasoning (a JSONL, gzipped or not, of
{book, k, reasoning}, such as the GPU run's `distilled-reasoning.jsonl.gz`) without asking any teacher:
the reasoning explains the real chapter k+1 of a book, which a new `build_dataset` (another prompt
budget) does not change.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesu_web.errors import ApplicationError, EngineError
from training.dataset import read_rows, write_rows
from training.teacher import Teacher, TeacherAnswer, TeacherError, TeacherSettings, get_teacher, preview
from writer.prompting import (
    REASONING_END,
    REASONING_START,
    SOLUTION_END,
    SOLUTION_START,
    ChapterText,
    render_chapter,
)

logger = logging.getLogger(__name__)

# Part of every cache key: change it whenever the teacher prompt or the answer checks change, so that
# old answers are not reused for a question that is no longer the one asked.
PROMPT_VERSION = "distill-why-v1"
SPLITS = ("train", "test")
SUMMARY_FILENAME = "distill_summary.json"
# An explanation of a chapter shorter than this is no explanation ("Because." / "OK, sure").
MIN_REASONING_WORDS = 5
# A share of letters among the non-space characters below this is not prose: prose is ~80% letters.
MIN_LETTER_SHARE = 0.5
# Control, surrogate, private-use and unassigned code points, and U+FFFD (a decoding failure): more
# than 1% of them and the answer is binary garbage, not text with a stray character.
MAX_BINARY_SHARE = 0.01
# A refusal is short; a long analysis that happens to start with "I can't help noticing" is not one.
REFUSAL_MAX_WORDS = 60
_REFUSAL = re.compile(
    r"^\W*(?:i['’]?m sorry|i am sorry|sorry[,.!]|i apologi[sz]e|i can(?:['’]?t|not)\b|i am unable|"
    r"i['’]?m unable|i['’]?m not able|i won['’]?t|i will not|as an ai\b|unfortunately,? i)",
    flags=re.IGNORECASE,
)
# A SOLUTION block in the teacher's answer is a chapter (re-)written, not reasoning: dropped whole,
# up to its end or the end of the answer when it is never closed.
_SOLUTION_BLOCK = re.compile(
    r"<\s*solution\s*>.*?(?:<\s*/\s*solution\s*>|\Z)", flags=re.IGNORECASE | re.DOTALL
)
# The writer's tags, in any case and spacing: an answer that writes them would break the format of
# the completion it becomes part of (its `<end_working_out>` would end the reasoning early).
_WRITER_TAG = re.compile(r"<\s*/?\s*solution\s*>|<\s*(?:start|end)_working_out\s*>", flags=re.IGNORECASE)
_THINK_TAG = re.compile(r"<\s*(?P<close>/?)\s*think\s*>", flags=re.IGNORECASE)
_BLANK_LINES = re.compile(r"\n{3,}")
_WORDS = re.compile(r"[^\W\d_]{2,}")  # words of 2+ letters, any script
_TASK_HEADING = "## Your task"  # writer.prompting's instruction part, always last in the user message

TEACHER_SYSTEM_PROMPT = (
    "You are a seasoned fiction editor who explains an author's craft. You are shown a story so far "
    "and the chapter its author wrote next. You explain why that chapter is the way it is, given the "
    "earlier chapters and the author's intent, as the reasoning a writer would go through before "
    "writing it."
)


def teacher_messages(
    *, existing_chapters: str, output_chapter: str, next_number: int
) -> list[dict[str, str]]:
    """The teacher's chat: the story so far (chapter 0 + chapters 1..k, as the pair's prompt holds
    them), the real chapter k+1, and the question WHY it is the way it is."""
    chapter = render_chapter(ChapterText(number=next_number, title="", text=output_chapter))
    user = (
        "# The story so far\n\n"
        f"{existing_chapters.strip()}\n\n"
        "# The chapter the author wrote next\n\n"
        f"{chapter}\n\n"
        "# Your task\n\n"
        f"Explain why Chapter {next_number} is the way it is, given Chapter 0 (what the story is about "
        "and what its author intends) and the chapters before it:\n"
        "- plot: which open threads it picks up, advances or resolves, and what it sets up next;\n"
        "- characters: what each one wants here, how they change, how their voices stay the same;\n"
        "- intent: how it serves the story's themes, tone and the author's stated intent;\n"
        "- pacing and structure: where it starts and ends, what it lingers on or skips, and why.\n\n"
        "Write it as the reasoning a writer goes through before writing this chapter: plain prose in "
        f'your own words, planning ahead ("Chapter {next_number} should open on ... because ..."). '
        "Do not rewrite or quote the chapter at length, do not say that you were shown it, and do not "
        f"use tags such as {REASONING_START} or {SOLUTION_START}."
    )
    return [{"role": "system", "content": TEACHER_SYSTEM_PROMPT}, {"role": "user", "content": user}]


# ---------------------------------------------------------------------------------------------
# Reading the teacher's answer


@dataclass(frozen=True)
class TeacherOutput:
    thinking: str  # the R1-style <think> section(s) and any separate reasoning_content
    answer: str  # the rest: the explanation asked for
    unclosed_think: bool = False  # a <think> that never closed (the answer is cut off, or missing)


def split_teacher_output(content: str, reasoning_content: str = "") -> TeacherOutput:
    """Separate an R1-style answer into its thinking and its answer.

    Handles `<think>…</think>answer`, several think blocks, a `</think>` without its opening tag (a
    chat template that starts the answer inside <think>: what comes before is thinking), an unclosed
    `<think>` (what follows it is thinking, there is no answer after it), and the thinking sent
    apart as `reasoning_content`.
    """
    thinking: list[str] = [reasoning_content.strip()] if reasoning_content.strip() else []
    answer: list[str] = []
    tags = list(_THINK_TAG.finditer(content))
    # A closing tag first: the opening one was in the prompt, so the text starts inside.
    inside = bool(tags) and tags[0].group("close") == "/"
    pos = 0
    for tag in tags:
        (thinking if inside else answer).append(content[pos : tag.start()])
        pos = tag.end()
        inside = tag.group("close") != "/"
    (thinking if inside else answer).append(content[pos:])
    return TeacherOutput(
        thinking=_tidy("\n\n".join(t.strip() for t in thinking if t.strip())),
        answer=_tidy("".join(answer)),
        unclosed_think=inside,
    )


def _tidy(text: str) -> str:
    return _BLANK_LINES.sub("\n\n", text).strip()


def check_reasoning(answer: TeacherAnswer, *, max_tokens: int | None = None) -> tuple[str, str, str]:
    """(reasoning, thinking, "") for a usable answer, or ("", thinking, why not) for one that is not:
    empty, only a <think> section, an unclosed <think>, binary garbage, no prose, or a refusal.

    The writer's own tags are removed from the reasoning (it is wrapped in them later), and a
    <SOLUTION> block with them (a chapter the teacher wrote is no reasoning)."""
    out = split_teacher_output(answer.content, answer.reasoning_content)
    cut = ""
    if answer.finish_reason == "length":
        limit = f" ({max_tokens})" if max_tokens else ""
        cut = f"; it stopped at max_tokens{limit}, so raise --max-tokens"
    if answer.refusal.strip():
        return "", out.thinking, f"The teacher refused: {preview(answer.refusal.strip())}."
    text = _tidy(_WRITER_TAG.sub("", _SOLUTION_BLOCK.sub("", out.answer)))
    if not text:
        if out.unclosed_think:
            why = "its <think> section was never closed, so there is no answer after it"
        elif out.thinking:
            why = "it wrote only its <think> section and no answer"
        else:
            why = "it returned an empty answer"
        return "", out.thinking, f"The teacher gave no reasoning: {why}{cut}."
    binary = sum(
        1
        for ch in text
        if ch == "\ufffd" or (unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") and ch not in "\n\r\t")
    )
    if binary and binary / len(text) > MAX_BINARY_SHARE:
        return (
            "",
            out.thinking,
            (
                f"The teacher's answer is not text: {binary} of its {len(text)} characters are control "
                f"or undecodable characters ({preview(text, 60)})."
            ),
        )
    if binary:  # a stray one or two in real prose: drop them, keep the prose
        text = "".join(
            ch
            for ch in text
            if not (
                ch == "\ufffd"
                or (unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") and ch not in "\n\r\t")
            )
        )
    words = _WORDS.findall(text)
    visible = [ch for ch in text if not ch.isspace()]
    letters = sum(ch.isalpha() for ch in visible)
    if len(words) < MIN_REASONING_WORDS or letters / max(len(visible), 1) < MIN_LETTER_SHARE:
        return (
            "",
            out.thinking,
            (
                f"The teacher's answer is not prose ({len(words)} words, "
                f"{letters / max(len(visible), 1):.0%} letters): {preview(text, 80)}{cut}."
            ),
        )
    if len(words) <= REFUSAL_MAX_WORDS and _REFUSAL.match(text):
        return "", out.thinking, f"The teacher refused: {preview(text)}."
    return text, out.thinking, ""


# ---------------------------------------------------------------------------------------------
# Rows, keys and the cache


def tag_reasoning(reasoning: str) -> str:
    """The reasoning as the writer writes it: between <start_working_out> and <end_working_out>."""
    return f"{REASONING_START}\n{reasoning.strip()}\n{REASONING_END}"


def full_completion(reasoning: str, chapter: str) -> str:
    """A whole target in the writer's format: the tagged reasoning, then the chapter in SOLUTION tags
    (`writer.parsing.parse_output` reads it back with format_ok and the chapter as its text)."""
    return f"{tag_reasoning(reasoning)}\n{SOLUTION_START}\n{chapter.strip()}\n{SOLUTION_END}"


def existing_chapters_of(prompt: list[dict[str, Any]]) -> str:
    """Chapter 0 + chapters 1..k of a pair's prompt: its user message without the writer's task."""
    users = [m for m in prompt if m.get("role") == "user"]
    if not users:
        raise ApplicationError("The pair's prompt has no user message.")
    content = str(users[-1].get("content", ""))
    # The instruction is always the last part (writer.prompting); a chapter that happens to contain
    # the heading is inside a ```text block before it, so cut at the LAST one.
    cut = content.rfind(f"\n{_TASK_HEADING}")
    return (content[:cut] if cut >= 0 else content).strip()


def pair_key(*, model: str, prompt: list[dict[str, Any]], answer: str) -> str:
    """The cache key of a pair for a teacher: sha256 of the prompt version, model, prompt and answer."""
    blob = json.dumps(
        {"version": PROMPT_VERSION, "model": model, "prompt": prompt, "answer": answer},
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def read_cached(cache_dir: Path, key: str) -> dict[str, Any] | None:
    """The cached answer of a pair, or None (missing, or unreadable: asked again and overwritten)."""
    path = cache_dir / f"{key}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("Ignoring the unreadable cache file %s (%s); asking the teacher again", path, exc)
        return None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("reasoning"), str)
        or not data["reasoning"].strip()
    ):
        logger.warning("Ignoring the cache file %s: it holds no reasoning", path)
        return None
    return data


def write_cached(cache_dir: Path, key: str, data: dict[str, Any]) -> Path:
    """Write the cache file atomically: a temporary file, fsynced, then renamed over the real name."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{key}.json"
    tmp = cache_dir / f".{key}.{uuid.uuid4().hex}.tmp"
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(json.dumps(data, ensure_ascii=False, indent=1) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a build_dataset JSONL file, every field kept, with what a teacher needs to see."""
    rows = read_rows(path)
    for number, row in enumerate(rows, start=1):
        problem = ""
        if not any(m["role"] == "user" for m in row["prompt"]):
            problem = "prompt has no user message"
        elif not isinstance(row["answer"], str) or not row["answer"].strip():
            problem = "answer is not a chapter's text"
        if problem:
            raise ApplicationError(f"{path.name} pair {number} is not a training pair: {problem}.")
    return rows


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class _Job:
    key: str
    messages: list[dict[str, str]]
    rows: list[tuple[str, int]] = field(default_factory=list)  # (split, index) of the rows it answers
    book: str = ""
    k: int = 0


@dataclass
class _Result:
    status: str  # "done" | "failed"
    reasoning: str = ""
    reason: str = ""
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_reported: bool = True
    finish_reason: str = ""
    fatal: bool = False


def _ask(teacher: Teacher, job: _Job, cache_dir: Path) -> _Result:
    """Ask for one pair and cache a usable answer; every failure becomes a reason, never an exception
    (except a bug of ours, which the caller records too)."""
    try:
        answer = teacher.ask(job.messages)
    except TeacherError as exc:
        return _Result(status="failed", reason=exc.message, calls=exc.attempts, fatal=exc.fatal)
    except EngineError as exc:
        return _Result(status="failed", reason=exc.message, calls=1)
    paid = {
        "calls": answer.attempts,
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "usage_reported": answer.usage_reported,
        "finish_reason": answer.finish_reason,
    }
    reasoning, thinking, problem = check_reasoning(answer, max_tokens=teacher.settings.max_tokens)
    if problem:
        return _Result(status="failed", reason=problem, **paid)
    write_cached(
        cache_dir,
        job.key,
        {
            "key": job.key,
            "prompt_version": PROMPT_VERSION,
            "teacher": teacher.model_id,
            "book": job.book,
            "k": job.k,
            "reasoning": reasoning,  # untagged: tags are added when rows are written
            "teacher_thinking": thinking,
            "finish_reason": answer.finish_reason,
            "usage": {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    return _Result(status="done", reasoning=reasoning, **paid)


def distill_dataset(
    dataset_dir: Path | str,
    out_dir: Path | str | None = None,
    *,
    teacher: Teacher | TeacherSettings,
    limit: int | None = None,
    concurrency: int | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    cache_dir: Path | str | None = None,
) -> dict[str, Any]:
    """Distil the reasoning of every pair of a `build_dataset` folder (train first, then test; the first
    `limit` pairs in all when given), `concurrency` pairs at a time (default: the teacher's setting).

    Writes `out_dir` (default `<dataset>/distilled`)/train.jsonl, test.jsonl and distill_summary.json,
    and returns the summary. `on_progress` is called in this thread after each pair with
    {"finished", "total", "done", "cached", "failed", "tokens"}. A pair that fails is recorded with
    its reason and left out; a fatal teacher error (bad key, wrong URL or model) stops the run with an
    ApplicationError after the summary is written. Answers already cached are never asked again."""
    started = time.monotonic()
    dataset = Path(dataset_dir)
    out = Path(out_dir) if out_dir is not None else dataset / "distilled"
    cache = Path(cache_dir) if cache_dir is not None else dataset / "distill_cache"
    if isinstance(teacher, TeacherSettings):
        teacher = get_teacher(teacher)
    workers = concurrency if concurrency is not None else teacher.settings.concurrency
    if workers < 1:
        raise ApplicationError(f"The concurrency must be at least 1, got {workers}.")
    if limit is not None and limit < 0:
        raise ApplicationError(f"The limit must not be negative, got {limit}.")

    if not (dataset / "train.jsonl").is_file():
        raise ApplicationError(
            f"{dataset} has no train.jsonl: give the folder `manage.py build_dataset --out` wrote."
        )
    rows: dict[str, list[dict[str, Any]]] = {}
    for split in SPLITS:
        path = dataset / f"{split}.jsonl"
        rows[split] = _read_rows(path) if path.is_file() else []
    order = [(split, i) for split in SPLITS for i in range(len(rows[split]))]
    if limit is not None:
        order = order[:limit]

    # One job per distinct key: two identical pairs are asked (and paid) once.
    jobs: dict[str, _Job] = {}
    for split, i in order:
        row = rows[split][i]
        key = pair_key(model=teacher.model_id, prompt=row["prompt"], answer=row["answer"])
        if key not in jobs:
            jobs[key] = _Job(
                key=key,
                messages=teacher_messages(
                    existing_chapters=existing_chapters_of(row["prompt"]),
                    output_chapter=row["answer"],
                    next_number=row["k"] + 1,
                ),
                book=str(row["book"]),
                k=row["k"],
            )
        jobs[key].rows.append((split, i))

    reasoning_of: dict[str, str] = {}
    results: dict[str, _Result] = {}
    cached_keys: list[str] = []
    cached_tokens = 0
    for key in jobs:
        hit = read_cached(cache, key)
        if hit is not None:
            reasoning_of[key] = hit["reasoning"]
            cached_keys.append(key)
            usage = hit.get("usage") or {}
            cached_tokens += int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
    todo = [job for key, job in jobs.items() if key not in reasoning_of]

    counts = {"done": 0, "failed": 0, "cached": sum(len(jobs[k].rows) for k in cached_keys)}
    tokens = {"prompt": 0, "completion": 0}
    finished = counts["cached"]
    total = len(order)
    aborted = ""

    def report() -> None:
        if on_progress is not None:
            on_progress(
                {
                    "finished": finished,
                    "total": total,
                    **counts,
                    "tokens": tokens["prompt"] + tokens["completion"],
                }
            )

    report()
    summary: dict[str, Any] = {}
    stop = threading.Event()
    runner = _run_jobs(teacher, todo, cache, workers, stop)
    try:
        for job, result in runner:
            results[job.key] = result
            tokens["prompt"] += result.prompt_tokens
            tokens["completion"] += result.completion_tokens
            n = len(job.rows)
            finished += n
            if result.status == "done":
                reasoning_of[job.key] = result.reasoning
                counts["done"] += n
            else:
                counts["failed"] += n
                logger.warning("Pair %s k=%d failed: %s", job.book, job.k, result.reason)
                if result.fatal and not aborted:
                    # Ask nothing new; the calls in flight finish and are counted (and cached).
                    aborted = result.reason
                    stop.set()
            report()
    finally:
        runner.close()  # an interrupt or a failing on_progress: wait for the calls in flight
        # Written however the run ends (an interrupt included), so what was spent is never unknown.
        summary = _summary(
            dataset=dataset,
            out=out,
            cache=cache,
            teacher=teacher,
            jobs=jobs,
            results=results,
            rows=rows,
            total=total,
            counts=counts,
            tokens=tokens,
            cached_tokens=cached_tokens,
            seconds=time.monotonic() - started,
            aborted=aborted,
            workers=workers,
        )
        out.mkdir(parents=True, exist_ok=True)
        (out / SUMMARY_FILENAME).write_text(
            json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    if aborted:
        raise ApplicationError(
            f"Distillation stopped: {aborted} Every pair would fail the same way; "
            f"{counts['done']} new answer(s) were cached and a rerun resumes from them.",
            {"summary": summary},
        )

    by_row = {row: key for key, job in jobs.items() for row in job.rows}
    for split in SPLITS:
        kept = []
        for i, row in enumerate(rows[split]):
            key = by_row.get((split, i))
            if key is None or key not in reasoning_of:
                continue
            reasoning = reasoning_of[key]
            kept.append(
                {
                    **row,
                    "existing_chapters": existing_chapters_of(row["prompt"]),
                    "output_chapter": row["answer"],
                    "reasoning": tag_reasoning(reasoning),
                    "completion": full_completion(reasoning, row["answer"]),
                    "teacher": teacher.model_id,
                }
            )
        write_rows(kept, out / f"{split}.jsonl")
        summary["splits"][split]["written"] = len(kept)
    (out / SUMMARY_FILENAME).write_text(
        json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return summary


def _run_jobs(
    teacher: Teacher, jobs: list[_Job], cache: Path, workers: int, stop: threading.Event
) -> Iterator[tuple[_Job, _Result]]:
    """(job, result) as each finishes, at most `workers` in flight. A job is submitted only when a
    worker is free and `stop` is not set, so stopping (a fatal error, an interrupt) asks nothing new."""
    if not jobs:
        return
    pending = iter(jobs)
    running: dict[Future[_Result], _Job] = {}

    def guarded(job: _Job) -> _Result:
        try:
            return _ask(teacher, job, cache)
        except Exception as exc:  # a bug of ours: one pair's reason, with the trace in the log
            logger.exception("Distilling %s k=%d failed unexpectedly", job.book, job.k)
            return _Result(status="failed", reason=f"Unexpected error: {type(exc).__name__}: {exc}")

    def submit_next() -> None:
        job = None if stop.is_set() else next(pending, None)
        if job is not None:
            running[executor.submit(guarded, job)] = job

    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="distill")
    try:
        for _ in range(workers):
            submit_next()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                yield job, future.result()
                submit_next()
    finally:
        # In-flight calls finish (their answers are cached: already paid for); nothing new starts.
        executor.shutdown(wait=True, cancel_futures=True)


def _summary(
    *,
    dataset: Path,
    out: Path,
    cache: Path,
    teacher: Teacher,
    jobs: dict[str, _Job],
    results: dict[str, _Result],
    rows: dict[str, list[dict[str, Any]]],
    total: int,
    counts: dict[str, int],
    tokens: dict[str, int],
    cached_tokens: int,
    seconds: float,
    aborted: str,
    workers: int,
) -> dict[str, Any]:
    failures = []
    for key, result in results.items():
        if result.status != "failed":
            continue
        for split, i in jobs[key].rows:
            row = rows[split][i]
            failures.append(
                {"split": split, "line": i + 1, "book": row["book"], "k": row["k"], "reason": result.reason}
            )
    failures.sort(key=lambda f: (SPLITS.index(f["split"]), f["line"]))
    reasons: dict[str, int] = {}
    for f in failures:
        reasons[f["reason"]] = reasons.get(f["reason"], 0) + 1
    new = [r for r in results.values() if r.status == "done"]
    return {
        "dataset": str(dataset),
        "out": str(out),
        "cache": str(cache),
        "prompt_version": PROMPT_VERSION,
        "teacher": {**teacher.settings.public(), "model": teacher.model_id},
        "concurrency": workers,
        "pairs": total,
        "done": counts["done"],
        "cached": counts["cached"],
        "failed": counts["failed"],
        "not_asked": total - counts["done"] - counts["cached"] - counts["failed"],
        "failures": failures,
        "failure_reasons": reasons,
        "truncated": sum(1 for r in new if r.finish_reason == "length"),  # answers cut at max_tokens
        "calls": sum(r.calls for r in results.values()),  # teacher requests made, retries included
        "tokens": {
            "prompt": tokens["prompt"],
            "completion": tokens["completion"],
            "total": tokens["prompt"] + tokens["completion"],
            # calls whose provider sent no `usage`: their tokens are not in the counts above
            "unreported_calls": sum(1 for r in results.values() if r.calls and not r.usage_reported),
            "cached": cached_tokens,  # what the cached answers cost when they were asked (not this run)
        },
        "seconds": round(seconds, 3),
        "aborted": aborted,
        "splits": {split: {"rows": len(rows[split]), "written": 0} for split in SPLITS},
    }


def reuse_reasoning(
    dataset_dir: Path | str,
    reasoning_file: Path | str,
    out_dir: Path | str | None = None,
    *,
    teacher: str = "",
) -> dict[str, Any]:
    """Write `<dataset>/distilled/` (or `out_dir`) as `distill_dataset` would, with the reasoning of
    `reasoning_file`: one JSON object a line with `book`, `k` and `reasoning` (`.gz`: gzipped), matched
    to the dataset's rows by (book, k). Rows it has no reasoning for are left out and counted; a line
    that is not such an object is an ApplicationError naming it. Returns the summary it writes."""
    started = time.monotonic()
    dataset = Path(dataset_dir)
    source = Path(reasoning_file)
    out = Path(out_dir) if out_dir is not None else dataset / "distilled"
    if not (dataset / "train.jsonl").is_file():
        raise ApplicationError(
            f"{dataset} has no train.jsonl: give the folder `manage.py build_dataset --out` wrote."
        )
    if not source.is_file():
        raise ApplicationError(f"No reasoning file at {source}.")
    reasoning_of: dict[tuple[str, int], str] = {}
    opener = gzip.open if source.suffix == ".gz" else open
    try:
        with opener(source, "rt", encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                    book, k, reasoning = str(item["book"]), item["k"], item["reasoning"]
                    if not isinstance(k, int) or not isinstance(reasoning, str) or not reasoning.strip():
                        raise ValueError("`k` must be an integer and `reasoning` a non-empty string")
                except (ValueError, KeyError, TypeError) as exc:
                    raise ApplicationError(f"{source}, line {number}: not a reasoning row ({exc}).") from exc
                reasoning_of[(book, k)] = reasoning
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ApplicationError(
            f"{source} cannot be read as {'gzipped ' if opener is gzip.open else ''}UTF-8 JSON lines ({exc})."
        ) from exc
    summary: dict[str, Any] = {
        "dataset": str(dataset),
        "out": str(out),
        "reused_from": str(source),
        "prompt_version": PROMPT_VERSION,
        "teacher": {"model": teacher},
        "splits": {},
    }
    total = written = 0
    for split in SPLITS:
        path = dataset / f"{split}.jsonl"
        rows = _read_rows(path) if path.is_file() else []
        kept = []
        for row in rows:
            reasoning = reasoning_of.get((str(row["book"]), row["k"]))
            if reasoning is None:
                continue
            plain = reasoning.strip()
            if plain.startswith(REASONING_START) and plain.endswith(REASONING_END):
                plain = plain[len(REASONING_START) : len(plain) - len(REASONING_END)].strip()
            kept.append(
                {
                    **row,
                    "existing_chapters": existing_chapters_of(row["prompt"]),
                    "output_chapter": row["answer"],
                    "reasoning": tag_reasoning(plain),
                    "completion": full_completion(plain, row["answer"]),
                    "teacher": teacher,
                }
            )
        write_rows(kept, out / f"{split}.jsonl")
        summary["splits"][split] = {"rows": len(rows), "written": len(kept)}
        total += len(rows)
        written += len(kept)
    summary.update(
        pairs=total, reused=written, missing=total - written, seconds=round(time.monotonic() - started, 3)
    )
    (out / SUMMARY_FILENAME).write_text(
        json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return summary
