"""Benchmark: the story page, the reader's pages, the review queue, the live text and the authors' tools
under 50 concurrent clients.

    nice -n 10 .venv/bin/python bench/web_load.py [--stories 10000] [--options 100000] [--pending 1000]
        [--clients 50] [--duration 60] [--think 1.0] [--saturation 20] [--wait-load 1.5] [--wait-max 1200]
        [--pages story,reader,queue,live,tools] [--workers 2 --threads 4] [--db mesu_load] [--reuse] [--keep]
        [--profile-only [--cprofile 25]]

1. Data, in its own database (--db, default mesu_load; dropped and created again, migrated with
   `manage.py migrate`, dropped at the end unless --keep; --reuse keeps a database built before):
   --stories stories of 1,000 authors (70 % published, 1-8 chapters; 10 of them long: 300 chapters and
   600 requests each), --options generation options across author requests (3 options) and readers'
   personalised requests (1 option), --pending options waiting in the review queue of 5 brands
   (2 managers each), 300 sponsored chapters (an approved placement accepted as a chapter) and readers'
   approved placements; the pages of issue 16: story bible entries (60 for each long story, 4 for 1 in 10
   others), versions of options (2-4 for the options of 1 in 4 of the long stories' author requests and 1 in
   20 others') and of 1 in 10 of the long stories' chapters, 30 passage changes per long story, and readers'
   stars for 2 in 3 of their personalised chapters. Loaded with COPY, every column from the models' own fields.
2. The server: gunicorn on loopback as `./dev up` runs it (`mesu_web.wsgi`, 2 workers x 4 threads,
   gthread: one process per core, threads to overlap database waits), but with production settings:
   DJANGO_DEBUG=0, a random DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS, DJANGO_SECURE_COOKIES=false (plain
   HTTP on loopback), static files collected and served by WhiteNoise; --no-control-socket, so that a
   dev server's gunicorn control socket is left alone.
3. The load: --clients asyncio + httpx clients per page, each with its own logged-in session (made
   with Django's session store, as a login does) and its own keep-alive connection, each waiting a
   think time (uniform 0.5-1.5 x --think seconds) between pages, as readers do; 5 s of warm-up, then
   --duration seconds measured per page. Latency is the client's: request sent to body read. An error
   is an exception, a status other than 200, or a page without the user's name in its header (a
   logged-out page). Also measured: CPU per page of gunicorn's processes and of the PostgreSQL
   backends serving them (from /proc), and what other processes took meanwhile. Then --saturation
   seconds per page with no think time: the throughput ceiling.
4. The profile: a few pages of each kind once each, in this process (Django's test client, same
   settings): queries, SQL ms, view ms; EXPLAIN ANALYZE of every SELECT they ran, the slowest kept.
   --profile-only does only this (no server, no load, nothing appended), printing the view ms per page
   kind; with --cprofile N, also the N functions that took most time in those views (cProfile).

Appends a dated section to docs/benchmarks.md (bench/report.py). Each page's run waits (up to
--wait-max seconds in all) for the 1-minute load average to drop below --wait-load: other work on this
machine shares its 2 cores; the report gives the load average at the start of and during each run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import functools
import os
import pstats
import random
import resource
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL_P95_MS = 100.0
PASSWORD = "load-test-password"  # every generated user's (one hash, computed once)
AUTHORS_PER_STORY = 10  # stories per author
READERS_PER_AUTHOR = 2
MANAGERS = 5
BRANDS = 5
ASSETS_PER_BRAND = 3
BIG_STORIES = 10  # long stories: the story page's worst case
BIG_CHAPTERS = 300
BIG_REQUESTS = 600  # half the author's, half readers'
SPONSORED_CHAPTERS = 300
BIG_BIBLE = 60  # story bible entries of each long story (1 in 10 proposed by the writer, 1 in 10 rejected) ...
SMALL_BIBLE = 4  # ... and of 1 in 10 other stories
BIG_PASSAGE_EDITS = 30  # passage tools' changes per long story: 20 of chapters, 10 of options
WARMUP_S = 5.0
PROFILE_URLS = 12  # pages per scenario profiled in-process
HTTP_TIMEOUT_S = 30.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="mesu_load", help="the benchmark's own database (dropped and created)")
    parser.add_argument("--stories", type=int, default=10_000)
    parser.add_argument("--options", type=int, default=100_000)
    parser.add_argument("--pending", type=int, default=1_000, help="options waiting in the review queue")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients per page")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds measured per page")
    parser.add_argument("--think", type=float, default=1.0, help="mean think time between a client's pages (s)")
    parser.add_argument("--saturation", type=float, default=20.0, help="seconds per page with no think time (0: skip)")
    parser.add_argument("--pages", default="story,reader,queue,live,tools", help="which pages to load, comma-separated")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (dev: 2)")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker (dev: 4)")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--wait-load", type=float, default=1.5, help="wait for a 1-minute load average below this")
    parser.add_argument("--wait-max", type=float, default=1200.0, help="... for at most this many seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true", help="use the database a --keep run left")
    parser.add_argument("--keep", action="store_true", help="keep the database at the end")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--profile-only", action="store_true", help="only the in-process profile, printed")
    parser.add_argument("--cprofile", type=int, default=0, help="with --profile-only: the N costliest functions")
    args = parser.parse_args()
    if args.db in {"mesu", "postgres", "template0", "template1"} or args.db.startswith("test_"):
        parser.error(f"--db {args.db} is not the benchmark's own database")
    big_options = BIG_STORIES * (BIG_REQUESTS // 2) * 4  # the author's 3 options + a reader's 1, per pair
    if args.stories < 10 * BIG_STORIES or args.pending < 2 or args.options < big_options + 9 * (
        args.pending + SPONSORED_CHAPTERS
    ):
        parser.error(f"too small: at least {10 * BIG_STORIES} stories, 2 pending options, and options enough for "
                     f"the long stories ({big_options:,}) and 9 per pending or sponsored one")
    return args


ARGS = parse_args() if __name__ == "__main__" else None

# Production settings, for this process (sessions, the profile) and for gunicorn alike: set before Django
# reads them. The secret signs the sessions made here, so both must share it.
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "mesu_web.settings",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SECURE_COOKIES": "false",  # plain HTTP on loopback: no https redirect, no secure-only cookies
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
)
if ARGS is not None:
    os.environ["POSTGRES_DB"] = ARGS.db

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402
import psycopg  # noqa: E402
from benchdb import conninfo, database_exists, drop_database, recreate_database  # noqa: E402 (bench/benchdb.py: this script's folder is on sys.path)
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.auth.hashers import make_password  # noqa: E402
from django.contrib.sessions.backends.db import SessionStore  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import JSONField, Model  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.urls import resolve  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.types.json import Jsonb  # noqa: E402
from report import append_report  # noqa: E402 (bench/report.py: this script's folder is on sys.path)
from report import machine_info as base_machine_info  # noqa: E402

from brands.models import Brand, BrandAsset, PlacementDecision  # noqa: E402
from brands.selectors import review_queue_for_manager  # noqa: E402
from brands.views import QUEUE_PAGE_SIZE  # noqa: E402
from mesu_web.notifications.models import Notification  # noqa: E402
from writer.models import (  # noqa: E402
    Chapter,
    ChapterVersion,
    GenerationOption,
    GenerationRequest,
    OptionRating,
    OptionVersion,
    PassageEdit,
    ReviewStatus,
    Story,
    StoryBibleEntry,
)
from writer.prompting import REASONING_END, REASONING_START, SOLUTION_END, SOLUTION_START  # noqa: E402

User = get_user_model()

# --- Generated text ---------------------------------------------------------------------------------

HEROES = ["Mara", "Kenji", "Ines", "Tom", "Aiko", "Leo", "Zara", "Felix", "Nadia", "Oren", "Lou", "Pip"]
VERBS = [
    "walked along", "looked across", "ran toward", "remembered", "sketched", "argued about", "waited by",
    "listened to", "counted the lights of", "sang softly near", "lost her way in", "laughed at",
]
PLACES = [
    "the harbour wall", "the night market", "the old lighthouse", "the rain-soaked square", "the school roof",
    "the mountain hut", "the quiet library", "the ruined chapel", "the ferry deck", "the robot repair shop",
    "the desert road", "the cherry orchard",
]
CODAS = [
    "and the wind smelled of salt", "while the sky turned violet", "as if nothing had happened",
    "because tomorrow would be different", "and nobody said a word", "until the bells rang twice",
    "though her hands still shook", "and the city hummed below",
]
GENRES = ["slice of life", "fantasy", "mystery", "romance", "science fiction", "adventure", "horror", "comedy"]
TAGS = ["seaside", "friendship", "magic", "school", "detective", "space", "found family", "slow burn", "ghosts"]
PRODUCTS = ["surfboard", "sparkling water", "sneakers", "headphones", "board game", "green tea", "scooter"]


def _paragraphs(rng: random.Random, count: int) -> list[str]:
    out = []
    for _ in range(count):
        sentences = [
            f"{rng.choice(HEROES)} {rng.choice(VERBS)} {rng.choice(PLACES)} {rng.choice(CODAS)}."
            for _ in range(rng.randint(3, 6))
        ]
        if rng.random() < 0.3:
            sentences.append(f"“{rng.choice(HEROES)}, wait,” {rng.choice(HEROES)} said. “Not *yet*.”")
        out.append(" ".join(sentences))
    return out


class Texts:
    """Chapter-like texts from a seeded pool of paragraphs (~330 characters each)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.pool = _paragraphs(rng, 600)

    def text(self, low: int, high: int) -> str:
        return "\n\n".join(self.rng.choices(self.pool, k=self.rng.randint(low, high)))

    def line(self) -> str:
        return self.rng.choice(self.pool).split(". ")[0] + "."


# --- PostgreSQL -------------------------------------------------------------------------------------


def copy_model(conn: psycopg.Connection, model: type[Model], rows: Iterable[dict], now: dt.datetime) -> int:
    """COPY `rows` into `model`'s table: every concrete column, a row's value or else the field's default
    (auto_now fields: `now`). A required column without a default that a row leaves out fails loudly."""
    fields = list(model._meta.concrete_fields)
    defaults = {}
    for f in fields:
        auto = getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)
        defaults[f.attname] = now if auto else f.get_default()
    json_columns = {f.attname for f in fields if isinstance(f, JSONField)}
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(model._meta.db_table), sql.SQL(", ").join(sql.Identifier(f.column) for f in fields)
    )
    count = 0
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            values = []
            for f in fields:
                value = row.get(f.attname, defaults[f.attname])
                values.append(Jsonb(value) if f.attname in json_columns and value is not None else value)
            copy.write_row(values)
            count += 1
    return count


def reset_sequences(conn: psycopg.Connection, models: Iterable[type[Model]]) -> None:
    for model in models:
        table = model._meta.db_table
        conn.execute(
            sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'id'), (SELECT coalesce(max(id), 1) FROM {}))").format(
                sql.Literal(table), sql.Identifier(table)
            )
        )


# --- The data set -----------------------------------------------------------------------------------


@dataclass
class Plan:
    """Who is who, by id: the users of each role, brands and assets."""

    authors: range
    readers: range
    managers: range
    brands: list[int]
    assets: dict[int, list[tuple[int, str]]]  # brand id -> [(asset id, term)]
    brand_managers: dict[int, list[int]]  # manager id -> brand ids


@dataclass
class Req:
    id: int
    story: int
    user: int
    kind: str
    n: int
    created: dt.datetime
    special: str = ""  # "failed", "pending", "sponsored_chapter", "reader_sponsored"
    brand: int = 0


def build_data(conn: psycopg.Connection, args: argparse.Namespace, now: dt.datetime) -> dict[str, float]:
    """Loads the whole data set with COPY; returns seconds per step."""
    rng = random.Random(args.seed)
    texts = Texts(rng)
    timings: dict[str, float] = {}
    n_authors = max(BIG_STORIES, args.stories // AUTHORS_PER_STORY)
    plan = Plan(
        authors=range(1, n_authors + 1),
        readers=range(n_authors + 1, n_authors + 1 + READERS_PER_AUTHOR * n_authors),
        managers=range(
            n_authors + 1 + READERS_PER_AUTHOR * n_authors, n_authors + 1 + READERS_PER_AUTHOR * n_authors + MANAGERS
        ),
        brands=list(range(1, BRANDS + 1)),
        assets={},
        brand_managers={},
    )

    def ago(days_low: float, days_high: float) -> dt.datetime:
        return now - dt.timedelta(seconds=rng.uniform(days_low * 86400, days_high * 86400))

    # Users and their roles: one password hash for all (a hash costs ~0.3 s of CPU).
    t = time.monotonic()
    password = make_password(PASSWORD)
    usernames = {}
    for i in plan.authors:
        usernames[i] = f"author{i}"
    for i in plan.readers:
        usernames[i] = f"reader{i - plan.readers.start + 1}"
    for i in plan.managers:
        usernames[i] = f"manager{i - plan.managers.start + 1}"
    copy_model(
        conn,
        User,
        ({"id": i, "username": name, "password": password, "date_joined": ago(90, 365)} for i, name in usernames.items()),
        now,
    )
    groups = dict(conn.execute("SELECT name, id FROM auth_group").fetchall())
    role_of = [(plan.authors, "author"), (plan.readers, "reader"), (plan.managers, "brand_manager")]
    memberships = ((user, groups[role]) for users, role in role_of for user in users)
    copy_model(
        conn,
        User.groups.through,
        ({"id": k, "user_id": u, "group_id": g} for k, (u, g) in enumerate(memberships, start=1)),
        now,
    )

    # Brands, each with its assets and two managers.
    brand_rows, asset_rows, manager_rows = [], [], []
    asset_id = 0
    for b in plan.brands:
        name = f"{rng.choice(['Tide', 'Neon', 'Moss', 'Ember', 'Lumen'])}{['wave', 'works', 'kin', 'forge', 'leaf'][b - 1]}"
        brand_rows.append(
            {"id": b, "name": name, "slug": name.lower(), "description": f"{name} makes {PRODUCTS[b]} for teens.",
             "banned_themes": ["violence"], "created_at": ago(100, 200)}
        )
        plan.assets[b] = []
        for k in range(ASSETS_PER_BRAND):
            asset_id += 1
            term = f"{name} {PRODUCTS[(b + k) % len(PRODUCTS)].title()}"
            plan.assets[b].append((asset_id, term))
            asset_rows.append({"id": asset_id, "brand_id": b, "kind": "product", "name": term, "terms": [term]})
    for k, m in enumerate(plan.managers):
        mine = [plan.brands[k % BRANDS], plan.brands[(k + 1) % BRANDS]]
        plan.brand_managers[m] = mine
        manager_rows += [{"brand_id": b, "user_id": m} for b in mine]
    copy_model(conn, Brand, brand_rows, now)
    copy_model(conn, BrandAsset, asset_rows, now)
    copy_model(
        conn, Brand.managers.through, ({"id": k, **row} for k, row in enumerate(manager_rows, start=1)), now
    )
    timings["users and brands"] = time.monotonic() - t

    # Stories and chapters.
    t = time.monotonic()
    story_rows, chapter_rows = [], []
    chapters_of: dict[int, int] = {}
    published: list[int] = []
    chapter_id = 0
    last_chapter: dict[int, int] = {}
    for s in range(1, args.stories + 1):
        owner = plan.authors[(s - 1) % len(plan.authors)]
        big = s <= BIG_STORIES
        is_published = big or s % 10 < 7
        created = ago(30, 365)
        story_rows.append(
            {
                "id": s, "owner_id": owner, "slug": f"story-{s}", "title": f"{rng.choice(HEROES)} and {rng.choice(PLACES)} {s}",
                "author_name": usernames[owner].title(), "summary": texts.line() + " " + texts.line(),
                "genre": rng.choice(GENRES), "tags": rng.sample(TAGS, 2), "characters": texts.line(),
                "setting": texts.line(), "intent_notes": texts.line(), "is_published": is_published,
                "created_at": created, "updated_at": ago(0, 30),
            }
        )
        count = BIG_CHAPTERS if big else (1 + s * 7 % 8 if is_published else s % 3)
        chapters_of[s] = count
        if is_published:
            published.append(s)
        for number in range(1, count + 1):
            chapter_id += 1
            chapter_rows.append(
                {"id": chapter_id, "story_id": s, "number": number, "title": f"Chapter {number}",
                 "text": texts.text(6, 10), "source": "pasted", "created_at": created}
            )
            last_chapter[s] = chapter_id
    copy_model(conn, Story, story_rows, now)
    copy_model(conn, Chapter, chapter_rows, now)
    timings["stories and chapters"] = time.monotonic() - t

    # The request plan: the long stories' requests, then authors' (3 options) and readers' (1 option).
    requests: list[Req] = []

    def add(story: int, user: int, kind: str, n: int, created: dt.datetime) -> Req:
        req = Req(len(requests) + 1, story, user, kind, n, created)
        requests.append(req)
        return req

    reader_list = list(plan.readers)
    big_options = 0
    for s in range(1, BIG_STORIES + 1):
        owner = plan.authors[(s - 1) % len(plan.authors)]
        for k in range(BIG_REQUESTS):
            if k % 2 == 0:
                add(s, owner, GenerationRequest.Kind.AUTHOR, 3, ago(0, 84))
                big_options += 3
            else:
                add(s, rng.choice(reader_list), GenerationRequest.Kind.READER, 1, ago(0, 84))
                big_options += 1
    rest = args.options - big_options
    author_requests = rest * 2 // 9  # 3 options each: 2/3 of the rest
    reader_requests = rest - 3 * author_requests
    others = list(range(BIG_STORIES + 1, args.stories + 1))
    published_others = [s for s in published if s > BIG_STORIES]
    for _ in range(author_requests):
        s = rng.choice(others)
        add(s, plan.authors[(s - 1) % len(plan.authors)], GenerationRequest.Kind.AUTHOR, 3, ago(0, 84))
    for k in range(reader_requests):
        add(rng.choice(published), reader_list[k % len(reader_list)], GenerationRequest.Kind.READER, 1, ago(0, 84))
    for _ in range(len(requests) // 50):  # 2 % more failed, without options (not counted in --options)
        s = rng.choice(others)
        add(s, plan.authors[(s - 1) % len(plan.authors)], GenerationRequest.Kind.AUTHOR, 3, ago(0, 84)).special = "failed"

    # Placements: sponsored chapters (an approved option accepted as the story's last chapter, its
    # sibling rejected), options waiting for review (2 per request, the newest weeks), readers' approved ones.
    author_pool = [
        r for r in requests if r.kind == GenerationRequest.Kind.AUTHOR and r.story > BIG_STORIES and not r.special
    ]
    rng.shuffle(author_pool)
    sponsored_stories: set[int] = set()
    for r in author_pool:
        if len(sponsored_stories) >= SPONSORED_CHAPTERS:
            break
        if r.story in published_others and r.story not in sponsored_stories and chapters_of[r.story]:
            r.special, r.brand = "sponsored_chapter", rng.choice(plan.brands)
            sponsored_stories.add(r.story)
    waiting = [r for r in author_pool if not r.special][: args.pending // 2]
    for k, r in enumerate(waiting):
        r.special, r.brand, r.created = "pending", plan.brands[k % BRANDS], ago(0, 14)
    client_readers = set(reader_list[: max(args.clients, 1)])
    for k, r in enumerate(r for r in requests if r.kind == GenerationRequest.Kind.READER and r.user in client_readers):
        if k % 3 == 0:
            r.special, r.brand = "reader_sponsored", rng.choice(plan.brands)

    t = time.monotonic()
    copy_model(conn, GenerationRequest, (_request_row(r, chapters_of, texts) for r in requests), now)
    timings["requests"] = time.monotonic() - t

    t = time.monotonic()
    decisions: list[dict] = []
    reviewer_of = {b: next(m for m, bs in plan.brand_managers.items() if b in bs) for b in plan.brands}
    options = _option_rows(requests, plan, texts, rng, last_chapter, reviewer_of, decisions)
    n_options = copy_model(conn, GenerationOption, options, now)
    timings["options"] = time.monotonic() - t

    t = time.monotonic()
    copy_model(conn, PlacementDecision, ({"id": k, **d} for k, d in enumerate(decisions, start=1)), now)
    conn.execute(
        sql.SQL("UPDATE {} SET source = 'generated' WHERE id IN (SELECT accepted_chapter_id FROM {} "
                "WHERE accepted_chapter_id IS NOT NULL)").format(
            sql.Identifier(Chapter._meta.db_table), sql.Identifier(GenerationOption._meta.db_table)
        )
    )
    notifications = (
        {"id": k, "user_id": rng.choice(plan.authors), "message": f"A placement was decided ({k}).",
         "url": f"/requests/{rng.randint(1, len(requests))}/", "created_at": ago(0, 84),
         "read_at": None if k % 4 == 0 else now}
        for k in range(1, 2 * len(plan.authors) * 10 + 1)
    )
    copy_model(conn, Notification, notifications, now)
    timings["decisions, notifications"] = time.monotonic() - t
    t = time.monotonic()
    build_tool_data(conn, args, rng, texts, now)
    reset_sequences(
        conn,
        [User, User.groups.through, Brand, BrandAsset, Brand.managers.through, Story, Chapter, GenerationRequest,
         GenerationOption, PlacementDecision, Notification, StoryBibleEntry, OptionVersion, ChapterVersion,
         PassageEdit, OptionRating],
    )
    timings["bible, versions, passages, ratings"] = time.monotonic() - t
    t = time.monotonic()
    conn.execute("VACUUM ANALYZE")
    timings["VACUUM ANALYZE"] = time.monotonic() - t
    print(f"  {len(requests):,} requests, {n_options:,} options", flush=True)
    return timings


def _request_row(r: Req, chapters_of: dict[int, int], texts: Texts) -> dict:
    finished = r.special != "failed"
    status = GenerationRequest.Status.SUCCEEDED if finished else GenerationRequest.Status.FAILED
    return {
        "id": r.id,
        "story_id": r.story,
        "requested_by_id": r.user,
        "kind": r.kind,
        "preference": "a bit sad, not a tragedy" if r.kind == GenerationRequest.Kind.READER else "",
        "n": r.n,
        "engine": "vllm",
        "max_new_tokens": 512,
        "next_number": chapters_of[r.story] + 1,
        "status": status,
        "stage": "Done" if finished else "Failed",
        "progress_tokens": 512 * r.n,
        "attempts": 1,
        "error": "" if finished else "The writer did not answer in time (300 s).",
        "prompt_tokens": 2900,
        "prompt_report": {"summary": "chapter 0 + 3 chapters, 2,900 tokens", "trimmed": 0},
        "use_brands": bool(r.special),
        "brand_note": "Matched 2 brands." if r.special else "",
        "model_name": "smollm2",
        "created_at": r.created,
        "started_at": r.created + dt.timedelta(seconds=2),
        "finished_at": r.created + dt.timedelta(seconds=40),
    }


def _option_rows(
    requests: list[Req],
    plan: Plan,
    texts: Texts,
    rng: random.Random,
    last_chapter: dict[int, int],
    reviewer_of: dict[int, int],
    decisions: list[dict],
) -> Iterator[dict]:
    option_id = 0
    for r in requests:
        if r.special == "failed":  # a failed request has no options
            continue
        for index in range(r.n):
            option_id += 1
            text = texts.text(5, 8)
            reasoning = texts.line() + " " + texts.line()
            row = {
                "id": option_id, "request_id": r.id, "index": index, "reasoning": reasoning, "text": text,
                "raw_output": f"{REASONING_START}{reasoning}{REASONING_END}\n{SOLUTION_START}{text}{SOLUTION_END}",
                "format_ok": True, "tokens": 480, "finish_reason": "stop",
                "created_at": r.created + dt.timedelta(seconds=40),
            }
            branded = (
                (r.special == "pending" and index < 2)
                or (r.special == "sponsored_chapter" and index < 2)
                or (r.special == "reader_sponsored" and index == 0)
            )
            if branded:
                brand = r.brand if index == 0 else plan.brands[(plan.brands.index(r.brand) + 1) % BRANDS]
                asset, term = rng.choice(plan.assets[brand])
                row["text"] = f"{term} waited on the counter. " + text
                row.update(
                    brand_id=brand, asset_id=asset, mentions=[[0, len(term)]], placement_found=True,
                    placement_hint="on the counter, in passing",
                )
                if r.special == "pending":
                    row["review_status"] = ReviewStatus.PENDING
                elif index == 0:  # approved (and, for the author's request, accepted as the last chapter)
                    row.update(review_status=ReviewStatus.APPROVED, reviewed_by_id=reviewer_of[brand],
                               reviewed_at=row["created_at"] + dt.timedelta(hours=3))
                    if r.special == "sponsored_chapter":
                        row["accepted_chapter_id"] = last_chapter[r.story]
                else:
                    row.update(review_status=ReviewStatus.REJECTED, reviewed_by_id=reviewer_of[brand],
                               review_reason="The board reads like an advert here.",
                               reviewed_at=row["created_at"] + dt.timedelta(hours=3))
                if row.get("review_status") in (ReviewStatus.APPROVED, ReviewStatus.REJECTED):
                    decisions.append(
                        {"option_id": option_id, "brand_id": brand, "reviewer_id": row["reviewed_by_id"],
                         "action": row["review_status"], "reason": row.get("review_reason", ""),
                         "created_at": row["reviewed_at"]}
                    )
            yield row


def _table(model: type[Model]) -> sql.Identifier:
    return sql.Identifier(model._meta.db_table)


def _changed_passage(text: str, texts: Texts) -> tuple[int, int, str]:
    """(start, end, replacement) of one paragraph of `text`: a passage tool's change of it (a sentence
    written again, one added), as `writer.passages` would store it."""
    paragraphs = text.split("\n\n")
    k = len(paragraphs) // 2
    start = sum(len(p) + 2 for p in paragraphs[:k])
    original = paragraphs[k]
    sentences = original.split(". ")
    sentences[len(sentences) // 2] = texts.line().rstrip(".")
    return start, start + len(original), ". ".join(sentences) + " " + texts.line()


def build_tool_data(
    conn: psycopg.Connection, args: argparse.Namespace, rng: random.Random, texts: Texts, now: dt.datetime
) -> None:
    """The story bible, versions, passage changes and readers' ratings (the pages added in issue 16), in
    proportion: bible entries for the long stories and 1 in 10 others; versions (a swipe, a passage change)
    of the options of 1 in 4 of the long stories' author requests and 1 in 20 others', and of 1 in 10 of
    the long stories' chapters; passage changes on the long stories; stars from readers for 2 in 3 of their
    personalised chapters."""
    kinds = list(StoryBibleEntry.Kind)
    names = {
        StoryBibleEntry.Kind.CHARACTER: HEROES,
        StoryBibleEntry.Kind.PLACE: [p.removeprefix("the ").capitalize() for p in PLACES],
        StoryBibleEntry.Kind.OBJECT: [p.capitalize() for p in PRODUCTS],
        StoryBibleEntry.Kind.FACT: ["The storm", "The promise", "The old map", "The debt", "The festival"],
    }

    def bible_rows() -> Iterator[dict]:
        k_id = 0
        stories = [*range(1, BIG_STORIES + 1), *range(BIG_STORIES + 3, args.stories + 1, 10)]
        for s in stories:
            count = BIG_BIBLE if s <= BIG_STORIES else SMALL_BIBLE
            last = BIG_CHAPTERS if s <= BIG_STORIES else 8
            for k in range(count):
                k_id += 1
                kind = kinds[k % len(kinds)]
                status, source = StoryBibleEntry.Status.ACCEPTED, StoryBibleEntry.Source.AUTHOR
                if count > SMALL_BIBLE and k % 10 == 8:
                    status, source = StoryBibleEntry.Status.PROPOSED, StoryBibleEntry.Source.WRITER
                elif count > SMALL_BIBLE and k % 10 == 9:
                    status, source = StoryBibleEntry.Status.REJECTED, StoryBibleEntry.Source.WRITER
                start = rng.randint(1, last)
                yield {
                    "id": k_id, "story_id": s, "kind": kind, "name": f"{rng.choice(names[kind])} {k + 1}",
                    "description": texts.line() + " " + texts.line(), "aliases": [f"{rng.choice(HEROES)}ie"][: k % 2],
                    "from_chapter": start, "until_chapter": None if k % 3 else start + rng.randint(0, 20),
                    "status": status, "source": source,
                }

    copy_model(conn, StoryBibleEntry, bible_rows(), now)

    # Options' versions: the current text is the highest number; a passage change keeps the rest of the text.
    options = conn.execute(
        sql.SQL(
            "SELECT o.id, o.text, o.reasoning, o.raw_output, o.created_at, r.id, r.requested_by_id, r.story_id "
            "FROM {} o JOIN {} r ON r.id = o.request_id WHERE r.kind = 'author' AND o.review_status = 'none' "
            "AND r.status = 'succeeded' AND ((r.story_id <= %s AND r.id %% 4 = 1) OR (r.story_id > %s AND r.id %% 20 = 0)) "
            "ORDER BY o.id"
        ).format(_table(GenerationOption), _table(GenerationRequest)),
        [BIG_STORIES, BIG_STORIES],
    ).fetchall()
    causes = [OptionVersion.Cause.SWIPE, OptionVersion.Cause.PASSAGE]

    def option_version_rows() -> Iterator[dict]:
        v_id = 0
        for o_id, text, reasoning, raw, created, r_id, user, _story in options:
            count = 2 + o_id % 3  # 2-4 versions
            chain = [(text, causes[o_id % 2])]
            for _ in range(count - 1):
                newer, cause = chain[0]
                if cause == OptionVersion.Cause.PASSAGE:
                    start, end, replacement = _changed_passage(newer, texts)
                    older = newer[:start] + newer[start:end].split(". ")[0] + "." + newer[end:]
                else:
                    older = texts.text(5, 8)
                chain.insert(0, (older, causes[(o_id + len(chain)) % 2]))
            for number, (body, cause) in enumerate(chain, start=1):
                v_id += 1
                yield {
                    "id": v_id, "option_id": o_id, "number": number,
                    "cause": OptionVersion.Cause.WRITTEN if number == 1 else cause,
                    "raw_output": raw if number == count else "", "reasoning": reasoning, "text": body,
                    "format_ok": True, "tokens": 480, "finish_reason": "stop", "model_name": "smollm2",
                    "created_by_id": user, "request_id": r_id,
                    "created_at": created + dt.timedelta(minutes=10 * (number - 1)),
                }

    copy_model(conn, OptionVersion, option_version_rows(), now)

    chapters = conn.execute(
        sql.SQL(
            "SELECT c.id, c.title, c.text, c.created_at, s.owner_id, c.story_id, c.number FROM {} c "
            "JOIN {} s ON s.id = c.story_id WHERE c.story_id <= %s ORDER BY c.id"
        ).format(_table(Chapter), _table(Story)),
        [BIG_STORIES],
    ).fetchall()

    def chapter_version_rows() -> Iterator[dict]:
        v_id = 0
        for c_id, title, text, created, owner, _story, number in chapters:
            if number % 10:
                continue
            start, end, replacement = _changed_passage(text, texts)
            passage_before = text[:start] + text[start:end].split(". ")[0] + "." + text[end:]
            chain = [(texts.text(6, 10), ChapterVersion.Cause.EDITED), (passage_before, ChapterVersion.Cause.EDITED),
                     (text, ChapterVersion.Cause.PASSAGE)]
            for n, (body, cause) in enumerate(chain, start=1):
                v_id += 1
                yield {"id": v_id, "chapter_id": c_id, "number": n, "cause": cause, "title": title, "text": body,
                       "created_by_id": owner, "created_at": created + dt.timedelta(days=n - 1)}

    copy_model(conn, ChapterVersion, chapter_version_rows(), now)

    # Passage changes of the long stories' chapters and plain options, finished: most waiting for the
    # author's decision, a third discarded.
    tools = list(PassageEdit.Tool)
    by_story: dict[int, list] = {}
    for row in chapters:
        by_story.setdefault(row[5], []).append(("chapter", row[0], row[2], row[4], row[3]))
    option_targets: dict[int, list] = {}
    for o_id, text, _reasoning, _raw, created, _r_id, user, story in options:
        if story <= BIG_STORIES:
            option_targets.setdefault(story, []).append(("option", o_id, text, user, created))

    def passage_rows() -> Iterator[dict]:
        e_id = 0
        for s in range(1, BIG_STORIES + 1):
            picks = rng.sample(by_story[s], 2 * BIG_PASSAGE_EDITS // 3)
            picks += rng.sample(option_targets.get(s, []), min(BIG_PASSAGE_EDITS // 3, len(option_targets.get(s, []))))
            for kind, target, text, user, created in picks:
                e_id += 1
                start, end, replacement = _changed_passage(text, texts)
                asked = max(created, now - dt.timedelta(days=rng.uniform(0, 30)))
                discarded = e_id % 3 == 0
                yield {
                    "id": e_id, "story_id": s, "option_id": target if kind == "option" else None,
                    "chapter_id": target if kind == "chapter" else None, "requested_by_id": user,
                    "tool": tools[e_id % len(tools)], "instruction": "more of the sea" if e_id % 2 else "",
                    "start": start, "end": end, "original": text[start:end], "result": replacement,
                    "engine": "vllm", "model_name": "smollm2", "status": PassageEdit.Status.SUCCEEDED,
                    "created_at": asked, "started_at": asked + dt.timedelta(seconds=1),
                    "finished_at": asked + dt.timedelta(seconds=9),
                    "decision": PassageEdit.Decision.DISCARDED if discarded else PassageEdit.Decision.PENDING,
                    "decided_at": asked + dt.timedelta(minutes=2) if discarded else None,
                }

    copy_model(conn, PassageEdit, passage_rows(), now)

    # Readers' stars: 2 in 3 of their personalised chapters' options that they were shown.
    rated = conn.execute(
        sql.SQL(
            "SELECT o.id, r.requested_by_id, o.created_at FROM {} o JOIN {} r ON r.id = o.request_id "
            "WHERE r.kind = 'reader' AND o.review_status IN ('none', 'approved') AND r.id % 3 <> 0 ORDER BY o.id"
        ).format(_table(GenerationOption), _table(GenerationRequest))
    ).fetchall()
    copy_model(
        conn,
        OptionRating,
        ({"id": k, "option_id": o_id, "reader_id": reader, "stars": 1 + (o_id * 7) % 5, "writer": "smollm2",
          "created_at": created + dt.timedelta(hours=1)} for k, (o_id, reader, created) in enumerate(rated, start=1)),
        now,
    )


def data_counts() -> dict[str, int]:
    pending = GenerationOption.objects.filter(review_status=ReviewStatus.PENDING).count()
    return {
        "users": User.objects.count(),
        "stories": Story.objects.count(),
        "published stories": Story.objects.filter(is_published=True).count(),
        "chapters": Chapter.objects.count(),
        "requests": GenerationRequest.objects.count(),
        "options": GenerationOption.objects.count(),
        "pending placements": pending,
        "sponsored chapters": GenerationOption.objects.filter(
            review_status=ReviewStatus.APPROVED, accepted_chapter__isnull=False
        ).count(),
        "brands": Brand.objects.count(),
        "story bible entries": StoryBibleEntry.objects.count(),
        "option versions": OptionVersion.objects.count(),
        "chapter versions": ChapterVersion.objects.count(),
        "passage changes": PassageEdit.objects.count(),
        "ratings": OptionRating.objects.count(),
    }


# --- Clients and the pages they visit ---------------------------------------------------------------


@dataclass
class VirtualClient:
    username: str
    session_key: str
    urls: list[str]
    marker: str = ""  # what a good page holds ("": the user's name in the header; a fragment has none)


@dataclass
class Scenario:
    key: str  # as --pages names it
    name: str
    what: str
    clients: list[VirtualClient]


def _session_for(user: Model) -> str:
    """A logged-in session, as `django.contrib.auth.login` makes it (signed with the run's secret key)."""
    store = SessionStore()
    store["_auth_user_id"] = str(user.pk)
    store["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    store["_auth_user_hash"] = user.get_session_auth_hash()
    store.create()
    return store.session_key


def scenarios(args: argparse.Namespace, rng: random.Random) -> list[Scenario]:
    """The three pages' clients: each with its own user, session and the addresses it may visit."""
    n = args.clients
    story_url = "/s/{}/".format
    authors = list(User.objects.filter(groups__name="author").order_by("pk")[: max(n // 2, BIG_STORIES)])
    readers = list(User.objects.filter(groups__name="reader").order_by("pk")[:n])
    managers = list(User.objects.filter(groups__name="brand_manager").order_by("pk"))
    big = list(Story.objects.filter(pk__lte=BIG_STORIES).values_list("slug", flat=True))
    published = list(Story.objects.filter(is_published=True).values_list("slug", flat=True))

    story_clients = []
    for k in range(n):
        if k % 2 == 0:  # an author on their own stories (the long stories' owners come first)
            user = authors[(k // 2) % len(authors)]
            slugs = list(Story.objects.filter(owner=user).values_list("slug", flat=True))
            urls = [story_url(s) for s in slugs]
            for s in slugs:
                if s in big:  # its first page often, and its later pages of chapters and requests
                    urls += [story_url(s)] * 4 + [f"{story_url(s)}?chapters={p}" for p in range(2, 7)]
                    urls += [f"{story_url(s)}?requests=2"]
        else:  # a reader on published stories, the long ones among them
            user = readers[(k // 2) % len(readers)]
            urls = [story_url(s) for s in rng.sample(published, min(200, len(published)))]
            urls += [story_url(s) for s in big] * 5
        story_clients.append(VirtualClient(user.username, _session_for(user), urls))

    sponsored = list(
        GenerationOption.objects.filter(review_status=ReviewStatus.APPROVED, accepted_chapter__isnull=False)
        .values_list("accepted_chapter__story__slug", "accepted_chapter__number")
    )
    chapters = list(
        Chapter.objects.filter(story__is_published=True).order_by("?").values_list("story__slug", "number")[:2000]
    )
    reader_clients = []
    for k in range(n):
        user = readers[k % len(readers)]
        mine = list(
            GenerationRequest.objects.filter(requested_by=user, kind=GenerationRequest.Kind.READER).values_list(
                "pk", flat=True
            )
        )
        urls = [f"/requests/{pk}/" for pk in mine]
        picks = rng.sample(sponsored, min(len(urls) // 2 + 1, len(sponsored))) + rng.sample(chapters, len(urls))
        urls += [f"/s/{slug}/chapters/{number}/" for slug, number in picks]
        # The ratings page of 1 in 3 of their personalised chapters (`writer:request_ratings`).
        urls += [f"/requests/{pk}/ratings/" for pk in mine[::3]]
        reader_clients.append(VirtualClient(user.username, _session_for(user), urls))

    queue_clients = []
    for k in range(n):
        user = managers[k % len(managers)]
        pages = -(-review_queue_for_manager(user=user).count() // QUEUE_PAGE_SIZE)  # later pages too
        urls = ["/brands/review/"] * 3 + [f"/brands/review/?page={p}" for p in range(2, pages + 1)]
        queue_clients.append(VirtualClient(user.username, _session_for(user), urls))

    live = [live_scenario(args, rng)] if "live" in args.pages.split(",") else []  # it marks requests running
    tools = tools_scenario(args, rng)
    return [
        Scenario("story", "story page", "`writer:story_detail`: authors on their own stories (10 of 300 chapters and "
                 "600 requests), readers on published ones", story_clients),
        Scenario("reader", "reader pages", "a reader's personalised request (`writer:request_detail`, 1/3 with an approved "
                 "placement), its ratings page (`writer:request_ratings`, 1 in 3) and chapters "
                 "(`writer:chapter_detail`, sponsored ones with the label)", reader_clients),
        Scenario("queue", "review queue", f"`brands:review_queue` of {len(managers)} managers (2 brands each), page 1 and "
                 "later pages", queue_clients),
        *live,
        tools,
    ]


def tools_scenario(args: argparse.Namespace, rng: random.Random) -> Scenario:
    """Authors on the pages added in issue 16, each kind of page as often as the others: the story bible
    (`writer:bible`), an option's or a chapter's versions and their comparison, a passage change
    (`writer:passage_detail`) and the passage tools' page of a chapter (`writer:passage_chapter`). Half the
    clients are the long stories' authors (60 bible entries, 300 chapters), half other authors with a bible
    or an option's versions."""
    urls: dict[int, dict[str, list[str]]] = {}  # author id -> page kind -> addresses

    def add(owner: int, kind: str, url: str) -> None:
        urls.setdefault(owner, {}).setdefault(kind, []).append(url)

    for slug, owner in Story.objects.filter(bible_entries__isnull=False).distinct().values_list("slug", "owner_id"):
        add(owner, "bible", f"/s/{slug}/bible/")
    for pk, owner in (
        OptionVersion.objects.values_list("option_id", "option__request__requested_by_id").distinct().order_by("option_id")
    ):
        add(owner, "option versions", f"/options/{pk}/versions/")
        add(owner, "option compare", f"/options/{pk}/versions/compare/")
    for slug, number, owner in (
        ChapterVersion.objects.values_list("chapter__story__slug", "chapter__number", "chapter__story__owner_id")
        .distinct()
    ):
        add(owner, "chapter versions", f"/s/{slug}/chapters/{number}/versions/")
        add(owner, "chapter compare", f"/s/{slug}/chapters/{number}/versions/compare/?a=1&b=3")
    for pk, owner, slug, number in PassageEdit.objects.values_list(
        "pk", "requested_by_id", "chapter__story__slug", "chapter__number"
    ):
        add(owner, "passage change", f"/passages/{pk}/")
        if number is not None:
            add(owner, "passage tools", f"/s/{slug}/chapters/{number}/passage/")
    users = User.objects.in_bulk(list(urls))
    long_owners = sorted(Story.objects.filter(pk__lte=BIG_STORIES).values_list("owner_id", flat=True))
    others = sorted(set(urls) - set(long_owners))
    clients = []
    for k in range(args.clients):
        owner = long_owners[(k // 2) % len(long_owners)] if k % 2 == 0 else others[(k // 2) % len(others)]
        kinds = urls[owner]
        mix = [url for pages in kinds.values() for url in rng.choices(pages, k=12)]  # each kind alike
        clients.append(VirtualClient(users[owner].username, _session_for(users[owner]), mix))
    return Scenario("tools", "author tools", "authors on the pages added in issue 16, each kind alike: the story bible "
                    "(`writer:bible`), versions of an option or a chapter and their comparison, a passage change and "
                    "a chapter's passage tools", clients)


def live_scenario(args: argparse.Namespace, rng: random.Random) -> Scenario:
    """Pages polling their request's live text (`writer:request_live`, as htmx does every second): half
    authors on one of their requests (3 options, brands asked for), half readers on their personalised
    one (1 option, no brand). Each request is marked running and given the options' text so far in the
    cache (writer.live, as the worker writes it), ~2,000 characters an option: a chapter half written.
    Requests and readers that the other pages do not use: their pages stay as they were."""
    from writer import live

    n = args.clients
    texts = Texts(rng)
    other_readers = User.objects.filter(groups__name="reader").order_by("pk")[n:]
    mine = {
        "author": GenerationRequest.objects.filter(kind=GenerationRequest.Kind.AUTHOR, story_id__gt=BIG_STORIES,
                                                   status=GenerationRequest.Status.SUCCEEDED).order_by("-pk"),
        "reader": GenerationRequest.objects.filter(kind=GenerationRequest.Kind.READER, use_brands=False,
                                                   requested_by__in=other_readers).order_by("-pk"),
    }
    picked = {kind: list(qs.select_related("requested_by")[: (n + 1) // 2]) for kind, qs in mine.items()}
    clients = []
    for k in range(n):
        gen = picked["author" if k % 2 == 0 else "reader"][k // 2]
        if gen.status != GenerationRequest.Status.RUNNING:
            GenerationRequest.objects.filter(pk=gen.pk).update(
                status=GenerationRequest.Status.RUNNING, stage=f"Writing: {gen.n * 400} of up to {gen.n * 640} tokens",
                progress_tokens=gen.n * 400, use_brands=gen.kind == GenerationRequest.Kind.AUTHOR, finished_at=None,
            )
        answers = {
            i: f"<start_working_out>A plan.<end_working_out>\n<SOLUTION>{texts.text(5, 7)}" for i in range(gen.n)
        }
        assert live.publish(request_id=gen.pk, attempt=gen.attempts, texts=answers, ttl_seconds=6 * 3600)
        user = gen.requested_by
        clients.append(
            VirtualClient(user.username, _session_for(user), [f"/requests/{gen.pk}/live/"], marker='id="live-options"')
        )
    return Scenario("live", "live text", "`writer:request_live` polled by authors (3 options, brands asked for) and "
                    "readers (1 option, none) on a request being written, its text so far in Redis", clients)


# --- The server -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(args: argparse.Namespace, port: int, log: Path) -> subprocess.Popen:
    gunicorn = Path(sys.executable).parent / "gunicorn"
    command = [
        str(gunicorn), "mesu_web.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(args.workers),
        "--threads", str(args.threads), "--timeout", "60",
        "--no-control-socket",  # gunicorn 27's default socket path is shared: leave a dev server's alone
    ]
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = log.open("w")
    # Its own session (process group): stopping it takes its workers too, and nothing else.
    proc = subprocess.Popen(command, cwd=ROOT, env=os.environ.copy(), stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited ({proc.returncode}); see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_gunicorn(proc)
    raise SystemExit(f"gunicorn did not answer /healthz within 60 s; see {log}")


def stop_gunicorn(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def process_cpu_s(pids: Iterable[int]) -> float:
    """utime + stime of the processes, in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


class BackendCpu(threading.Thread):
    """CPU seconds of the PostgreSQL backends serving `db` (the app's connections), read from /proc every
    0.5 s. A backend first seen after the first sample counts from its start; one that ends (CONN_MAX_AGE)
    loses at most its last 0.5 s."""

    def __init__(self, db: str) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.total = 0.0
        self.last: dict[int, float] = {}
        self.first = True

    def run(self) -> None:
        with psycopg.connect(conninfo("postgres"), autocommit=True) as conn:
            while not self.halt.is_set():
                pids = [row[0] for row in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s", [self.db]
                ).fetchall()]
                with self.lock:
                    for pid in pids:
                        cpu = process_cpu_s([pid])
                        start = self.last.get(pid, cpu if self.first else 0.0)
                        self.total += max(0.0, cpu - start)
                        self.last[pid] = cpu
                    self.first = False
                self.halt.wait(0.5)

    def read(self) -> float:
        with self.lock:
            return self.total


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def wait_for_quiet(threshold: float, limit_s: float) -> tuple[float, float]:
    """Waits until the 1-minute load average is below `threshold` (at most `limit_s`); (load, seconds waited)."""
    start = time.monotonic()
    load = loadavg()
    while load >= threshold and time.monotonic() - start < limit_s:
        print(f"  load average {load:.2f} >= {threshold}: waiting ({time.monotonic() - start:.0f} s) ...", flush=True)
        time.sleep(15)
        load = loadavg()
    return load, time.monotonic() - start


# --- The load ---------------------------------------------------------------------------------------


@dataclass
class RunResult:
    scenario: str
    clients: int
    think: float
    duration: float
    latencies_ms: list[float] = field(default_factory=list)
    by_view: dict[str, list[float]] = field(default_factory=dict)  # view name -> latencies (ms)
    errors: Counter = field(default_factory=Counter)
    retries: int = 0  # requests sent again after the server closed their keep-alive connection
    server_cpu_s: float = 0.0
    db_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    machine_busy: float = 0.0  # share of both cores busy (all processes)
    loads: list[float] = field(default_factory=list)  # 1-minute load average, every 5 s of the run
    load_before: float = float("nan")  # ... when the run began, after waiting (`waited_s`) for a quiet one
    waited_s: float = 0.0
    bytes: int = 0

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + sum(self.errors.values())

    def pct(self, q: float, values: list[float] | None = None) -> float:
        """The q-th percentile (nearest rank) of the latencies, or of `values`."""
        values = sorted(self.latencies_ms if values is None else values)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, max(0, round(q / 100 * len(values)) - 1))]

    @property
    def other_cores(self) -> float:
        """Cores that other processes kept busy meanwhile: the machine's busy share less ours."""
        ours = (self.server_cpu_s + self.db_cpu_s + self.client_cpu_s) / self.duration
        return max(0.0, self.machine_busy * (os.cpu_count() or 1) - ours)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def meets_goal(self) -> bool:
        return self.error_count == 0 and self.pct(95) <= GOAL_P95_MS


async def _client_loop(
    vc: VirtualClient, base: str, think: float, start: float, record_from: float, deadline: float,
    rng: random.Random, result: RunResult,
) -> None:
    marker = (vc.marker or f'class="who">{vc.username}').encode()
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(
        base_url=base, cookies={"sessionid": vc.session_key}, timeout=HTTP_TIMEOUT_S, limits=limits
    ) as client:
        await asyncio.sleep(max(0.0, start + rng.uniform(0, think) - time.perf_counter()))  # spread the starts
        while time.perf_counter() < deadline:
            url = rng.choice(vc.urls)
            t0 = time.perf_counter()
            error = ""
            try:
                try:
                    response = await client.get(url)
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    # The server closed the idle keep-alive connection as this request went out (its 2 s
                    # keep-alive against a late client on a busy machine): retry once on a new connection,
                    # as browsers do for an idempotent request. Counted, and the latency includes it.
                    if t0 >= record_from:
                        result.retries += 1
                    response = await client.get(url)
                if response.status_code != 200:
                    error = f"HTTP {response.status_code}"
                elif marker not in response.content:
                    error = "not logged in"
                size = len(response.content)
            except httpx.HTTPError as exc:
                error, size = type(exc).__name__, 0
            elapsed_ms = (time.perf_counter() - t0) * 1000
            if t0 >= record_from:
                if error:
                    result.errors[error] += 1
                else:
                    result.latencies_ms.append(elapsed_ms)
                    result.by_view.setdefault(view_of(url), []).append(elapsed_ms)
                    result.bytes += size
            if think:
                await asyncio.sleep(rng.uniform(0.5 * think, 1.5 * think))


async def _sample_loads(stop: asyncio.Event, loads: list[float], record_from: float) -> None:
    while not stop.is_set():
        if time.perf_counter() >= record_from:
            loads.append(loadavg())
        try:
            await asyncio.wait_for(stop.wait(), timeout=5)
        except TimeoutError:
            pass


async def _run(
    scenario: Scenario, base: str, think: float, duration: float, seed: int, server_pid: int, db: str
) -> RunResult:
    result = RunResult(scenario.name, len(scenario.clients), think, duration)
    backends = BackendCpu(db)
    backends.start()
    start = time.perf_counter()
    record_from = start + WARMUP_S + think  # every client has started and made a page or two
    deadline = record_from + duration
    rng = random.Random(seed)
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_loads(stop, result.loads, record_from))
    clients = [
        asyncio.create_task(
            _client_loop(vc, base, think, start, record_from, deadline, random.Random(rng.random()), result)
        )
        for vc in scenario.clients
    ]
    await asyncio.sleep(max(0.0, record_from - time.perf_counter()))
    server = [server_pid, *_children(server_pid)]
    cpu0, self0, busy0 = process_cpu_s(server), resource.getrusage(resource.RUSAGE_SELF), machine_busy()
    db0 = backends.read()
    await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
    cpu1, self1, busy1 = process_cpu_s(server), resource.getrusage(resource.RUSAGE_SELF), machine_busy()
    db1 = backends.read()
    await asyncio.gather(*clients)
    stop.set()
    await sampler
    backends.halt.set()
    result.server_cpu_s = cpu1 - cpu0
    result.db_cpu_s = db1 - db0
    result.client_cpu_s = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
    result.machine_busy = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
    return result


def run_load(
    scenario: Scenario, base: str, think: float, duration: float, seed: int, server_pid: int, db: str
) -> RunResult:
    label = f"think {think:g} s" if think else "no think time"
    print(f"  {scenario.name}: {len(scenario.clients)} clients, {label}, {duration:.0f} s ...", flush=True)
    result = asyncio.run(_run(scenario, base, think, duration, seed, server_pid, db))
    print(
        f"    {result.requests:,} requests, {result.requests / duration:.1f}/s, p50 {result.pct(50):.1f} ms, "
        f"p95 {result.pct(95):.1f} ms, p99 {result.pct(99):.1f} ms, errors {dict(result.errors) or 0} "
        f"(retried {result.retries}), "
        f"load {max(result.loads, default=float('nan')):.2f}",
        flush=True,
    )
    return result


# --- The profile ------------------------------------------------------------------------------------


@dataclass
class Profile:
    scenario: str
    queries: list[int]
    sql_ms: list[float]
    view_ms: list[float]
    kib: list[float]
    slowest: tuple[float, float, str]  # EXPLAIN ANALYZE of the slowest query: (execution ms, planning ms, top node)


def _explain(statement: str) -> tuple[float, float, list[str]]:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement)
        plan = [row[0] for row in cursor.fetchall()]

    def ms(prefix: str) -> float:
        return next((float(line.split(":")[1].split()[0]) for line in plan if line.startswith(prefix)), 0.0)

    return ms("Execution Time"), ms("Planning Time"), plan


def profile(scenario: Scenario, rng: random.Random, cprofiler: cProfile.Profile | None = None) -> Profile:
    """Some of the scenario's pages once each, in this process: queries, SQL time (client-side, each
    query's round trip) and view time; then EXPLAIN ANALYZE of every SELECT they ran, the slowest kept.
    With `cprofiler`, the timed views run under it."""
    queries, sql_ms, view_ms, kib = [], [], [], []
    statements: list[str] = []
    by_view: dict[str, list[float]] = {}
    cpu_by_view: dict[str, list[float]] = {}  # this thread's CPU in the view: steadier on a busy machine
    for vc in rng.sample(scenario.clients, min(PROFILE_URLS, len(scenario.clients))):
        client = Client(HTTP_HOST="127.0.0.1")
        client.cookies["sessionid"] = vc.session_key
        url = rng.choice(vc.urls)
        client.get(url)  # warm: a first view may write once, templates compile
        times: list[float] = []

        def timed(execute, sql_, params, many, context, times=times):  # noqa: ANN001, ANN202
            t = time.perf_counter()
            try:
                return execute(sql_, params, many, context)
            finally:
                times.append((time.perf_counter() - t) * 1000)

        with CaptureQueriesContext(connection) as ctx, connection.execute_wrapper(timed):
            if cprofiler is not None:
                cprofiler.enable()
            t0, c0 = time.perf_counter(), time.thread_time()
            response = client.get(url)
            view_ms.append((time.perf_counter() - t0) * 1000)
            cpu_ms = (time.thread_time() - c0) * 1000
            if cprofiler is not None:
                cprofiler.disable()
        by_view.setdefault(view_of(url), []).append(view_ms[-1])
        cpu_by_view.setdefault(view_of(url), []).append(cpu_ms)
        assert response.status_code == 200, (url, response.status_code)
        queries.append(len(ctx.captured_queries))
        sql_ms.append(sum(times))
        kib.append(len(response.content) / 1024)
        statements += [q["sql"] for q in ctx.captured_queries if q["sql"].lstrip().upper().startswith("SELECT")]
    slowest: tuple[float, float, str] = (0.0, 0.0, "")
    worst_plan: list[str] = []
    worst_sql = ""
    for statement in dict.fromkeys(statements):
        execution, planning, plan = _explain(statement)
        if execution + planning > slowest[0] + slowest[1]:
            slowest, worst_plan, worst_sql = (execution, planning, plan[0].split("  (")[0].strip()), plan, statement
    print(f"\n  {scenario.name}: slowest query (EXPLAIN ANALYZE):\n    {worst_sql[:600]}", flush=True)
    print("    " + "\n    ".join(worst_plan), flush=True)
    print(
        f"  {scenario.name}: view ms (median / max), queries {min(queries)}-{max(queries)}, SQL ms median "
        f"{statistics.median(sql_ms):.1f}: "
        + "; ".join(
            f"{v} {statistics.median(t):.1f} / {max(t):.1f} (CPU {statistics.median(cpu_by_view[v]):.1f}; {len(t)})"
            for v, t in sorted(by_view.items())
        ),
        flush=True,
    )
    return Profile(scenario.name, queries, sql_ms, view_ms, kib, slowest)


# --- Report -----------------------------------------------------------------------------------------


def machine_info() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0].split()[0]
        cursor.execute("SHOW shared_buffers")
        shared_buffers = cursor.fetchone()[0]
    return {
        **base_machine_info(),
        "Django": django.__version__,
        "PostgreSQL": server,
        "shared_buffers": shared_buffers,
    }


@functools.cache
def view_of(url: str) -> str:
    """The URL's view name (writer:chapter_detail ...), for latencies per page kind."""
    return resolve(url.split("?", 1)[0]).view_name


def _table_row(r: RunResult) -> str:
    ok = len(r.latencies_ms)
    errors = ", ".join(f"{v} {k}" for k, v in r.errors.items()) or "0"
    if r.retries:
        errors += f" ({r.retries} retried)"
    return (
        f"| {r.scenario} | {r.clients} | {r.think:g} | {r.requests:,} | {r.requests / r.duration:.1f} "
        f"| {r.pct(50):.1f} | {r.pct(95):.1f} | {r.pct(99):.1f} | {max(r.latencies_ms, default=float('nan')):.0f} "
        f"| {errors} | {1000 * r.server_cpu_s / max(1, ok):.1f} | {1000 * r.db_cpu_s / max(1, ok):.1f} "
        f"| {r.client_cpu_s / r.duration * 100:.0f} % | {100 * r.machine_busy:.0f} % | {r.other_cores:.2f} "
        f"| {r.load_before:.2f} | {min(r.loads, default=float('nan')):.2f}-{max(r.loads, default=float('nan')):.2f} |"
    )


def render(
    args: argparse.Namespace, info: dict[str, str], counts: dict[str, int], build: dict[str, float] | None,
    db_mib: float, started_at: dt.datetime, wait: tuple[float, float], runs: list[RunResult],
    saturation: list[RunResult], profiles: list[Profile], scenario_list: list[Scenario], total_s: float,
) -> str:
    before, waited = wait
    lines = [
        f"## {started_at:%Y-%m-%d %H:%M} UTC: web pages under load, {args.clients} clients ("
        + ", ".join(s.name for s in scenario_list) + ")",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + ". "
        f"1-minute load average {before:.2f} when the load phase was due; each run with think time waited for "
        f"one below {args.wait_load} (at most {args.wait_max:.0f} s in all; {waited:.0f} s waited), and the "
        "table gives it at the start of each run and during it (sampled every 5 s, our own server and clients "
        "included), with the CPU that other processes took meanwhile: other engineers' test suites share the "
        "2 cores.",
        f"Server: gunicorn `mesu_web.wsgi` on 127.0.0.1, {args.workers} workers x {args.threads} threads ("
        + ("gthread" if args.threads > 1 else "sync")
        + ("; `./dev up` runs 2 x 4" if (args.workers, args.threads) != (2, 4) else ", as `./dev up`")
        + "), production settings: DJANGO_DEBUG=0, a random DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS, "
        "DJANGO_SECURE_COOKIES=false (plain HTTP on loopback), CONN_MAX_AGE "
        f"{settings.DATABASES['default']['CONN_MAX_AGE']} s, database sessions, static files collected and "
        f"served by WhiteNoise; niceness {os.nice(0)} for server and clients.",
        "Data (own database, COPY"
        + (f", built in {sum(build.values()):.0f} s: " + ", ".join(f"{k} {v:.1f} s" for k, v in build.items())
           if build else ", reused from an earlier run")
        + f"; {db_mib:,.0f} MiB): " + ", ".join(f"{v:,} {k}" for k, v in counts.items()) + ".",
        f"Clients: Python asyncio + httpx {httpx.__version__} in one process, one logged-in session and one "
        f"keep-alive connection each, a think time of {0.5 * args.think:g}-{1.5 * args.think:g} s (uniform) "
        f"between pages; {WARMUP_S:.0f} s of warm-up, then {args.duration:.0f} s measured per page. Latency: "
        "client-side, request sent to body read. Errors: exceptions, a status other than 200, a page without the "
        "user's name in its header; a request whose keep-alive connection the server had just closed is sent "
        "again once, as browsers do, and counted as retried (its latency includes both tries).",
        "",
    ]
    for s in scenario_list:
        lines.append(f"- {s.name}: {s.what}.")
    lines += [
        "",
        "| page | clients | think s | requests | req/s | p50 ms | p95 ms | p99 ms | max ms | errors "
        "| gunicorn CPU ms/page | PostgreSQL CPU ms/page | client CPU | both cores busy | other processes (cores) "
        "| load avg at start | load avg during |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_table_row(r) for r in runs + saturation]
    lines += ["", "The runs with think time, by view:", "", "| page | view | pages | p50 ms | p95 ms | p99 ms |",
              "|---|---|---|---|---|---|"]
    for r in runs:
        for view, values in sorted(r.by_view.items()):
            lines.append(
                f"| {r.scenario} | `{view}` | {len(values):,} | {r.pct(50, values):.1f} | {r.pct(95, values):.1f} "
                f"| {r.pct(99, values):.1f} |"
            )
    lines += [
        "",
        "Each page alone, in-process (Django's test client, same settings and data; "
        f"{PROFILE_URLS} pages of each kind, after one untimed view each):",
        "",
        "| page | queries | SQL ms (median / max) | view ms (median / max) | page KiB "
        "| slowest query (EXPLAIN ANALYZE: execution + planning, top node) |",
        "|---|---|---|---|---|---|",
    ]
    for p in profiles:
        q = f"{min(p.queries)}" if min(p.queries) == max(p.queries) else f"{min(p.queries)}-{max(p.queries)}"
        lines.append(
            f"| {p.scenario} | {q} | {statistics.median(p.sql_ms):.1f} / {max(p.sql_ms):.1f} "
            f"| {statistics.median(p.view_ms):.1f} / {max(p.view_ms):.1f} | {statistics.median(p.kib):.0f} "
            f"| {p.slowest[0]:.2f} ms + {p.slowest[1]:.2f} ms planning: {p.slowest[2]} |"
        )
    lines.append("")
    for r in runs:
        verdict = "**met**" if r.meets_goal else "**missed**"
        lines.append(
            f"- Goal (p95 <= {GOAL_P95_MS:.0f} ms, 0 errors), {r.scenario}: {verdict} (p95 {r.pct(95):.1f} ms, "
            f"{r.error_count} errors, {r.requests / r.duration:.1f} pages/s)."
        )
    for r in saturation:
        mean = statistics.fmean(r.latencies_ms) if r.latencies_ms else float("nan")
        lines.append(
            f"- No think time, {r.scenario}: **{r.requests / r.duration:.1f} pages/s** with both cores "
            f"{100 * r.machine_busy:.0f} % busy; the clients queue, so the mean latency ({mean:.0f} ms) is "
            f"{r.clients} clients / throughput (Little's law)."
        )
    lines.append(f"- Whole bench {total_s / 60:.1f} min.")
    return "\n".join(lines) + "\n"


def db_size_mib(name: str) -> float:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_database_size(%s)", [name])
        return cursor.fetchone()[0] / 2**20


def main() -> None:
    args = ARGS
    started_at = dt.datetime.now(dt.UTC)
    started = time.monotonic()
    env = os.environ.copy()
    manage = [sys.executable, str(ROOT / "manage.py")]
    build: dict[str, float] | None = None
    if args.reuse and database_exists(args.db):
        print(f"reusing database {args.db}", flush=True)
    else:
        print(f"creating database {args.db} and migrating ...", flush=True)
        recreate_database(args.db)
        t = time.monotonic()
        subprocess.run([*manage, "migrate", "--no-input", "-v", "0"], cwd=ROOT, env=env, check=True)
        migrate_s = time.monotonic() - t
        print(f"  migrated in {migrate_s:.0f} s; loading the data ...", flush=True)
        with psycopg.connect(conninfo(args.db), autocommit=True) as conn:
            build = {"migrate": migrate_s, **build_data(conn, args, dt.datetime.now(dt.UTC))}
        print("  " + ", ".join(f"{k} {v:.1f} s" for k, v in build.items()), flush=True)
    subprocess.run([*manage, "collectstatic", "--no-input", "-v", "0"], cwd=ROOT, env=env, check=True)
    counts = data_counts()
    print("data:", counts, flush=True)
    rng = random.Random(args.seed)
    chosen = set(args.pages.split(","))
    scenario_list = [s for s in scenarios(args, rng) if s.key in chosen]
    if args.profile_only:
        try:
            for scenario in scenario_list:
                cprofiler = cProfile.Profile() if args.cprofile else None
                profile(scenario, random.Random(args.seed), cprofiler)
                if cprofiler is not None:
                    stats = pstats.Stats(cprofiler)
                    stats.sort_stats("tottime").print_stats(args.cprofile)
                    stats.sort_stats("cumulative").print_stats(args.cprofile)
        finally:
            if not args.keep:
                drop_database(args.db)
        return
    info = machine_info()
    db_mib = db_size_mib(args.db)
    connection.close()

    port = args.port or free_port()
    base = f"http://127.0.0.1:{port}"
    log = Path(settings.VAR_DIR) / "log" / "web_load_gunicorn.log"
    runs: list[RunResult] = []
    saturation: list[RunResult] = []
    try:
        before = loadavg()
        print(f"\nload phase: 1-minute load average {before:.2f}", flush=True)
        waited = 0.0
        server = start_gunicorn(args, port, log)
        print(f"gunicorn on {base} (pid {server.pid}, log {log})", flush=True)
        try:
            css = httpx.get(f"{base}/static/css/mesu.css")
            print(f"  static css via WhiteNoise: HTTP {css.status_code}, {len(css.content):,} bytes", flush=True)
            for k, scenario in enumerate(scenario_list):
                # Each page's run waits for a quiet machine (our own previous run's load decays meanwhile).
                load, wait_s = wait_for_quiet(args.wait_load, max(0.0, args.wait_max - waited))
                waited += wait_s
                run = run_load(scenario, base, args.think, args.duration, args.seed + k, server.pid, args.db)
                run.load_before, run.waited_s = load, wait_s
                runs.append(run)
            if args.saturation > 0:
                for k, scenario in enumerate(scenario_list):
                    load = loadavg()
                    run = run_load(scenario, base, 0.0, args.saturation, args.seed + 10 + k, server.pid, args.db)
                    run.load_before = load
                    saturation.append(run)
        finally:
            stop_gunicorn(server)
        profiles = [profile(s, random.Random(args.seed)) for s in scenario_list]
    finally:
        if not args.keep:
            drop_database(args.db)
            print(f"dropped database {args.db}", flush=True)

    report = render(
        args, info, counts, build, db_mib, started_at, (before, waited), runs, saturation, profiles,
        scenario_list, time.monotonic() - started,
    )
    print()
    print(report)
    append_report(args.out, report)
    print(f"appended to {args.out}")


if __name__ == "__main__":
    main()
