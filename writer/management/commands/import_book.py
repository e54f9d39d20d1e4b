from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from brands.matching import story_brands_opt_in
from mesu_web.errors import ApplicationError
from writer import roles, services
from writer.book_import import BOOK_SUFFIXES, read_book_file


class Command(BaseCommand):
    help = (
        f"Create a story from a book ({', '.join(BOOK_SUFFIXES)}), split at its chapter headings. "
        'Prints {"story": "<slug>", "chapters": N}.'
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--title", required=True)
        parser.add_argument("--author-name", default="")
        parser.add_argument("--owner", default="", help="Username of the owning author (default: the first author).")
        parser.add_argument("--publish", action="store_true")
        parser.add_argument(
            "--brands-opt-in",
            action="store_true",
            help="Opt the story in to brand placements (the author's choice; off by default).",
        )

    def handle(self, *args, **options) -> None:
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        owner = self._owner(options["owner"])
        try:
            book = read_book_file(path, max_bytes=settings.MESU_UPLOAD_MAX_BYTES)
            story = services.book_import(
                owner=owner, book=book, title=options["title"], author_name=options["author_name"]
            )
            if options["publish"]:
                services.story_set_published(story=story, published=True)
            if options["brands_opt_in"]:
                story_brands_opt_in(story=story)
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(json.dumps({"story": story.slug, "chapters": story.chapters.count()}))

    def _owner(self, username: str):  # noqa: ANN202
        User = get_user_model()
        if username:
            user = User.objects.filter(username=username).first()
            if user is None:
                raise CommandError(f"No user named {username!r}.")
            return user
        user = User.objects.filter(groups__name=roles.AUTHOR).order_by("pk").first()
        if user is None:
            raise CommandError("No author exists yet: run `manage.py seed_demo` or pass --owner.")
        return user
