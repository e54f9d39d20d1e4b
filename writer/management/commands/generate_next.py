from __future__ import annotations

import json
import sys

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from mesu_web.errors import ApplicationError
from writer import services
from writer.models import GenerationRequest, Story


class Command(BaseCommand):
    help = (
        "Write the next chapter of a story synchronously, through the same service as the Celery task, "
        "and print one JSON object with the request and its options."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--story", required=True, help="The story's slug.")
        parser.add_argument("--n", type=int, default=None, help="Options to write (1-4; default 3).")
        parser.add_argument("--preference", default="", help="A reader's wish in plain words.")
        parser.add_argument("--engine", choices=["vllm", "local"], default=None)
        parser.add_argument("--adapter", default=None, help="A LoRA adapter name (default: the active one).")
        parser.add_argument("--max-new-tokens", type=int, default=None)
        parser.add_argument(
            "--reader", default="", help="Ask as this reader (a personalised chapter) instead of the author."
        )
        brands = parser.add_mutually_exclusive_group()
        brands.add_argument(
            "--brands", dest="use_brands", action="store_const", const=True, default=None,
            help="Place matched brands in the options (where the story's opt-in and the reader allow it).",
        )
        brands.add_argument("--no-brands", dest="use_brands", action="store_const", const=False)

    def handle(self, *args, **options) -> None:
        story = Story.objects.filter(slug=options["story"]).first()
        if story is None:
            raise CommandError(f"No story with the slug {options['story']!r}.")
        user, kind = story.owner, GenerationRequest.Kind.AUTHOR
        if options["reader"]:
            user = get_user_model().objects.filter(username=options["reader"]).first()
            if user is None:
                raise CommandError(f"No user named {options['reader']!r}.")
            kind = GenerationRequest.Kind.READER
        try:
            request = services.generation_request_create(
                story=story,
                user=user,
                kind=kind,
                n=options["n"],
                preference=options["preference"],
                engine=options["engine"],
                adapter=options["adapter"],
                max_new_tokens=options["max_new_tokens"],
                use_brands=options["use_brands"],
                enqueue=False,
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        try:
            request = services.generation_request_run(request_id=request.pk)
        except ApplicationError as exc:
            services.generation_request_fail(request_id=request.pk, error=exc.message)
        request.refresh_from_db()
        payload = {
            "request": request.pk,
            "status": request.status,
            "error": request.error,
            "prompt_tokens": request.prompt_tokens,
            "brand_note": request.brand_note,
            "options": [
                {
                    "id": o.pk,
                    "format_ok": o.format_ok,
                    "repetition": o.quality.repetition,
                    "longest_repeat": o.quality.longest_repeat,
                    "words": o.quality.words,
                    "reasoning": o.reasoning,
                    "text": o.text,
                    "tokens": o.tokens,
                    "brand": o.brand.name if o.brand else None,
                    "asset": o.asset.name if o.asset else None,
                    "mentions": o.mentions,
                    # Branded options: whether the chapter names its asset, and the chapter as written
                    # before the placement (write first, then place; "" with the brief method).
                    "named": bool(o.mentions) if o.brand_id else None,
                    "draft": o.draft if o.brand_id else None,
                    # Placed after writing: ROUGE-L of the text and BERTScore of the passage against the draft.
                    "similarity": o.placement_similarity or None,
                    "placement_found": o.placement_found,
                    "review_status": o.review_status,
                }
                for o in request.options.select_related("brand", "asset").order_by("index")
            ],
        }
        self.stdout.write(json.dumps(payload, ensure_ascii=False))
        if request.status != GenerationRequest.Status.SUCCEEDED:
            sys.exit(1)
