"""Readers' ratings and people's preferences between options: what they say, and the preference
dataset (`prompt, chosen, rejected`) the training pages export.

Three signals, all between options of one generation request:

- a rating: the reader who asked for a personalised chapter gives each option shown to them 1-5 stars
  (`option_rate`; one rating per reader and option, rating again changes it);
- a reader's choice: "I prefer this one", where two or more options were shown (`option_prefer`): the
  option over each other option shown; choosing again replaces the earlier choice;
- an author's acceptance (`author_preference_record`, called by `services.option_accept`): the accepted
  option over each other option of the request that could have been accepted.

A reader's ratings and choices are limited (`PREFERENCE_RATE_LIMIT_PER_MINUTE` and `..._PER_HOUR`
actions per reader, counted in Django's cache, as the login limit in mesu_web/ratelimit.py counts
failures): a flood from one reader is refused with how long to wait, and the rows stay one per reader
and option whatever it sends.

`preference_pairs` turns them into training rows: the prompt is the writer's own (build_prompt on the
story's chapters before the request's chapter, the reader's wish and the story bible, with the request's
engine's tokenizer), rebuilt when the dataset is made, because a request keeps only its prompt's report;
chosen and rejected are completions in the writer's format (reasoning, then the chapter in SOLUTION tags).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from mesu_web.action_limits import ActionLimited, Limit, per_minute_and_hour, spend, wait_words
from mesu_web.errors import ApplicationError
from writer.models import (
    Chapter,
    GenerationOption,
    GenerationRequest,
    OptionPreference,
    OptionRating,
)
from writer.prompting import REASONING_END, REASONING_START, SOLUTION_END, SOLUTION_START

logger = logging.getLogger(__name__)

SOURCES = ("reader", "author")
DEFAULT_PER_MINUTE = 20  # a reader rating four options and changing their mind twice stays well inside
DEFAULT_PER_HOUR = 200
KEY_PREFIX = "preference-actions"


class PreferenceLimited(ActionLimited):
    """Too many ratings or choices from one reader: `retry_after` seconds until the next is taken."""


def writer_of(request: GenerationRequest) -> str:
    """Who wrote a request's options: its adapter's name, else the base model (the name the engine
    reported, else settings.WRITER_MODEL, as the leaderboard names the base)."""
    adapter = (request.adapter or "").strip()
    if adapter and adapter != settings.WRITER_MODEL:
        return adapter[:128]
    return (request.model_name or settings.WRITER_MODEL)[:128]


# --- The limit ---------------------------------------------------------------------------------------


def limits() -> tuple[Limit, Limit]:
    """(actions, window seconds, window in words) of each limit."""
    return per_minute_and_hour("PREFERENCE_RATE_LIMIT", DEFAULT_PER_MINUTE, DEFAULT_PER_HOUR)


def _spend(user: AbstractBaseUser) -> None:
    """Count one rating or choice of `user`; PreferenceLimited when it is over a limit (mesu_web.action_limits:
    counted before the check; nothing counted while the cache is unreachable, the rows stay one per reader
    and option regardless)."""
    spend(
        key_prefix=KEY_PREFIX,
        user_id=user.pk,
        limits=limits(),
        error=PreferenceLimited,
        message=lambda most, words, wait: (
            f"You have rated or chosen {most} times in {words}, the most we take from one reader. "
            f"Try again in {wait_words(wait)}."
        ),
    )


# --- Reader ratings and choices ---------------------------------------------------------------------


def _shown_options(request: GenerationRequest) -> list[GenerationOption]:
    """The options of a reader's request that the reader was shown (a brand let them through)."""
    return [o for o in GenerationOption.objects.filter(request=request).order_by("index") if o.visible_to_requester]


def _check_reader(option: GenerationOption, user: AbstractBaseUser) -> GenerationRequest:
    request = option.request
    if request.kind != GenerationRequest.Kind.READER:
        raise ApplicationError("Only a reader's personalised chapter is rated; an author accepts an option instead.")
    if request.requested_by_id != user.pk:
        raise ApplicationError("Only the reader who asked for this chapter can rate it.")
    if request.status != GenerationRequest.Status.SUCCEEDED:
        raise ApplicationError("This chapter is still being written; rate it once it is ready.")
    if not option.visible_to_requester:
        raise ApplicationError("This option is waiting for a brand's review; it can be rated once you can read it.")
    return request


def parse_stars(value: object) -> int:
    """1-5 from a form value; ApplicationError otherwise."""
    try:
        stars = int(str(value).strip())
    except (TypeError, ValueError):
        stars = 0
    if not OptionRating.MIN_STARS <= stars <= OptionRating.MAX_STARS:
        raise ApplicationError(
            f"Rate with {OptionRating.MIN_STARS} to {OptionRating.MAX_STARS} stars "
            f"({OptionRating.MAX_STARS}: you loved it)."
        )
    return stars


def option_rate(*, option: GenerationOption, user: AbstractBaseUser, stars: object) -> OptionRating:
    """The reader's stars for an option of their personalised chapter (changed if they rated it before)."""
    value = parse_stars(stars)
    request = _check_reader(option, user)
    _spend(user)
    rating, _ = OptionRating.objects.update_or_create(
        option=option, reader=user, defaults={"stars": value, "writer": writer_of(request)}
    )
    return rating


@transaction.atomic
def option_prefer(*, option: GenerationOption, user: AbstractBaseUser) -> list[OptionPreference]:
    """The reader prefers `option` to each other option they were shown; replaces their earlier choice."""
    request = _check_reader(option, user)
    others = [o for o in _shown_options(request) if o.pk != option.pk]
    if not others:
        raise ApplicationError("You were shown one option only: there is nothing to prefer it to. Rate it instead.")
    _spend(user)
    GenerationRequest.objects.select_for_update().filter(pk=request.pk).first()  # one choice at a time
    OptionPreference.objects.filter(request=request, user=user, source=OptionPreference.Source.READER).delete()
    writer = writer_of(request)
    return OptionPreference.objects.bulk_create(
        OptionPreference(
            request=request, user=user, source=OptionPreference.Source.READER, chosen=option, rejected=other,
            chosen_writer=writer, rejected_writer=writer,
        )
        for other in others
    )


@dataclass(frozen=True)
class ReaderState:
    """What a reader said about one request: stars by option id, and the option they prefer (or None)."""

    stars: dict[int, int]
    preferred: int | None


def reader_state(*, request: GenerationRequest, user: AbstractBaseUser) -> ReaderState:
    stars = dict(
        OptionRating.objects.filter(option__request=request, reader=user).values_list("option_id", "stars")
    )
    preferred = (
        OptionPreference.objects.filter(request=request, user=user, source=OptionPreference.Source.READER)
        .values_list("chosen_id", flat=True)
        .first()
    )
    return ReaderState(stars=stars, preferred=preferred)


# --- Authors --------------------------------------------------------------------------------------


def author_preference_record(
    *, request: GenerationRequest, chosen: GenerationOption, user: AbstractBaseUser
) -> list[OptionPreference]:
    """The author accepted `chosen`: it is preferred to each other option of the request that could have
    been accepted (a placement its brand has not let through could not, so it is no rejection). Called
    inside option_accept's transaction; a second call records nothing new."""
    writer = writer_of(request)
    others = [
        o for o in GenerationOption.objects.filter(request=request).exclude(pk=chosen.pk) if o.visible_to_requester
    ]
    return OptionPreference.objects.bulk_create(
        [
            OptionPreference(
                request=request, user=user, source=OptionPreference.Source.AUTHOR, chosen=chosen, rejected=other,
                chosen_writer=writer, rejected_writer=writer,
            )
            for other in others
        ],
        ignore_conflicts=True,
    )


# --- The dataset ------------------------------------------------------------------------------------


def completion_of(option: GenerationOption) -> str:
    """The option as the writer writes it (as training.distill.full_completion, SFT's target): the
    reasoning between its tags, then the chapter in SOLUTION tags; an answer that missed the format, as
    it came."""
    if not option.format_ok:
        return option.raw_output or option.text
    return f"{REASONING_START}\n{option.reasoning.strip()}\n{REASONING_END}\n{SOLUTION_START}\n{option.text.strip()}\n{SOLUTION_END}"


def parse_source(source: str) -> tuple[str, ...]:
    source = (source or "all").strip().lower()
    if source == "all":
        return SOURCES
    if source not in SOURCES:
        raise ApplicationError(f"Unknown source {source!r}: choose reader, author or all.")
    return (source,)


def _pair_ids(sources: tuple[str, ...]) -> list[tuple[int, int, int, str]]:
    """(request id, chosen id, rejected id, source) of every pair, by request: the explicit preferences,
    then, for readers, pairs from their ratings (the option with more stars over the one with fewer, of
    the same request) where the reader's own choice does not already compare those two options."""
    pairs: list[tuple[int, int, int, str]] = []
    said: set[tuple[int, frozenset[int]]] = set()  # (user, {a, b}) already compared by a choice
    rows = OptionPreference.objects.filter(source__in=sources).order_by("request_id", "chosen_id", "rejected_id")
    for request_id, user_id, chosen, rejected, source in rows.values_list(
        "request_id", "user_id", "chosen_id", "rejected_id", "source"
    ):
        pairs.append((request_id, chosen, rejected, source))
        said.add((user_id, frozenset((chosen, rejected))))
    if "reader" in sources:
        by_reader: dict[tuple[int, int], list[tuple[int, int]]] = {}
        ratings = OptionRating.objects.order_by("option__request_id", "option_id").values_list(
            "option__request_id", "reader_id", "option_id", "stars"
        )
        for request_id, reader_id, option_id, stars in ratings:
            by_reader.setdefault((request_id, reader_id), []).append((option_id, stars))
        for (request_id, reader_id), rated in by_reader.items():
            for i, (a, stars_a) in enumerate(rated):
                for b, stars_b in rated[i + 1 :]:
                    if stars_a == stars_b or (reader_id, frozenset((a, b))) in said:
                        continue
                    chosen, rejected = (a, b) if stars_a > stars_b else (b, a)
                    pairs.append((request_id, chosen, rejected, "reader"))
    pairs.sort(key=lambda p: (p[0], p[3], p[1], p[2]))
    return pairs


def _engine_counter(name: str) -> Callable[[str], int]:
    from writer.engines import get_engine

    try:
        return get_engine(name).count_tokens
    except ApplicationError:  # an engine no longer configured: the estimate vLLM's engine falls back to
        return lambda text: math.ceil(len(text) / 4)


def request_prompt(request: GenerationRequest, count_tokens: Callable[[str], int]) -> list[dict[str, str]]:
    """The chat messages of a request's prompt, as generation_request_run builds them (no brand brief):
    the story's metadata and chapters before the request's chapter as they are now, the reader's wish, the
    story bible and the author's note, within the same budget."""
    from writer.bible import bible_selector
    from writer.engines import sampling_from_settings
    from writer.prompting import ChapterText, build_prompt, prompt_budget
    from writer.services import story_meta

    story = request.story
    chapters = [
        ChapterText(number=c.number, title=c.title, text=c.text)
        for c in Chapter.objects.filter(story=story, number__lt=request.next_number).order_by("number")
    ]
    sampling = sampling_from_settings(max_tokens=request.max_new_tokens)
    budget = prompt_budget(context_tokens=settings.WRITER_CONTEXT_TOKENS, max_new_tokens=sampling.answer_tokens)
    built = build_prompt(
        meta=story_meta(story),
        chapters=chapters,
        count_tokens=count_tokens,
        budget_tokens=budget,
        preference=request.preference,
        next_number=request.next_number,
        bible=bible_selector(story=story, next_number=request.next_number, count_tokens=count_tokens),
        author_note=story.author_note,
    )
    return built.messages


def preference_pairs(
    *,
    source: str = "all",
    count_tokens: Callable[[str], int] | None = None,
    skipped: Counter | None = None,
    chunk: int = 200,
) -> Iterator[dict[str, object]]:
    """Every preference pair as {"prompt", "chosen", "rejected", "source", "writer"}: `prompt` the chat
    messages (system, user) the writer was given, `chosen` and `rejected` completions in its format,
    `source` "reader" or "author", `writer` the adapter (or base model) that wrote both.

    Left out (and counted in `skipped` by reason): pairs where an option carries a brand (its prompt had
    a brief, its text a placement), or has no text; requests whose prompt cannot be rebuilt (the story's
    details alone are over the budget now). `count_tokens`: the tokenizer to budget with (default: the
    request's engine's). Requests are read `chunk` at a time."""
    sources = parse_source(source)
    skipped = Counter() if skipped is None else skipped
    pairs = _pair_ids(sources)
    counters: dict[str, Callable[[str], int]] = {}
    for start in range(0, len(pairs), chunk * 4):
        block = pairs[start : start + chunk * 4]
        request_ids = {p[0] for p in block}
        option_ids = {i for p in block for i in p[1:3]}
        requests = GenerationRequest.objects.select_related("story").in_bulk(request_ids)
        options = GenerationOption.objects.in_bulk(option_ids)
        prompts: dict[int, list[dict[str, str]] | None] = {}
        for request_id, chosen_id, rejected_id, pair_source in block:
            request, chosen, rejected = requests.get(request_id), options.get(chosen_id), options.get(rejected_id)
            if request is None or chosen is None or rejected is None:
                skipped["deleted"] += 1
                continue
            if chosen.brand_id or rejected.brand_id:
                skipped["brand placement"] += 1
                continue
            if not chosen.text.strip() or not rejected.text.strip():
                skipped["empty option"] += 1
                continue
            if request_id not in prompts:
                counter = count_tokens or counters.setdefault(request.engine, _engine_counter(request.engine))
                try:
                    prompts[request_id] = request_prompt(request, counter)
                except ApplicationError as exc:
                    logger.info("Request %s's prompt cannot be rebuilt: %s", request_id, exc.message)
                    prompts[request_id] = None
            prompt = prompts[request_id]
            if prompt is None:
                skipped["prompt over the budget"] += 1
                continue
            yield {
                "prompt": prompt,
                "chosen": completion_of(chosen),
                "rejected": completion_of(rejected),
                "source": pair_source,
                "writer": writer_of(request),
            }


def write_jsonl(rows: Iterable[dict[str, object]], handle) -> Counter:  # noqa: ANN001 (a text file)
    """One JSON row a line into `handle`; returns the rows written by source and by writer."""
    import json

    counts: Counter = Counter()
    for row in rows:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        counts["pairs"] += 1
        counts[f"source:{row['source']}"] += 1
        counts[f"writer:{row['writer']}"] += 1
    return counts

