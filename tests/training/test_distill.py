"""Distilled reasoning (the pipeline, training.distill, and its teacher client, training.teacher): the
real vLLM server and the local engine as teachers, and a real (tiny) HTTP teacher in a thread that
answers with R1 <think> sections, garbage, refusals, 4xx/5xx and timeouts."""

from __future__ import annotations

import gzip
import io
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from mesu_web.errors import ApplicationError
from training.dataset import Pair, build_dataset, write_jsonl
from training.distill import (
    SUMMARY_FILENAME,
    check_reasoning,
    distill_dataset,
    existing_chapters_of,
    full_completion,
    pair_key,
    split_teacher_output,
    tag_reasoning,
)
from training.teacher import TeacherAnswer, TeacherSettings, reset_caches
from writer.parsing import parse_output
from writer.prompting import (
    REASONING_END,
    REASONING_START,
    SOLUTION_START,
    ChapterText,
    StoryMeta,
    build_prompt,
)

SECRET = "sk-test-secret-0123456789"
OK_TEXT = (
    "Chapter 2 should open on the dry well, because the sisters need a reason to leave the village; "
    "it raises the stakes, keeps Mira stubborn and Lio careful, and ends on the road to set up the crossing."
)
USAGE = (100, 20)  # prompt, completion tokens the fake teacher reports per answer


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture(autouse=True)
def _fresh_teachers():
    reset_caches()
    yield
    reset_caches()


# ---------------------------------------------------------------------------------------------
# A real OpenAI-compatible server in a thread. The behaviour of each request is chosen by a
# "[mode:NAME]" marker in the chapter it is asked about.


def _completion(
    content: str | None,
    *,
    reasoning_content: str | None = None,
    refusal: str | None = None,
    finish: str = "stop",
    usage: bool = True,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning_content is not None:
        message["reasoning_content"] = reasoning_content
    if refusal is not None:
        message["refusal"] = refusal
    body: dict[str, Any] = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "fake-r1",
        "choices": [{"index": 0, "finish_reason": finish, "message": message}],
    }
    if usage:
        body["usage"] = {"prompt_tokens": USAGE[0], "completion_tokens": USAGE[1], "total_tokens": sum(USAGE)}
    return body


class FakeTeacher:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.seen: Counter[str] = Counter()  # requests per marker (mode + its pair's tag)
        self.lock = threading.Lock()
        self.slow_seconds = 1.0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/v1"

    def count(self, mode: str) -> int:
        with self.lock:
            return sum(n for marker, n in self.seen.items() if marker.split()[0] == mode)

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep the test output clean
                pass

            def _send(self, status: int, body: bytes, content_type: str = "application/json", **headers: str):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name.replace("_", "-"), value)
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, data: dict[str, Any], **headers: str) -> None:
                self._send(status, json.dumps(data).encode(), **headers)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                text = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
                found = re.search(r"\[mode:(?P<mode>[a-z_0-9]+)(?P<tag>[^\]]*)\]", text)
                marker = f"{found['mode']} {found['tag'].strip()}" if found else "ok"
                with fake.lock:
                    fake.seen[marker] += 1
                    nth = fake.seen[marker]
                    fake.requests.append(
                        {"marker": marker, "auth": self.headers.get("Authorization"), "body": body}
                    )
                self.respond(marker.split()[0], nth)

            def respond(self, mode: str, nth: int) -> None:
                if mode == "ok":
                    return self._json(200, _completion(OK_TEXT))
                if mode == "think":
                    return self._json(
                        200,
                        _completion(
                            f"<think>Let me look at the threads. The well is dry.</think>\n\n{OK_TEXT}"
                        ),
                    )
                if mode == "prefilled":  # a chat template that opened <think> in the prompt
                    return self._json(200, _completion(f"Thinking without its opening tag.</think>{OK_TEXT}"))
                if mode == "separate":
                    return self._json(200, _completion(OK_TEXT, reasoning_content="Hidden chain of thought."))
                if mode == "tags":
                    return self._json(
                        200,
                        _completion(f"{REASONING_START}{OK_TEXT}<end_working_out>\n< SOLUTION >x</solution>"),
                    )
                if mode == "nousage":
                    return self._json(200, _completion(OK_TEXT, usage=False))
                if mode == "unclosed":
                    return self._json(
                        200, _completion("<think>I keep thinking about the well and", finish="length")
                    )
                if mode == "thinkonly":
                    return self._json(200, _completion("<think>All of it is thought.</think>  \n "))
                if mode == "blank":
                    return self._json(200, _completion("  \n\t  "))
                if mode == "binary":
                    return self._json(
                        200, _completion("\x00\x01\x02\x1b[0m\ufffd\ufffd PK\x03\x04" * 8 + OK_TEXT[:40])
                    )
                if mode == "symbols":
                    return self._json(200, _completion("#### $$$ !!! 1234 5678 --- *** ### ??? 0000 ~~~"))
                if mode == "refusal":
                    return self._json(200, _completion("I'm sorry, but I can't help with that request."))
                if mode == "structured_refusal":
                    return self._json(200, _completion(None, refusal="I cannot assist with this."))
                if mode == "notjson":
                    return self._send(200, b"\x00\x01<<not json at all>>")
                if mode == "html":
                    return self._send(200, b"<html><body>Bad gateway</body></html>", "text/html")
                if mode == "http400":
                    return self._json(
                        400, {"error": {"message": "This model's maximum context length is 4096 tokens."}}
                    )
                if mode == "slow":
                    time.sleep(fake.slow_seconds)
                    return self._json(200, _completion(OK_TEXT))
                if mode == "slowonce":
                    if nth == 1:
                        time.sleep(fake.slow_seconds)
                    return self._json(200, _completion(OK_TEXT))
                if mode == "flaky":  # 500, 503, then an answer
                    if nth <= 2:
                        return self._json(500 + 3 * (nth - 1), {"error": {"message": "overloaded"}})
                    return self._json(200, _completion(OK_TEXT))
                if mode == "ratelimit":
                    if nth == 1:
                        return self._json(429, {"error": {"message": "slow down"}}, Retry_After="0")
                    return self._json(200, _completion(OK_TEXT))
                if mode == "garbageonce":
                    if nth == 1:
                        return self._json(200, _completion("\x00" * 50))
                    return self._json(200, _completion(OK_TEXT))
                if mode == "unauthorized":
                    return self._json(401, {"error": {"message": "Invalid API key."}})
                return self._json(500, {"error": {"message": f"unknown mode {mode}"}})

        return Handler

    def __enter__(self) -> FakeTeacher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeTeacher]:
    with FakeTeacher() as server:
        yield server


def fake_settings(fake: FakeTeacher, **changes: Any) -> TeacherSettings:
    values: dict[str, Any] = {
        "base_url": fake.url,
        "api_key": SECRET,
        "model": "fake-r1",
        "timeout": 5.0,
        "max_retries": 2,
        "backoff": 0.01,
        "max_tokens": 64,
        "temperature": 0.6,
        "concurrency": 3,
    }
    values.update(changes)
    return TeacherSettings(**values)


META = StoryMeta(
    title="The Salt Road",
    summary="Two sisters cross a desert of salt to find their father.",
    intent_notes="Quiet, patient; the desert is a character too.",
)
CHAPTER_1 = ChapterText(
    number=1,
    title="The Well",
    text="Mira lowered the bucket and heard it hit stone. The well was dry. Lio said nothing, "
    "which was how Mira knew her sister was afraid.",
)


def make_dataset(folder: Path, train: list[str], test: list[str] = ()) -> Path:
    """A build_dataset-shaped folder whose answers carry the fake teacher's mode markers."""
    prompt = build_prompt(
        meta=META, chapters=[CHAPTER_1], count_tokens=words, budget_tokens=2000, next_number=2
    ).messages

    def pairs(markers: list[str], split: str) -> list[Pair]:
        return [
            Pair(
                prompt=prompt,
                answer=f"[mode:{m}] The sisters left at dawn, {split} {i}. The salt glittered.",
                book=f"{split}-{m}",
                k=1,
            )
            for i, m in enumerate(markers)
        ]

    write_jsonl(pairs(train, "train"), folder / "train.jsonl")
    write_jsonl(pairs(list(test), "test"), folder / "test.jsonl")
    return folder


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def cache_files(dataset: Path) -> list[Path]:
    folder = dataset / "distill_cache"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def reasons_by_mode(summary: dict[str, Any]) -> dict[str, str]:
    return {f["book"].split("-", 1)[1]: f["reason"] for f in summary["failures"]}


# ---------------------------------------------------------------------------------------------
# Pure parts


@pytest.mark.parametrize(
    ("content", "separate", "thinking", "answer", "unclosed"),
    [
        ("Plain answer.", "", "", "Plain answer.", False),
        ("<think>a</think>\n\nb", "", "a", "b", False),
        ("<think>a</think>b<think>c</think>d", "", "a\n\nc", "bd", False),
        ("a</think>b", "", "a", "b", False),  # the template opened <think> in the prompt
        ("<think>a, cut off", "", "a, cut off", "", True),
        ("b", "a", "a", "b", False),  # reasoning_content sent apart
        ("< THINK >a</ think >b", "", "a", "b", False),
    ],
)
def test_split_teacher_output(content, separate, thinking, answer, unclosed):
    out = split_teacher_output(content, separate)
    assert (out.thinking, out.answer, out.unclosed_think) == (thinking, answer, unclosed)


@pytest.mark.parametrize(
    ("content", "finish", "why"),
    [
        ("", "stop", "empty answer"),
        (" \n\t ", "stop", "empty answer"),
        ("<think>only this</think>", "stop", "only its <think> section"),
        ("<think>never closed", "length", "never closed"),
        ("\x00\x01\x02\x03 binary \x04\x05\x06\x07 data \ufffd\ufffd\ufffd", "stop", "not text"),
        ("ok fine", "stop", "not prose"),
        ("12 34 56 78 90 -- ++ ** // aa bb cc dd ee", "stop", "not prose"),
        ("I'm sorry, but I can't help with that.", "stop", "refused"),
        ("As an AI, I cannot analyse copyrighted chapters for you today.", "stop", "refused"),
    ],
)
def test_check_reasoning_rejects_garbage(content, finish, why):
    reasoning, _, problem = check_reasoning(
        TeacherAnswer(content=content, finish_reason=finish), max_tokens=64
    )
    assert reasoning == ""
    assert why in problem
    if finish == "length":
        assert "max_tokens (64)" in problem


def test_check_reasoning_keeps_prose_and_strips_writer_tags():
    text = f"<think>hmm</think>{REASONING_START}{OK_TEXT}\x07{REASONING_END}<SOLUTION>"
    reasoning, thinking, problem = check_reasoning(TeacherAnswer(content=text))
    assert problem == ""
    assert thinking == "hmm"
    assert reasoning == OK_TEXT  # the tags and the one stray control character are gone
    # A long analysis that opens like a refusal is not one.
    long = "I can't help noticing that " + OK_TEXT * 4
    assert check_reasoning(TeacherAnswer(content=long))[2] == ""


def test_completion_is_a_whole_target_in_the_writer_format():
    chapter = "The sisters left at dawn.\n\nThe salt glittered."
    parsed = parse_output(full_completion(OK_TEXT, chapter))
    assert parsed.format_ok
    assert parsed.text == chapter
    assert parsed.reasoning == OK_TEXT


def test_pair_key_and_existing_chapters():
    prompt = build_prompt(meta=META, chapters=[CHAPTER_1], count_tokens=words, budget_tokens=2000).messages
    key = pair_key(model="m", prompt=prompt, answer="a")
    assert key == pair_key(model="m", prompt=prompt, answer="a")
    assert key != pair_key(model="other", prompt=prompt, answer="a")
    assert key != pair_key(model="m", prompt=prompt, answer="b")
    chapters = existing_chapters_of(prompt)
    assert chapters.startswith("## Chapter 0: About the story")
    assert "## Chapter 1: The Well" in chapters and CHAPTER_1.text in chapters
    assert "## Your task" not in chapters


def test_settings_from_django_and_validation(settings):
    settings.TEACHER_ENGINE = "openai"
    settings.TEACHER_BASE_URL = "https://api.venice.ai/api/v1/"
    settings.TEACHER_API_KEY = SECRET
    settings.TEACHER_MODEL = "deepseek-r1-671b"
    settings.TEACHER_TIMEOUT = 30.0
    settings.TEACHER_MAX_RETRIES = 5
    settings.TEACHER_RETRY_BACKOFF = 1.5
    settings.TEACHER_MAX_TOKENS = 4096
    settings.TEACHER_TEMPERATURE = 0.6
    settings.TEACHER_CONCURRENCY = 8

    s = TeacherSettings.from_django(concurrency=2)
    assert (s.base_url, s.model, s.api_key, s.max_retries, s.backoff, s.concurrency) == (
        "https://api.venice.ai/api/v1",
        "deepseek-r1-671b",
        SECRET,
        5,
        1.5,
        2,
    )
    assert SECRET not in repr(s)
    assert SECRET not in json.dumps(s.public())
    assert s.public()["api_key_set"] is True
    creds = TeacherSettings(base_url="https://user:pw@example.com/v1", model="m")
    assert "pw" not in creds.public()["base_url"]

    for bad in (
        {"concurrency": 0},
        {"base_url": "ftp://x"},
        {"engine": "grpc"},
        {"model": " "},
        {"timeout": 0},
    ):
        with pytest.raises(ApplicationError):
            TeacherSettings(**{"base_url": "http://127.0.0.1:1/v1", "model": "m", **bad})
    TeacherSettings(engine="local")  # no URL or model needed in-process


# ---------------------------------------------------------------------------------------------
# A real HTTP teacher in a thread


GOOD = ["ok", "think", "prefilled", "separate", "tags", "nousage"]
BAD = [
    "unclosed",
    "thinkonly",
    "blank",
    "binary",
    "symbols",
    "refusal",
    "structured_refusal",
    "notjson",
    "html",
    "http400",
]


def test_r1_answers_and_garbage_each_fail_their_own_pair(tmp_path, fake):
    dataset = make_dataset(tmp_path / "ds", GOOD, BAD)
    progress: list[dict[str, Any]] = []

    summary = distill_dataset(dataset, teacher=fake_settings(fake), on_progress=progress.append)

    assert (summary["pairs"], summary["done"], summary["cached"], summary["failed"]) == (16, 6, 0, 10)
    reasons = reasons_by_mode(summary)
    assert sorted(reasons) == sorted(BAD)
    assert "never closed" in reasons["unclosed"] and "max_tokens (64)" in reasons["unclosed"]
    assert "only its <think> section" in reasons["thinkonly"]
    assert "empty answer" in reasons["blank"]
    assert "not text" in reasons["binary"]
    assert "not prose" in reasons["symbols"]
    assert "refused" in reasons["refusal"] and "refused" in reasons["structured_refusal"]
    assert "malformed" in reasons["notjson"] and "malformed" in reasons["html"]
    assert "HTTP 400" in reasons["http400"] and "maximum context length" in reasons["http400"]
    # None of these is worth a retry: one request each, a 4xx included.
    assert summary["calls"] == 16 == len(fake.requests)
    assert all(fake.count(mode) == 1 for mode in GOOD + BAD)
    # Tokens: every answer that came with `usage` (6 good but `nousage`, and 7 content failures).
    assert summary["tokens"]["prompt"] == 12 * USAGE[0]
    assert summary["tokens"]["completion"] == 12 * USAGE[1]
    assert summary["tokens"]["total"] == 12 * sum(USAGE)
    assert summary["tokens"]["unreported_calls"] == 1
    assert summary["truncated"] == 0
    assert progress[-1]["finished"] == 16 and progress[-1]["failed"] == 10

    out = dataset / "distilled"
    assert json.loads((out / SUMMARY_FILENAME).read_text()) == summary
    rows = read_rows(out / "train.jsonl")
    assert [r["book"] for r in rows] == [f"train-{m}" for m in GOOD]
    assert read_rows(out / "test.jsonl") == []  # every test pair failed: left out, listed in the summary
    for row in rows:
        assert {
            "prompt",
            "answer",
            "book",
            "k",
            "existing_chapters",
            "output_chapter",
            "reasoning",
        } <= row.keys()
        assert row["output_chapter"] == row["answer"]
        assert row["existing_chapters"] == existing_chapters_of(row["prompt"])
        assert row["reasoning"] == f"{REASONING_START}\n{OK_TEXT}\n{REASONING_END}"  # no <think>, no tags
        parsed = parse_output(row["completion"])
        assert parsed.format_ok and parsed.text == row["answer"] and parsed.reasoning == OK_TEXT
        assert row["teacher"] == "fake-r1"
    # The teacher was asked about the right chapter, and got the key.
    asked = fake.requests[0]["body"]
    assert asked["model"] == "fake-r1" and asked["max_tokens"] == 64
    assert "# The chapter the author wrote next" in asked["messages"][1]["content"]
    assert CHAPTER_1.text in asked["messages"][1]["content"]
    assert {r["auth"] for r in fake.requests} == {f"Bearer {SECRET}"}
    assert SECRET not in json.dumps(summary)
    # Only whole answers of good pairs are cached: no failure, no temporary file.
    files = cache_files(dataset)
    assert len(files) == 6 and all(f.suffix == ".json" and not f.name.startswith(".") for f in files)
    thoughts = {json.loads(f.read_text())["teacher_thinking"] for f in files}
    assert (
        "Let me look at the threads. The well is dry." in thoughts and "Hidden chain of thought." in thoughts
    )


def test_a_timed_out_teacher_is_retried_then_fails_readably(tmp_path, fake):
    fake.slow_seconds = 1.5
    dataset = make_dataset(tmp_path / "ds", ["slow", "slowonce"])

    started = time.monotonic()
    summary = distill_dataset(dataset, teacher=fake_settings(fake, timeout=0.4, max_retries=2))

    assert time.monotonic() - started < 10
    assert (summary["done"], summary["failed"]) == (1, 1)
    reason = reasons_by_mode(summary)["slow"]
    assert reason == f"The teacher at {fake.url} did not answer within 0.4 s (after 3 attempts)."
    assert fake.count("slow") == 3  # 1 call + 2 retries
    assert fake.count("slowonce") == 2  # timed out once, then answered
    assert summary["calls"] == 5
    assert len(cache_files(dataset)) == 1  # the answered pair only; nothing half-written
    assert [r["book"] for r in read_rows(dataset / "distilled" / "train.jsonl")] == ["train-slowonce"]


def test_5xx_and_429_are_retried_and_a_rerun_pays_nothing(tmp_path, fake):
    dataset = make_dataset(tmp_path / "ds", ["flaky", "ratelimit"], ["ok"])
    teacher = fake_settings(fake)

    first = distill_dataset(dataset, teacher=teacher)
    assert (first["done"], first["failed"], first["cached"]) == (3, 0, 0)
    assert fake.count("flaky") == 3 and fake.count("ratelimit") == 2
    assert first["calls"] == 6
    assert first["tokens"]["total"] == 3 * sum(USAGE)

    second = distill_dataset(dataset, teacher=teacher)
    assert (second["done"], second["failed"], second["cached"], second["calls"]) == (0, 0, 3, 0)
    assert second["tokens"]["total"] == 0 and second["tokens"]["cached"] == 3 * sum(USAGE)
    assert len(fake.requests) == 6  # the server was not asked again
    assert len(read_rows(dataset / "distilled" / "train.jsonl")) == 2
    assert len(read_rows(dataset / "distilled" / "test.jsonl")) == 1

    # Another teacher model is another question: asked anew.
    third = distill_dataset(dataset, teacher=fake_settings(fake, model="other-r1"), limit=1)
    assert (third["done"], third["cached"], third["pairs"]) == (1, 0, 1)


def test_a_rerun_asks_only_for_the_pairs_that_failed(tmp_path, fake):
    dataset = make_dataset(tmp_path / "ds", ["ok", "garbageonce"])
    teacher = fake_settings(fake)

    first = distill_dataset(dataset, teacher=teacher)
    assert (first["done"], first["failed"]) == (1, 1)
    assert "not text" in reasons_by_mode(first)["garbageonce"]

    second = distill_dataset(dataset, teacher=teacher)
    assert (second["done"], second["failed"], second["cached"], second["calls"]) == (1, 0, 1, 1)
    assert fake.count("ok") == 1 and fake.count("garbageonce") == 2
    assert len(read_rows(dataset / "distilled" / "train.jsonl")) == 2


def test_an_interrupted_run_resumes_from_the_cache(tmp_path, fake):
    dataset = make_dataset(tmp_path / "ds", ["ok 1", "ok 2", "ok 3", "ok 4"])
    teacher = fake_settings(fake, concurrency=1)

    def crash(progress: dict[str, Any]) -> None:
        if progress["finished"] >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill_dataset(dataset, teacher=teacher, on_progress=crash)
    assert len(fake.requests) == 2
    assert len(cache_files(dataset)) == 2
    stopped = json.loads((dataset / "distilled" / SUMMARY_FILENAME).read_text())
    assert (stopped["done"], stopped["not_asked"]) == (2, 2)

    resumed = distill_dataset(dataset, teacher=teacher)
    assert (resumed["cached"], resumed["done"], resumed["calls"]) == (2, 2, 2)
    assert len(fake.requests) == 4  # each pair was asked exactly once over both runs
    assert len(read_rows(dataset / "distilled" / "train.jsonl")) == 4


def test_a_bad_key_stops_the_run_without_printing_it(tmp_path, fake):
    dataset = make_dataset(tmp_path / "ds", [f"unauthorized {i}" for i in range(6)])

    with pytest.raises(ApplicationError) as caught:
        distill_dataset(dataset, teacher=fake_settings(fake, concurrency=2))

    message = caught.value.message
    assert "Distillation stopped" in message and "HTTP 401" in message and "API key" in message
    assert SECRET not in message
    assert len(fake.requests) <= 2  # the calls in flight; nothing new after the first 401
    summary = json.loads((dataset / "distilled" / SUMMARY_FILENAME).read_text())
    assert "HTTP 401" in summary["aborted"] and summary["not_asked"] >= 4
    assert SECRET not in json.dumps(summary)
    assert cache_files(dataset) == []


def test_distill_command(tmp_path, fake, settings, monkeypatch):
    settings.TEACHER_ENGINE = "openai"
    settings.TEACHER_API_KEY = ""
    settings.TEACHER_RETRY_BACKOFF = 0.01
    settings.TEACHER_MAX_RETRIES = 1
    settings.TEACHER_TIMEOUT = 5.0
    monkeypatch.setenv("MY_TEACHER_KEY", SECRET)
    dataset = make_dataset(tmp_path / "ds", ["think", "separate"], ["refusal"])
    out, err = io.StringIO(), io.StringIO()

    args = ["--dataset", str(dataset), "--teacher-url", fake.url + "/", "--teacher-model", "fake-r1"]
    call_command(
        "distill", *args, "--teacher-key-env", "MY_TEACHER_KEY", "--concurrency", "2", "--max-tokens", "64",
        stdout=out, stderr=err,
    )  # fmt: skip

    summary = json.loads(out.getvalue())
    assert (summary["done"], summary["failed"], summary["teacher"]["model"]) == (2, 1, "fake-r1")
    assert summary["teacher"]["max_tokens"] == 64 and summary["concurrency"] == 2
    assert "refused" in summary["failures"][0]["reason"]
    assert "distill: 3/3 pairs (2 new, 0 cached, 1 failed" in err.getvalue()
    assert {r["auth"] for r in fake.requests} == {f"Bearer {SECRET}"}
    assert SECRET not in out.getvalue() + err.getvalue()
    assert len(read_rows(dataset / "distilled" / "train.jsonl")) == 2

    # --limit and --out; the cache is shared, so nothing is asked again.
    out = io.StringIO()
    call_command(
        "distill", *args, "--limit", "1", "--out", str(tmp_path / "one"), stdout=out, stderr=io.StringIO()
    )
    again = json.loads(out.getvalue())
    assert (again["pairs"], again["cached"], again["calls"]) == (1, 1, 0)
    assert len(read_rows(tmp_path / "one" / "train.jsonl")) == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset", "/nonexistent/ds"], "No such dataset folder"),
        (["--teacher-key-env", "MESU_NO_SUCH_VAR"], "MESU_NO_SUCH_VAR: that environment variable is not set"),
        (["--concurrency", "0"], "concurrency must be at least 1"),
        (["--teacher-url", "ftp://example.com"], "http(s) URL"),
        (["--limit", "-1"], "--limit must not be negative"),
    ],
)
def test_distill_command_errors(tmp_path, extra, message, monkeypatch):
    monkeypatch.delenv("MESU_NO_SUCH_VAR", raising=False)
    dataset = make_dataset(tmp_path / "ds", ["ok"])
    args = ["--dataset", str(dataset), "--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "m"]
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("distill", *args, *extra, stdout=io.StringIO(), stderr=io.StringIO())


def test_distill_command_on_a_folder_that_is_no_dataset(tmp_path, fake):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CommandError, match="has no train.jsonl"):
        call_command(
            "distill", "--dataset", str(tmp_path / "empty"), "--teacher-url", fake.url, stdout=io.StringIO()
        )
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.jsonl").write_text('{"prompt": [], "answer": "x"}\n')
    with pytest.raises(CommandError, match="train.jsonl line 1 is not a training pair: missing book, k"):
        call_command("distill", "--dataset", str(bad), "--teacher-url", fake.url, stdout=io.StringIO())
    assert fake.requests == []


# ---------------------------------------------------------------------------------------------
# Real teachers: the vLLM CPU server and the in-process engine, on the real SmolLM2


BOOKS = {
    "salt_road.md": "# The Salt Road\n\nTwo sisters cross a desert of salt to find their father.\n\n"
    "## Chapter 1: The Well\n\nMira lowered the bucket and heard it hit stone. The well was dry.\n\n"
    "## Chapter 2: Dawn\n\nThey left at dawn with two skins of water and their father's map.\n\n"
    "## Chapter 3: The Glare\n\nBy noon the salt was a mirror and Lio walked with her eyes shut.\n",
    "ferry.md": "# The Last Ferry\n\nAn old ferryman's final crossing.\n\n"
    "## Chapter 1: Fog\n\nThe fog came in before the last passengers did.\n\n"
    "## Chapter 2: The Far Bank\n\nOn the far bank a lantern swung, though no one held it.\n",
}


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    books = tmp_path / "books"
    books.mkdir()
    for name, text in BOOKS.items():
        (books / name).write_text(text, encoding="utf-8")
    result = build_dataset(books_dir=books, out_dir=tmp_path / "ds", count_tokens=words, budget_tokens=1000)
    assert result["train"] + result["test"] == 3  # 2 pairs of the salt road, 1 of the ferry
    return tmp_path / "ds"


def check_real_rows(dataset: Path, expected: int) -> None:
    rows = [r for split in ("train", "test") for r in read_rows(dataset / "distilled" / f"{split}.jsonl")]
    assert len(rows) == expected
    for row in rows:
        assert row["reasoning"].startswith(REASONING_START + "\n") and row["reasoning"].endswith(
            REASONING_END
        )
        inner = row["reasoning"][len(REASONING_START) : -len(REASONING_END)].strip()
        assert inner and SOLUTION_START not in inner
        parsed = parse_output(row["completion"])
        assert parsed.format_ok and parsed.text == row["answer"].strip()
        assert row["output_chapter"] == row["answer"]
        assert row["existing_chapters"].startswith("## Chapter 0")


@pytest.mark.vllm
@pytest.mark.slow
def test_distill_against_the_real_vllm_server(tiny_dataset, vllm_server):
    # Greedy and 24 new tokens: quick on 2 cores, and the same answer every time.
    teacher = TeacherSettings(
        base_url=vllm_server,
        model="smollm2",
        timeout=120.0,
        max_retries=1,
        backoff=0.05,
        max_tokens=24,
        temperature=0.0,
        concurrency=2,
    )

    first = distill_dataset(tiny_dataset, teacher=teacher)

    assert first["failures"] == [] and first["done"] == 3 and first["cached"] == 0
    assert first["calls"] == 3
    assert first["tokens"]["prompt"] > 0 and first["tokens"]["completion"] > 0
    assert first["tokens"]["completion"] <= 3 * 24
    check_real_rows(tiny_dataset, 3)
    assert len(cache_files(tiny_dataset)) == 3

    second = distill_dataset(tiny_dataset, teacher=teacher)
    assert (second["done"], second["cached"], second["calls"], second["tokens"]["total"]) == (0, 3, 0, 0)
    check_real_rows(tiny_dataset, 3)


@pytest.mark.slow
def test_distill_with_the_local_engine(tiny_dataset, local_engine):
    teacher = TeacherSettings(engine="local", max_tokens=16, temperature=0.0, concurrency=1)

    summary = distill_dataset(tiny_dataset, teacher=teacher, limit=1)

    assert summary["failures"] == [] and summary["done"] == 1
    assert summary["teacher"]["model"] == "local:smollm2"
    assert summary["tokens"]["prompt"] > 0 and 0 < summary["tokens"]["completion"] <= 16
    check_real_rows(tiny_dataset, 1)


def test_distill_reuse_takes_an_earlier_runs_reasoning_and_asks_no_teacher(tmp_path):

    dataset = make_dataset(tmp_path / "ds", ["a", "b"], ["c"])
    reasoning = tmp_path / "distilled-reasoning.jsonl.gz"
    with gzip.open(reasoning, "wt", encoding="utf-8") as fh:
        # tagged (as distill writes it) and plain; test-c has none and is left out
        fh.write(
            json.dumps({"book": "train-a", "k": 1, "reasoning": tag_reasoning("Open at dawn.")}) + "\n\n"
        )
        fh.write(json.dumps({"book": "train-b", "k": 1, "reasoning": "The salt is the clue."}) + "\n")
        fh.write(json.dumps({"book": "train-b", "k": 2, "reasoning": "Another chapter's plan."}) + "\n")
    out = io.StringIO()
    call_command(
        "distill",
        "--dataset",
        str(dataset),
        "--reuse",
        str(reasoning),
        "--reused-teacher",
        "qwen",
        stdout=out,
    )
    summary = json.loads(out.getvalue())
    assert (summary["pairs"], summary["reused"], summary["missing"]) == (3, 2, 1)
    assert summary["splits"] == {"train": {"rows": 2, "written": 2}, "test": {"rows": 1, "written": 0}}
    rows = read_rows(dataset / "distilled" / "train.jsonl")
    assert [r["reasoning"] for r in rows] == [
        tag_reasoning("Open at dawn."),
        tag_reasoning("The salt is the clue."),
    ]
    parsed = parse_output(rows[1]["completion"])
    assert parsed.format_ok and parsed.text.startswith("[mode:b]") and rows[1]["teacher"] == "qwen"
    assert read_rows(dataset / "distilled" / "test.jsonl") == []
    assert not cache_files(dataset)

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"book": "train-a", "k": "one", "reasoning": "x"}\n', encoding="utf-8")
    with pytest.raises(CommandError, match=r"bad.jsonl, line 1: not a reasoning row"):
        call_command("distill", "--dataset", str(dataset), "--reuse", str(bad), stdout=io.StringIO())
    binary = tmp_path / "binary.gz"
    binary.write_bytes(b"\x00\xff not gzip")
    with pytest.raises(CommandError, match="cannot be read as gzipped UTF-8 JSON lines"):
        call_command("distill", "--dataset", str(dataset), "--reuse", str(binary), stdout=io.StringIO())
