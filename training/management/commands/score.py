"""python manage.py score --candidate FILE --reference FILE [--rewards a,b]: every reward metric as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mesu_web.errors import ApplicationError
from training import rewards
from writer.text_input import decode_text_file


def _read(path: Path, what: str) -> str:
    if not path.is_file():
        raise CommandError(f"No such {what} file: {path}")
    try:
        return decode_text_file(
            path.read_bytes(), filename=path.name, max_bytes=settings.MESU_UPLOAD_MAX_BYTES
        )
    except ApplicationError as exc:
        raise CommandError(exc.message) from exc


class Command(BaseCommand):
    help = (
        "Score a candidate chapter (a raw model answer with its tags, or plain text) against the real "
        "one with every reward (or --rewards). Prints JSON {reward: score}; null where a reward does "
        "not apply (brand_subtlety without --brand-terms). Notes (e.g. METEOR without WordNet) go to stderr."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--candidate", required=True, type=Path, help="The generated chapter (.txt or .md)."
        )
        parser.add_argument("--reference", required=True, type=Path, help="The real chapter (.txt or .md).")
        parser.add_argument(
            "--rewards",
            default="",
            help=f"Comma-separated rewards (default: all). Valid: {', '.join(rewards.REWARDS)}.",
        )
        parser.add_argument(
            "--brand-terms",
            default="",
            help="Comma-separated names the brand brief asked for (brand_subtlety).",
        )
        parser.add_argument(
            "--brand-cap", type=int, default=1, help="Most placements the brief allowed (default 1)."
        )
        parser.add_argument(
            "--brand-slogan",
            action="append",
            default=[],
            help="A brand slogan (brand_subtlety); repeat for several (slogans may contain commas).",
        )

    def handle(self, *args, **options) -> None:
        names = options["rewards"].strip() or list(rewards.REWARDS)
        candidate = _read(options["candidate"], "candidate")
        reference = _read(options["reference"], "reference")
        terms = [t.strip() for t in options["brand_terms"].split(",") if t.strip()]
        slogans = [t.strip() for t in options["brand_slogan"] if t.strip()]
        try:
            rewards.get_reward_funcs(names)  # a typo fails before any model loads
            scores = rewards.score_all(
                candidate,
                reference,
                names=names,
                brand_terms=terms or None,
                brand_cap=options["brand_cap"],
                brand_slogans=slogans or None,
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        if "meteor" in scores and rewards.meteor.wordnet_available is False:
            self.stderr.write(
                "METEOR used exact and stem matches only: WordNet is missing (scripts/setup_wordnet.sh)."
            )
        self.stdout.write(json.dumps(scores))
