"""Benchmark: what the writer writes, against issue 14's goals, on the two sample stories.

    .venv/bin/python bench/writer_quality.py [--base-url http://127.0.0.1:8001/v1 | --port 8013]
        [--db mesu_bench_writer] [--keep] [--no-local] [--browser-runs 5] [--json var/bench/writer_quality.json]

1. Data: its own database (--db; dropped, created, migrated, dropped at the end unless --keep), seeded as
   `./dev up` seeds the dev one (seed_demo: the two sample stories and the three demo brands), with both
   stories opted in to placements.
2. Requests through the writer's own services (`generation_request_create` + `generation_request_run`,
   what the Celery task and `generate_next` run), 3 options of 512 chapter tokens, SmolLM2-135M on the
   default CPU setup (the vLLM CPU server of scripts/vllm_server.sh, started here unless --base-url
   answers), per story:
   - old decoding (one phase, no repetition penalty: the defaults before issue 14), plain and branded
     with the brief in the prompt (the old placement);
   - new decoding (the settings' defaults: two phases, repetition_penalty 1.1), plain, branded with the
     brief in the prompt (BRAND_PLACEMENT_METHOD=brief) and branded by write-then-place (the default);
   - new decoding on the in-process engine (`local`), plain (--no-local skips it: ~4 min a story).
   Per option: format_ok, repeated-4-gram share, longest repeat, words; branded: named (the chapter
   names its asset by an exact term), the placed text's ROUGE-L and BERTScore against its draft, banned
   themes hit, mentions against the brand's cap. The human chapters' own repetition is measured too.
3. The click (--browser-runs N, 0 skips it): gunicorn and a Celery worker on the same database and vLLM
   server, Chromium (Playwright, Debian's binary) logged in as the demo author; on "The Lighthouse
   Keeper's Daughter" (opted in: a branded request), "Ask the AI writer" for 3 options, timed from the
   click to the page showing the finished request; the median of N.

Prints the tables, writes every option (text, draft, reasoning, numbers) to --json, and appends a dated
section to docs/benchmarks.md (bench/report.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Playwright's sync API runs an event loop in this thread; the ORM reads here are plain and short.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mesu_web.settings")
os.environ.setdefault("DJANGO_DEBUG", "1")  # a dev run: the settings then need no production secrets


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--base-url", default="", help="a running vLLM server's /v1 root (default: start one)"
    )
    parser.add_argument("--port", type=int, default=8013, help="port of the vLLM server started here")
    parser.add_argument("--db", default="mesu_bench_writer", help="the benchmark's own database")
    parser.add_argument("--redis-db", type=int, default=11, help="Redis database of the browser run's worker")
    parser.add_argument("--keep", action="store_true", help="keep the database at the end")
    parser.add_argument("--no-local", action="store_true", help="skip the in-process engine")
    parser.add_argument("--configs", default="", help="comma-separated configuration keys (default: all)")
    parser.add_argument("--browser-runs", type=int, default=5, help="timed clicks in Chromium (0: none)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of every configuration on every story (more options to count)"
    )
    parser.add_argument(
        "--stories", default="", help="comma-separated parts of the sample stories' titles to run (default: both)"
    )
    parser.add_argument("--web-port", type=int, default=8093)
    parser.add_argument("--json", type=Path, default=ROOT / "var" / "bench" / "writer_quality.json")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-report", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument(
        "--adapter",
        type=Path,
        default=None,
        help="a LoRA folder (e.g. training/shipped/mesu-writer-v3) registered and made the active writer "
        "for every request (default: none; the base model)",
    )
    return parser.parse_args()


ARGS = parse_args() if __name__ == "__main__" else argparse.Namespace(db="mesu_bench_writer", redis_db=11)
# The database and the broker are chosen before Django reads its settings (the worker and gunicorn of
# the browser run inherit them).
os.environ["POSTGRES_DB"] = ARGS.db
os.environ["REDIS_URL"] = f"redis://127.0.0.1:6379/{ARGS.redis_db}"
if getattr(ARGS, "adapter", None) is not None:  # the bench's own adapter folder, shared with its app processes
    os.environ["WRITER_ADAPTER_DIR"] = tempfile.mkdtemp(prefix="bench-adapters-")

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402
from benchdb import drop_database, recreate_database  # noqa: E402 (bench/benchdb.py: this script's folder is on sys.path)
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import override_settings  # noqa: E402
from report import append_report  # noqa: E402 (bench/report.py: this script's folder is on sys.path)
from report import machine_info as base_machine_info  # noqa: E402

from brands.demo import seed_brands  # noqa: E402
from brands.matching import banned_themes_hit  # noqa: E402
from brands.placements import find_mentions  # noqa: E402
from writer import services  # noqa: E402
from writer.demo import DEMO_STORIES, DEMO_USERS, seed_demo  # noqa: E402
from writer.engines.vllm_server import start_vllm_server, stop_process_group  # noqa: E402
from writer.models import Chapter, GenerationOption, GenerationRequest, Story  # noqa: E402
from writer.quality import text_quality  # noqa: E402

N_OPTIONS = 3
CHAPTER_TOKENS = 512
OLD_DECODING = {"WRITER_REASONING_TOKENS": 0, "WRITER_REPETITION_PENALTY": 1.0}  # before issue 14
GOALS = {
    "repetition": 0.05,  # repeated-4-gram share of every option
    "named": 0.95,  # branded options that name their asset
    "rouge_l": 0.9,  # placed text against its draft
    "branded_time_ratio": 1.2,  # a branded request against a plain one, same story
    "click_seconds": 90.0,  # 3 options ready after the click, median
}


@dataclass(frozen=True)
class Config:
    key: str
    label: str
    engine: str
    overrides: dict = field(default_factory=dict)
    brands: bool = False


CONFIGS = (
    Config("old-plain", "old decoding, plain", "vllm", OLD_DECODING),
    Config(
        "old-brief",
        "old decoding, brand in the prompt",
        "vllm",
        {**OLD_DECODING, "BRAND_PLACEMENT_METHOD": "brief"},
        True,
    ),
    Config("new-plain", "new decoding, plain", "vllm"),
    Config(
        "new-brief", "new decoding, brand in the prompt", "vllm", {"BRAND_PLACEMENT_METHOD": "brief"}, True
    ),
    Config(
        "new-place-passage",
        "new decoding, write then rewrite the passage",
        "vllm",
        {"BRAND_PLACEMENT_METHOD": "rewrite", "BRAND_PLACEMENT_STYLE": "passage"},
        True,
    ),
    Config(
        "new-place",
        "new decoding, write then add a sentence (default)",
        "vllm",
        {"BRAND_PLACEMENT_METHOD": "rewrite", "BRAND_PLACEMENT_STYLE": "sentence"},
        True,
    ),
    Config("local-plain", "new decoding, plain, local engine", "local"),
)
CLICK = Config("click", "the click in Chromium (defaults: write then add a sentence)", "vllm", brands=True)


@dataclass
class OptionResult:
    story: str
    config: str
    index: int
    format_ok: bool
    repetition: float
    longest_repeat: int
    words: int
    tokens: int
    warning: str
    brand: str | None
    asset: str | None
    named: bool | None  # branded: the chapter names its asset by an exact term
    mentions: int
    cap: int | None
    banned: list[str]
    placement_found: bool
    review_status: str
    note: str
    rouge_l: float | None
    bertscore: float | None
    text: str
    draft: str
    reasoning: str


@dataclass
class RequestResult:
    story: str
    config: str
    seconds: float
    status: str
    error: str
    brand_note: str  # what matching said (the brands matched, or why none)
    options: list[OptionResult]


# --- The database --------------------------------------------------------------------------------


def seed(base_url: str) -> list[Story]:
    call_command("migrate", verbosity=0)
    seed_demo()
    if ARGS.adapter is not None:  # the trained writer, active: what a new install's ./dev up gives
        from training.services import adapter_activate, adapter_register

        with override_settings(WRITER_BASE_URL=base_url):  # loaded into the bench's server
            adapter = adapter_register(name=f"bench-{ARGS.adapter.name}", source_dir=ARGS.adapter)
            adapter_activate(adapter=adapter)
        print(f"  active writer: {adapter.name} ({ARGS.adapter})", flush=True)
    author = get_user_model().objects.get(username="ava")
    stories = [Story.objects.get(owner=author, title=spec["title"]) for spec in DEMO_STORIES]
    seed_brands(get_user_model().objects.get(username="bree"), opt_in_stories=stories)
    return stories


# --- Requests --------------------------------------------------------------------------------------


def option_result(story: Story, config: Config, option: GenerationOption) -> OptionResult:
    quality = text_quality(option.text)
    brand, asset = option.brand, option.asset
    terms = list(asset.terms) if asset else []
    exact = [m for m in find_mentions(option.text, terms) if m.exact] if terms else []
    sim = option.placement_similarity or {}
    return OptionResult(
        story=story.title,
        config=config.key,
        index=option.index,
        format_ok=option.format_ok,
        repetition=quality.repetition,
        longest_repeat=quality.longest_repeat,
        words=quality.words,
        tokens=option.tokens,
        warning=option.warning,
        brand=brand.name if brand else None,
        asset=asset.name if asset else None,
        named=bool(exact) if brand else None,
        mentions=len(exact),
        cap=brand.max_placements_per_chapter if brand else None,
        banned=banned_themes_hit(text=option.text, themes=brand.banned_themes) if brand else [],
        placement_found=option.placement_found,
        review_status=option.review_status,
        note=option.placement_note,
        rouge_l=sim.get("rouge_l"),
        bertscore=sim.get("bertscore"),
        text=option.text,
        draft=option.draft,
        reasoning=option.reasoning,
    )


def run_request(story: Story, config: Config, base_url: str) -> RequestResult:
    overrides = {"WRITER_BASE_URL": base_url, "WRITER_MAX_NEW_TOKENS": CHAPTER_TOKENS, **config.overrides}
    with override_settings(**overrides):
        request = services.generation_request_create(
            story=story,
            user=story.owner,
            n=N_OPTIONS,
            engine=config.engine,
            use_brands=config.brands,
            enqueue=False,
        )
        started = time.monotonic()
        try:
            services.generation_request_run(request_id=request.pk)
        except Exception as exc:  # noqa: BLE001 (a failed request is a result: reported, not raised)
            services.generation_request_fail(request_id=request.pk, error=str(exc))
        seconds = time.monotonic() - started
    request.refresh_from_db()
    options = [
        option_result(story, config, o)
        for o in request.options.select_related("brand", "asset").order_by("index")
    ]
    result = RequestResult(story.title, config.key, seconds, request.status, request.error, request.brand_note, options)
    worst = max((o.repetition for o in options), default=0.0)
    named = [o.named for o in options if o.named is not None]
    print(
        f"  {story.title[:24]:24} {config.label:38} {seconds:6.1f} s  {request.status:9} "
        f"format {sum(o.format_ok for o in options)}/{len(options)}  worst rep {worst:.3f}"
        + (f"  named {sum(named)}/{len(named)}" if named else ""),
        flush=True,
    )
    return result


def human_repetition(stories: list[Story]) -> dict[str, tuple[float, float, int]]:
    """Per story: the mean and worst repeated-4-gram share of the author's own chapters, and their count."""
    out = {}
    for story in stories:
        shares = [text_quality(c.text).repetition for c in Chapter.objects.filter(story=story)]
        out[story.title] = (statistics.mean(shares), max(shares), len(shares))
    return out


# --- The click, in Chromium --------------------------------------------------------------------------


def start_app(port: int, base_url: str, log_dir: Path) -> list[subprocess.Popen]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env |= {"WRITER_BASE_URL": base_url, "WRITER_MAX_NEW_TOKENS": str(CHAPTER_TOKENS)}
    bin_dir = Path(sys.executable).parent
    procs = []
    for name, command in (
        (
            "worker",
            [
                str(bin_dir / "celery"),
                "-A",
                "mesu_web",
                "worker",
                "-Q",
                "generation,embeddings",
                "-c",
                "1",
                "-n",
                f"bench{port}@%h",
                "-l",
                "info",
            ],
        ),
        (
            "web",
            [
                str(bin_dir / "gunicorn"),
                "mesu_web.wsgi",
                "-b",
                f"127.0.0.1:{port}",
                "-w",
                "2",
                "--threads",
                "4",
                "--timeout",
                "60",
                "--no-control-socket",
            ],
        ),
    ):
        log = (log_dir / f"{name}.log").open("w")
        procs.append(
            subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        stop_app(procs)
        raise SystemExit(f"the web server did not answer; see {log_dir}/web.log")
    # The worker misses a ping sent before it has connected: ask again for up to a minute.
    deadline = time.monotonic() + 60
    while True:
        ping = subprocess.run(
            [str(bin_dir / "celery"), "-A", "mesu_web", "inspect", "ping", "-t", "5"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        if ping.returncode == 0:
            break
        if time.monotonic() > deadline:
            stop_app(procs)
            raise SystemExit(f"the Celery worker did not answer; see {log_dir}/worker.log")
    return procs


def stop_app(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def click_runs(url: str, runs: int) -> list[dict]:
    """Log in as the demo author, then `runs` times: open the lighthouse story, ask for 3 options, time
    the click until the page shows the finished request (htmx polling swaps in the result)."""
    from playwright.sync_api import expect, sync_playwright

    chromium = os.environ.get("MESU_CHROMIUM", "/usr/bin/chromium")
    password = next(u.password for u in DEMO_USERS if u.username == "ava")
    story = Story.objects.get(title=DEMO_STORIES[0]["title"])
    results = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=["--disable-dev-shm-usage"]
        )
        page = browser.new_page(base_url=url)
        page.set_default_timeout(30_000)
        page.goto("/accounts/login/")
        page.fill("#id_username", "ava")
        page.fill("#id_password", password)
        page.get_by_role("button", name="Log in").click()
        expect(page.locator(".topbar .who")).to_contain_text("ava")
        for run in range(runs):
            page.goto(story.get_absolute_url())
            page.select_option("#id_n", str(N_OPTIONS))
            started = time.monotonic()
            page.get_by_role("button", name="Ask the AI writer").click()
            done = page.locator("#request-body .progress-card")
            expect(page.locator("#request-body")).to_be_visible()
            expect(done).to_have_count(0, timeout=600_000)
            seconds = time.monotonic() - started
            request = GenerationRequest.objects.filter(story=story).order_by("-pk").first()
            shown = page.locator("#request-body article.option").count()
            results.append(
                {
                    "run": run + 1,
                    "seconds": round(seconds, 1),
                    "status": request.status,
                    "options_shown": shown,
                    "request": request.pk,
                    # The click's options count towards the placement goals (the default method and style).
                    "options": [
                        asdict(option_result(story, CLICK, o))
                        for o in request.options.select_related("brand", "asset").order_by("index")
                    ],
                }
            )
            print(f"  click {run + 1}: {seconds:.1f} s, {request.status}, {shown} options shown", flush=True)
        browser.close()
    return results


# --- The report ---------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def summary_rows(results: list[RequestResult]) -> list[str]:
    rows = [
        "| configuration | story | seconds | format_ok | repeated 4-grams, mean / worst | options over 0.05 "
        "| words, median | named | ROUGE-L vs draft, min | BERTScore vs draft, min | banned / over cap |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    labels = {c.key: c.label for c in CONFIGS}
    for r in results:
        opts = r.options
        reps = [o.repetition for o in opts]
        named = [o.named for o in opts if o.named is not None]
        rouge = [o.rouge_l for o in opts if o.rouge_l is not None]
        bert = [o.bertscore for o in opts if o.bertscore is not None]
        bad = sum(bool(o.banned) for o in opts) + sum(o.cap is not None and o.mentions > o.cap for o in opts)
        rows.append(
            f"| {labels[r.config]} | {r.story} | {r.seconds:.1f} | "
            f"{sum(o.format_ok for o in opts)} / {len(opts)}{'' if r.status == 'succeeded' else ' (' + r.status + ')'} | "
            f"{fmt(statistics.mean(reps) if reps else None)} / {fmt(max(reps) if reps else None)} | "
            f"{sum(x > GOALS['repetition'] for x in reps)} | "
            f"{statistics.median([o.words for o in opts]) if opts else '—'} | "
            f"{f'{sum(named)} / {len(named)}' if named else '—'} | {fmt(min(rouge) if rouge else None)} | "
            f"{fmt(min(bert) if bert else None)} | {bad if named else '—'} |"
        )
    return rows


def goals(results: list[RequestResult], clicks: list[dict], human: dict) -> list[str]:
    def opts(*keys: str) -> list[OptionResult]:
        return [o for r in results if r.config in keys for o in r.options]

    def times(key: str) -> dict[str, float]:  # story -> median seconds of its requests
        seconds: dict[str, list[float]] = {}
        for r in results:
            if r.config == key:
                seconds.setdefault(r.story, []).append(r.seconds)
        return {story: statistics.median(values) for story, values in seconds.items()}

    lines = ["| goal | measured | met |", "|---|---|---|"]
    for engine_keys, engine in (
        (("new-plain", "new-brief", "new-place-passage", "new-place"), "vllm"),
        (("local-plain",), "local"),
    ):
        o = opts(*engine_keys)
        if o:
            ok = sum(x.format_ok for x in o)
            lines.append(
                f"| format_ok 100 % ({engine}, new decoding) | {ok} / {len(o)} | {'yes' if ok == len(o) else 'no'} |"
            )
    new = opts("new-plain", "new-brief", "new-place-passage", "new-place", "local-plain")
    if new:
        worst = max(x.repetition for x in new)
        over = sum(x.repetition > GOALS["repetition"] for x in new)
        human_worst = max(v[1] for v in human.values())
        lines.append(
            f"| repeated-4-gram share <= 0.05, every option (new decoding) | worst {worst:.3f}; {over} of {len(new)} "
            f"over (the human chapters: worst {human_worst:.3f}) | {'yes' if over == 0 else 'no'} |"
        )
    placed = opts("new-place") + [OptionResult(**o) for c in clicks for o in c.get("options", [])]
    if placed:
        named = sum(bool(x.named) for x in placed)
        branded = [x for x in placed if x.named is not None]
        rouge = [x.rouge_l for x in placed if x.rouge_l is not None]
        bad = [x for x in branded if x.banned or (x.cap is not None and x.mentions > x.cap)]
        share = named / len(branded) if branded else 0.0
        lines.append(
            f"| asset named in >= 95 % of branded options (write then place; the bench's and the clicks' requests) "
            f"| {named} / {len(branded)} ({share:.0%}) "
            f"| {'yes' if share >= GOALS['named'] else 'no'} |"
        )
        lines.append(
            f"| placed text ROUGE-L >= 0.9 against its draft | min {fmt(min(rouge) if rouge else None)} over "
            f"{len(rouge)} placed | {'yes' if rouge and min(rouge) >= GOALS['rouge_l'] else 'no'} |"
        )
        lines.append(
            f"| no banned theme, at most the cap | {len(bad)} options break one | {'yes' if not bad else 'no'} |"
        )
    plain, place = times("new-plain"), times("new-place")
    ratios = {s: place[s] / plain[s] for s in place if s in plain and plain[s] > 0}
    if ratios:
        worst = max(ratios.values())
        lines.append(
            "| branded request <= 1.2x an unbranded one, same story (medians) | "
            + ", ".join(f"{s}: {v:.2f}x" for s, v in ratios.items())
            + f" | {'yes' if worst <= GOALS['branded_time_ratio'] else 'no'} |"
        )
    if clicks:
        median = statistics.median(c["seconds"] for c in clicks)
        lines.append(
            f"| 3 options of 512 tokens <= 90 s after the click, Chromium, median of {len(clicks)} | median {median:.1f} s "
            f"(runs: {', '.join(str(c['seconds']) for c in clicks)}) | {'yes' if median <= GOALS['click_seconds'] else 'no'} |"
        )
    return lines


def excerpts(options: list[OptionResult], limit: int = 4) -> list[str]:
    """What a reviewer reads: a few placed passages, the draft's words before the change (in italics)
    and the change, as written and as placed."""
    lines = []
    for o in [o for o in options if o.rouge_l is not None][:limit]:
        start = next((i for i, (a, b) in enumerate(zip(o.draft, o.text, strict=False)) if a != b), 0)
        tail = next((i for i, (a, b) in enumerate(zip(o.draft[::-1], o.text[::-1], strict=False)) if a != b), 0)
        tail = min(tail, len(o.draft) - start, len(o.text) - start)
        context = " ".join(o.draft[max(0, start - 200) : start].split())
        before, after = o.draft[start : len(o.draft) - tail], o.text[start : len(o.text) - tail]
        lines += [
            f"- {o.story} ({o.config}), option {o.index + 1} ({o.asset}; ROUGE-L {fmt(o.rouge_l)}, "
            f"BERTScore {fmt(o.bertscore)}):",
            f'  - as written: "…*{context}* {" ".join(before.split())[:300]}…"',
            f'  - as placed: "…*{context}* {" ".join(after.split())[:300]}…"',
        ]
    return lines


def report(
    results: list[RequestResult], clicks: list[dict], human: dict, machine: dict, started: dt.datetime
) -> str:
    machine_line = ", ".join(f"{k} {v}" for k, v in machine.items())
    lines = [
        f"## {started:%Y-%m-%d %H:%M} UTC: what the writer writes, issue 14's goals (bench/writer_quality.py)",
        "",
        f"Machine: {machine_line}. SmolLM2-135M-Instruct (the packaged GGUF)"
        + (f" with the LoRA {ARGS.adapter} active" if getattr(ARGS, "adapter", None) else "")
        + " on the vLLM CPU server "
        "(`scripts/vllm_server.sh`) and the in-process engine; the two sample stories, both opted in to "
        f"placements (the demo brands); {N_OPTIONS} options of {CHAPTER_TOKENS} chapter tokens per request, "
        "through the writer's services as the Celery task runs them. Old decoding = one phase, no repetition "
        "penalty (before issue 14); new = the defaults (two phases with 128 reasoning tokens, "
        "repetition_penalty 1.1). Placement: "
        f"BRAND_PLACEMENT_STYLE={settings.BRAND_PLACEMENT_STYLE}, {settings.BRAND_PLACEMENT_CANDIDATES} candidates "
        f"a round, {settings.BRAND_PLACEMENT_ROUNDS} rounds; WRITER_MIN_CHAPTER_WORDS={settings.WRITER_MIN_CHAPTER_WORDS}. "
        f"{getattr(ARGS, 'repeat', 1)} round(s) of each configuration on each story run. Every option is in the JSON "
        "the script writes.",
        "",
        "### Goals",
        "",
        *goals(results, clicks, human),
        "",
        "### Per request",
        "",
        *summary_rows(results),
        "",
        "The human chapters' own repeated-4-gram share: "
        + "; ".join(f"{t}: mean {m:.3f}, worst {w:.3f} ({n} chapters)" for t, (m, w, n) in human.items())
        + ".",
    ]
    notes = {r.story: r.brand_note for r in results if r.config == "new-place"}
    if notes:
        lines += ["", "Matching, per story: " + "; ".join(f"{t}: {n or '—'}" for t, n in notes.items())]
    placed = excerpts(
        [o for r in results if r.config == "new-place" for o in r.options]
        + [OptionResult(**o) for c in clicks for o in c.get("options", [])]
    )
    if placed:
        lines += ["", "### Placed passages, as a reviewer sees them", "", *placed]
    missed = [
        o
        for o in [o for r in results if r.config == "new-place" for o in r.options]
        + [OptionResult(**o) for c in clicks for o in c.get("options", [])]
        if o.named is False
    ]
    if missed:
        lines += ["", "### Branded options that do not name their asset, and why", ""]
        lines += [f"- {o.story} ({o.config}), option {o.index + 1}, {o.words} words: {o.note or '—'}" for o in missed]
    if clicks:
        lines += [
            "",
            "The click: gunicorn (2 x 4) and one Celery worker on the benchmark's database, the same vLLM server; "
            'Chromium logged in as the demo author opens "The Lighthouse Keeper\'s Daughter" (a branded request: '
            'write then place) and clicks "Ask the AI writer" for 3 options; timed until htmx swaps in the '
            "finished request.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    started = dt.datetime.now(dt.UTC)
    import torch

    torch.set_num_threads(1)
    machine = {**base_machine_info(), "load average at start": f"{os.getloadavg()[0]:.1f}"}
    server = None
    base_url = ARGS.base_url
    if not base_url:
        base_url = f"http://127.0.0.1:{ARGS.port}/v1"
        from writer.model_files import prepare_model

        model_dir = prepare_model(settings.WRITER_MODEL_PATH)
        log = Path(tempfile.gettempdir()) / f"bench-vllm-{ARGS.port}.log"
        print(f"starting the vLLM CPU server on port {ARGS.port} (log {log})", flush=True)
        server, seconds = start_vllm_server(Path(model_dir), ARGS.port, log)
        print(f"  up in {seconds:.0f} s", flush=True)
    recreate_database(ARGS.db)
    procs: list[subprocess.Popen] = []
    try:
        stories = seed(base_url)
        results = []
        chosen = [
            c
            for c in CONFIGS
            if not (c.engine == "local" and ARGS.no_local) and not (ARGS.configs and c.key not in ARGS.configs.split(","))
        ]
        wanted = [part.strip().lower() for part in ARGS.stories.split(",") if part.strip()]
        run_on = [s for s in stories if not wanted or any(part in s.title.lower() for part in wanted)]
        for _ in range(ARGS.repeat):  # the configurations take turns, so a busier spell hits them alike
            for config in chosen:
                for story in run_on:
                    results.append(run_request(story, config, base_url))
        human = human_repetition(stories)
        clicks = []
        if ARGS.browser_runs:
            log_dir = Path(tempfile.mkdtemp(prefix="bench-app-"))
            print(f"starting gunicorn and a worker on port {ARGS.web_port} (logs {log_dir})", flush=True)
            procs = start_app(ARGS.web_port, base_url, log_dir)
            clicks = click_runs(f"http://127.0.0.1:{ARGS.web_port}", ARGS.browser_runs)
        machine["load average at end"] = f"{os.getloadavg()[0]:.1f}"
        ARGS.json.parent.mkdir(parents=True, exist_ok=True)
        ARGS.json.write_text(
            json.dumps(
                {
                    "started": started.isoformat(),
                    "machine": machine,
                    "requests": [asdict(r) for r in results],
                    "clicks": clicks,
                    "human": human,
                },
                indent=1,
                ensure_ascii=False,
            )
        )
        text = report(results, clicks, human, machine, started)
        print(text)
        if not ARGS.no_report:
            append_report(ARGS.report, text)
    finally:
        stop_app(procs)
        if server is not None:
            stop_process_group(server)
        if not ARGS.keep:
            drop_database(ARGS.db)


if __name__ == "__main__":
    main()
