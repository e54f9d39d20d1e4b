from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from mesu_web.errors import ApplicationError
from writer import exports, selectors
from writer.models import Story


class Command(BaseCommand):
    help = (
        "Export a story as EPUB, DOCX or Markdown (chapter 0 as the title page, sponsored chapters with "
        'their disclosure label). Prints {"story": "<slug>", "format": "...", "chapters": N, "path": "..."}.'
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--story", required=True, help="The story's slug or id.")
        parser.add_argument("--format", required=True, dest="fmt", help=f"One of: {', '.join(exports.FORMATS)}.")
        parser.add_argument("--out", required=True, help="The file to write (replaced if it exists).")
        parser.add_argument(
            "--reader",
            default="",
            help="Export this reader's personalised copy (the chapters they were served) instead of the story.",
        )

    def handle(self, *args, **options) -> None:
        story = self._story(options["story"])
        try:
            fmt = exports.export_format(options["fmt"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        reader = self._reader(options["reader"], story) if options["reader"] else None
        try:
            result, path = exports.story_export_to_path(story=story, fmt=fmt, path=options["out"], reader=reader)
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(
            json.dumps({"story": story.slug, "format": fmt.name, "chapters": result.chapters, "path": str(path)})
        )

    def _story(self, key: str) -> Story:
        """By slug first (a slug may be all digits), then by id."""
        key = key.strip()
        story = Story.objects.select_related("owner").filter(slug=key).first()
        if story is None and key.isdigit():
            story = Story.objects.select_related("owner").filter(pk=int(key)).first()
        if story is None:
            raise CommandError(f"No story with the slug or id {key!r}.")
        return story

    def _reader(self, username: str, story: Story):  # noqa: ANN202
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        if not selectors.story_can_view(story=story, user=user):
            raise CommandError(f"{username} cannot read {story.slug!r}: it is not published.")
        if not exports.can_export_copy(user):
            raise CommandError(f"{username} is not a reader: only readers and authors have a copy of a story.")
        return user
