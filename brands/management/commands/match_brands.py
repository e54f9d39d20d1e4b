from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from brands import matching, selectors, services
from mesu_web.errors import ApplicationError
from writer.models import Story


class Command(BaseCommand):
    help = (
        "Print the brand assets nearest to a story as a JSON list of {brand, asset, distance} (cosine "
        "distance, nearest first), after safety filtering: inactive brands, brands whose banned themes "
        "occur in the story or the preference, brands the author excluded, and assets farther than "
        "BRAND_MATCH_MAX_DISTANCE never appear. A story that has not opted in to brand placements is "
        "matched all the same, and the command says so on stderr: it only shows matches and changes "
        "nothing but missing embeddings; the opt-in (and a reader's opt-out) is enforced when a chapter "
        "is generated. "
        "Assets without an up-to-date embedding are embedded first, synchronously (no worker needed)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--story", required=True, help="The story's slug.")
        parser.add_argument("--k", type=int, default=5, help="At most this many assets (default 5).")
        parser.add_argument("--preference", default="", help="A reader's wish in plain words.")
        parser.add_argument(
            "--max-distance",
            type=float,
            default=None,
            help="Cosine distance above which an asset is no match (default: BRAND_MATCH_MAX_DISTANCE).",
        )

    def handle(self, *args, **options) -> None:
        story = Story.objects.filter(slug=options["story"]).first()
        if story is None:
            raise CommandError(f"No story with the slug {options['story']!r}.")
        if options["k"] < 1:
            raise CommandError("--k must be at least 1.")
        if not selectors.sponsorship_allowed(story=story):
            self.stderr.write(
                f"{story.title!r} has not opted in to brand placements: its chapters get no brand until the "
                "author opts in (the story's page, or import_book --brands-opt-in). Its matches would be:"
            )
        try:
            embedded = services.assets_embed_missing()
            if embedded:
                self.stderr.write(f"Embedded {embedded} brand asset(s) that had no up-to-date vector.")
            matches = matching.brand_match_for_story(
                story=story,
                preference=options["preference"],
                k=options["k"],
                max_distance=options["max_distance"],
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        payload = [
            {"brand": m.brand.name, "asset": m.asset.name, "distance": round(m.distance, 4)} for m in matches
        ]
        self.stdout.write(json.dumps(payload, ensure_ascii=False))
