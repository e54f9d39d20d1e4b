"""Benchmark: the partner API under N concurrent clients (default 50): GET /api/v1/stories and
GET /api/v1/requests/{id}, p50/p95 per route.

    nice -n 10 .venv/bin/python bench/api_load.py [--clients 50] [--duration 30] [--think 0.5]
        [--stories 2000] [--requests 200] [--workers 2 --threads 4] [--db mesu_api_load] [--keep]

1. Data, in its own database (--db, dropped and created again, migrated, dropped at the end unless --keep):
   --stories published stories opted in to placements (half classified: IAB categories and a tier), one
   brand, one partner with its contact, --requests finished requests of the partner (2 options each, one
   approved), and one token with every scope. The token's rate is set past any load here (10^6 a minute,
   straight on the row: the pages cap it at PARTNER_API_MAX_RATE_PER_MINUTE) so that the numbers are the
   API's, not the limiter's refusals; the limiter still counts every call in Redis.
2. The server: gunicorn with production settings, started and stopped by bench/web_load.py's own
   `start_gunicorn` / `stop_gunicorn` (same flags, same environment).
3. The load: --clients asyncio + httpx clients, each with its own keep-alive connection, alternating the two
   routes at random (a random page of stories, a random request of the partner's), waiting a think time
   (uniform 0.5-1.5 x --think seconds) between calls; 3 s of warm-up, then --duration seconds measured.
   Latency is the client's: request sent to body read. An error is an exception or a status other than 200.
   Every call writes its audit row: that write is part of what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

WARMUP_S = 3.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--db", default="mesu_api_load", help="the benchmark's own database (dropped and created)"
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured")
    parser.add_argument("--think", type=float, default=0.5, help="mean seconds between a client's calls")
    parser.add_argument("--stories", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    return parser.parse_args()


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    os.environ["POSTGRES_DB"] = ARGS.db

# bench/web_load.py sets the production environment and calls django.setup() when imported; its server
# helpers are reused as they are.
import httpx  # noqa: E402
import web_load  # noqa: E402
from benchdb import drop_database, recreate_database  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402


def build_data(args: argparse.Namespace) -> tuple[str, list[int], int]:
    """The stories, the partner's requests and its token: (the token's key, request ids, stories listed)."""
    from brands import partners
    from brands import services as brand_services
    from brands.models import PartnerToken, RiskTier, StoryBrandSettings, StorySuitability
    from tests.factories import UserFactory, approved_brand
    from writer.models import GenerationOption, GenerationRequest, ReviewStatus, Story

    author = UserFactory(username="api-author", roles=["author"])
    contact = UserFactory(username="api-contact", roles=["reader"])
    manager = UserFactory(username="api-manager", roles=["brand_manager"])
    brand = approved_brand(name="Loadwave", managers=[manager], description="Surfboards.")
    brand_services.asset_create(brand=brand, kind="product", name="Board", terms="Loadwave")
    stories = Story.objects.bulk_create(
        Story(
            owner=author,
            slug=f"api-load-{i}",
            title=f"Load story {i}",
            summary="A seaside story.",
            genre="slice of life",
            is_published=True,
        )
        for i in range(args.stories)
    )
    StoryBrandSettings.objects.bulk_create(StoryBrandSettings(story=s, opt_in=True) for s in stories)
    tiers = [RiskTier.LOW, RiskTier.MEDIUM, RiskTier.HIGH]
    StorySuitability.objects.bulk_create(
        StorySuitability(story=s, categories=["IAB1", f"IAB{i % 20 + 1}"], risk_tier=tiers[i % 3])
        for i, s in enumerate(stories)
        if i % 2 == 0
    )
    partner = partners.partner_create(name="Load partner", brands=[brand], contact_username=contact.username)
    token, key = partners.token_create(
        partner=partner, name="load", scopes=list(partners.SCOPES), rate_per_minute=60
    )
    PartnerToken.objects.filter(pk=token.pk).update(rate_per_minute=10**6)
    now = timezone.now()
    requests = GenerationRequest.objects.bulk_create(
        GenerationRequest(
            story=stories[i % len(stories)],
            requested_by=contact,
            kind="reader",
            engine="vllm",
            max_new_tokens=400,
            next_number=1,
            n=2,
            status="succeeded",
            use_brands=True,
            partner=partner,
            requested_brand=brand,
            finished_at=now,
        )
        for i in range(args.requests)
    )
    GenerationOption.objects.bulk_create(
        GenerationOption(
            request=r,
            index=i,
            text="Lou waxed her Loadwave board. " * 40,
            format_ok=True,
            brand=brand,
            review_status=ReviewStatus.APPROVED if i == 0 else ReviewStatus.PENDING,
        )
        for r in requests
        for i in range(2)
    )
    return key, [r.pk for r in requests], len(stories)


async def client_loop(
    base: str,
    key: str,
    ids: list[int],
    pages: int,
    args: argparse.Namespace,
    stop_at: float,
    measure_from: float,
    rng: random.Random,
    results: dict[str, list[float]],
    errors: dict[str, int],
) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30.0) as client:
        while time.monotonic() < stop_at:
            if rng.random() < 0.5:
                route, url = "GET /api/v1/stories", f"/api/v1/stories?page={rng.randint(1, pages)}"
            else:
                route, url = "GET /api/v1/requests/{id}", f"/api/v1/requests/{rng.choice(ids)}"
            started = time.monotonic()
            try:
                response = await client.get(url)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            elapsed_ms = (time.monotonic() - started) * 1000
            if started >= measure_from:
                if ok:
                    results.setdefault(route, []).append(elapsed_ms)
                else:
                    errors[route] = errors.get(route, 0) + 1
            await asyncio.sleep(args.think * rng.uniform(0.5, 1.5))


async def run_load(base: str, key: str, ids: list[int], pages: int, args: argparse.Namespace):  # noqa: ANN201
    results: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    start = time.monotonic()
    measure_from, stop_at = start + WARMUP_S, start + WARMUP_S + args.duration
    rng = random.Random(args.seed)
    await asyncio.gather(
        *(
            client_loop(
                base,
                key,
                ids,
                pages,
                args,
                stop_at,
                measure_from,
                random.Random(rng.random()),
                results,
                errors,
            )
            for _ in range(args.clients)
        )
    )
    return results, errors


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    args = ARGS
    print(f"creating database {args.db} and migrating ...", flush=True)
    recreate_database(args.db)
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "--no-input", "-v", "0"],
        cwd=ROOT,
        env=os.environ.copy(),
        check=True,
    )
    try:
        key, ids, stories = build_data(args)
        pages = max(1, -(-stories // settings.PARTNER_API_PAGE_SIZE))
        connection.close()
        port = args.port or web_load.free_port()
        base = f"http://127.0.0.1:{port}"
        log = Path(settings.VAR_DIR) / "log" / "api_load_gunicorn.log"
        load_before = web_load.loadavg()
        server = web_load.start_gunicorn(args, port, log)
        try:
            results, errors = asyncio.run(run_load(base, key, ids, pages, args))
        finally:
            web_load.stop_gunicorn(server)
        print(
            f"\n{args.clients} clients, think {args.think} s, {args.duration:.0f} s measured, "
            f"gunicorn {args.workers}x{args.threads}, load average before {load_before:.2f}, "
            f"after {web_load.loadavg():.2f}"
        )
        print(f"{'route':32} {'calls':>7} {'errors':>7} {'p50 ms':>8} {'p95 ms':>8} {'rps':>6}")
        for route in ("GET /api/v1/stories", "GET /api/v1/requests/{id}"):
            values = results.get(route, [])
            if not values:
                print(f"{route:32} {0:>7} {errors.get(route, 0):>7}")
                continue
            print(
                f"{route:32} {len(values):>7} {errors.get(route, 0):>7} {percentile(values, 50):>8.1f} "
                f"{percentile(values, 95):>8.1f} {len(values) / args.duration:>6.1f}"
            )
    finally:
        if not args.keep:
            drop_database(args.db)


if __name__ == "__main__":
    main()
