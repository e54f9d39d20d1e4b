from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from brands import iab, suitability
from mesu_web.errors import EngineError
from writer.models import Story


class Command(BaseCommand):
    help = (
        "Classify stories into IAB content categories and a risk tier (brands/suitability.py): those never "
        "classified, or whose text changed since (`--force`: every one). An author's own choice is left "
        "as it is. One line per story: slug, tier, categories, and whether it was classified or kept."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--story", action="append", default=[], help="A story's slug (repeatable).")
        parser.add_argument("--force", action="store_true", help="Classify even unchanged stories again.")

    def handle(self, *args, **options) -> None:
        stories = Story.objects.order_by("pk")
        if options["story"]:
            stories = stories.filter(slug__in=options["story"])
            missing = set(options["story"]) - set(stories.values_list("slug", flat=True))
            if missing:
                raise CommandError(f"No story with the slug {', '.join(sorted(missing))}.")
        failed = 0
        for story in stories.iterator():
            before = suitability.story_suitability_get(story=story)
            try:
                row = suitability.story_suitability_classify(story=story, force=options["force"])
            except EngineError as exc:
                failed += 1
                self.stderr.write(f"{story.slug}: not classified: {exc}")
                continue
            state = (
                "kept (author)"
                if row.source == "author"
                else (
                    "unchanged"
                    if before is not None and before.text_hash == row.text_hash and not options["force"]
                    else "classified"
                )
            )
            labels = ", ".join(iab.label(c) for c in row.categories) or "no category"
            self.stdout.write(f"{story.slug}: {row.risk_tier}; {labels}; {state}")
        if failed:
            raise CommandError(f"{failed} stories could not be classified.")
