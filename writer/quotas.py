"""Generation quotas and fair scheduling: how many chapters one person, and one address, may ask the writer
for, and in which order the queue serves them.

Three limits, each for a user and for an address (every user behind it together: sign-up farms):
requests queued or being written at once (`concurrent`), asked in any 60 minutes (`per_hour`) and in any 24
hours (`per_day`). Rolling windows counted from `GenerationRequest` rows (indexes on (requested_by,
created_at) and (client_address, created_at)): a request is a row anyway, so nothing else is kept and a
cache that fails never opens the gate. Every request made counts, failed ones too; trying a failed one
again makes no new row and counts against `concurrent` only.

Whose limits: staff have the largest; the story's author asking for their own story has larger ones than a
reader (anyone asking for a chapter of another's story). Defaults come from the settings
GENERATION_QUOTA_<READER|AUTHOR|STAFF>_<CONCURRENT|PER_HOUR|PER_DAY>; a user's `GenerationQuota` row, set by
staff, replaces a default field by field (0 stops that user asking). The address limits
(GENERATION_QUOTA_ADDRESS_*) hold everyone but staff; requests of the partner API carry no address and count
against the partner's contact user like any reader's (staff give a busy partner's contact its own row).

Race-safe: `quota_check` runs inside the transaction that creates the row and first takes a PostgreSQL
transaction advisory lock on the user (then on the address, always in that order: no deadlock), so two
requests at the same instant are counted one after the other.

Fair scheduling: `queue_priority` gives a request whose user already has k requests queued or running the
Redis priority 3k (at most 9; 0 runs first, settings CELERY_BROKER_TRANSPORT_OPTIONS), so everyone's first
request runs before anyone's second. A request the recovery sweep enqueues again has priority 0: it has
waited longest.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, FilteredRelation, Q, QuerySet
from django.utils import timezone

from mesu_web.action_limits import ActionLimited
from mesu_web.errors import ApplicationError
from mesu_web.jobs.locks import lock_class, transaction_lock
from writer.models import GenerationQuota, GenerationRequest
from writer.roles import AUTHOR

HOUR = timedelta(hours=1)
DAY = timedelta(hours=24)
ACTIVE = (GenerationRequest.Status.QUEUED, GenerationRequest.Status.RUNNING)
FIELDS = ("concurrent", "per_hour", "per_day")
TIERS = ("reader", "author", "staff")
# What a refusal for a full `concurrent` tells the partner API to wait (Retry-After): about one request's run.
CONCURRENT_RETRY_SECONDS = 60
# Redis priorities (0 first) by requests the user already has waiting or running: 0, 3, 6, 9 = kombu's steps.
PRIORITY_STEP = 3
PRIORITY_LOWEST = 9


class QuotaExceeded(ActionLimited):
    """A generation request over a limit. `limit`: concurrent, per_hour or per_day; `scope`: user or address;
    `retry_after`: seconds until a request can pass (for `concurrent`, a guess: when one ends)."""

    def __init__(self, message: str, *, limit: str, scope: str, retry_after: int) -> None:
        super().__init__(message, retry_after=retry_after)
        self.limit = limit
        self.scope = scope
        self.extra.update(limit=limit, scope=scope)


@dataclass(frozen=True)
class Limits:
    concurrent: int
    per_hour: int
    per_day: int


@dataclass(frozen=True)
class Usage:
    concurrent: int
    last_hour: int
    last_day: int


@dataclass(frozen=True)
class Allowance:
    """What a user may still ask for (the story page shows it beside the button)."""

    limits: Limits
    usage: Usage

    @property
    def left_hour(self) -> int:
        return max(0, self.limits.per_hour - self.usage.last_hour)

    @property
    def left_day(self) -> int:
        return max(0, self.limits.per_day - self.usage.last_day)

    @property
    def busy(self) -> bool:
        """As many requests waiting or being written as the user may have."""
        return self.usage.concurrent >= self.limits.concurrent

    @property
    def text(self) -> str:
        """"3 of 12 this hour left", or the day's count when that is the tighter one."""
        if self.left_day < self.left_hour:
            return f"{self.left_day} of {self.limits.per_day} today left"
        return f"{self.left_hour} of {self.limits.per_hour} this hour left"


# --- Limits -------------------------------------------------------------------------------------------


def tier_of(user: AbstractBaseUser, *, own_story: bool) -> str:
    if user.is_staff:
        return "staff"
    return "author" if own_story else "reader"


def default_limits(tier: str) -> Limits:
    if tier not in (*TIERS, "address"):
        raise ValueError(f"Unknown quota tier {tier!r}: one of {', '.join(TIERS)}, address.")
    prefix = f"GENERATION_QUOTA_{tier.upper()}"
    return Limits(*(int(getattr(settings, f"{prefix}_{field.upper()}")) for field in FIELDS))


def merged(base: Limits, quota: GenerationQuota | None) -> Limits:
    """`base` with each field the user's own row sets (an empty field keeps the default)."""
    if quota is None:
        return base
    return Limits(*(getattr(base, f) if getattr(quota, f) is None else getattr(quota, f) for f in FIELDS))


def user_limits(*, user: AbstractBaseUser, own_story: bool) -> Limits:
    quota = GenerationQuota.objects.filter(user_id=user.pk).first()
    return merged(default_limits(tier_of(user, own_story=own_story)), quota)


# --- Usage ----------------------------------------------------------------------------------------------


def _usage_of(rows: QuerySet[GenerationRequest], now: datetime) -> Usage:
    counts = rows.filter(Q(status__in=ACTIVE) | Q(created_at__gte=now - DAY)).aggregate(
        concurrent=Count("pk", filter=Q(status__in=ACTIVE)),
        last_hour=Count("pk", filter=Q(created_at__gte=now - HOUR)),
        last_day=Count("pk", filter=Q(created_at__gte=now - DAY)),
    )
    return Usage(counts["concurrent"], counts["last_hour"], counts["last_day"])


def user_usage(*, user_id: int, now: datetime | None = None) -> Usage:
    return _usage_of(GenerationRequest.objects.filter(requested_by_id=user_id), now or timezone.now())


def address_usage(*, address: str, now: datetime | None = None) -> Usage:
    return _usage_of(GenerationRequest.objects.filter(client_address=address), now or timezone.now())


def allowance_for(*, user: AbstractBaseUser, own_story: bool) -> Allowance | None:
    """The user's limits and usage in one query (the user row, its quota row and its recent requests joined);
    None for an anonymous visitor."""
    if not user.is_authenticated:
        return None
    now = timezone.now()
    recent = Q(recent__status__in=ACTIVE)
    row = (
        get_user_model()
        .objects.filter(pk=user.pk)
        .annotate(
            recent=FilteredRelation(
                "generation_requests",
                condition=Q(generation_requests__status__in=ACTIVE)
                | Q(generation_requests__created_at__gte=now - DAY),
            ),
            concurrent=Count("recent", filter=recent),
            last_hour=Count("recent", filter=Q(recent__created_at__gte=now - HOUR)),
            last_day=Count("recent", filter=Q(recent__created_at__gte=now - DAY)),
        )
        .values("concurrent", "last_hour", "last_day", *(f"generation_quota__{f}" for f in FIELDS))
        .first()
    )
    if row is None:
        return None
    base = default_limits(tier_of(user, own_story=own_story))
    own = {f: row[f"generation_quota__{f}"] for f in FIELDS}
    limits = Limits(*(getattr(base, f) if own[f] is None else own[f] for f in FIELDS))
    return Allowance(limits, Usage(row["concurrent"], row["last_hour"], row["last_day"]))


# --- The check ------------------------------------------------------------------------------------------


def valid_address(address: str | None) -> str | None:
    """`address` when it is an IP address (v4 or v6, as PostgreSQL's inet keeps it), else None."""
    if not address:
        return None
    try:
        return str(ipaddress.ip_address(address.strip()))
    except ValueError:
        return None


def _wait_words(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    if minutes < 60:
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    hours, rest = divmod(minutes, 60)
    words = f"{hours} hour{'s' if hours != 1 else ''}"
    return f"{words} {rest} minute{'s' if rest != 1 else ''}" if rest else words


def _chapters(n: int) -> str:
    return f"{n} chapter{'s' if n != 1 else ''}"


def _seconds_until_below(rows: QuerySet[GenerationRequest], *, since: datetime, window: timedelta, most: int,
                         count: int, now: datetime) -> int:
    """Seconds until fewer than `most` of `rows` made after `since` remain in the window: when the
    (count - most + 1)-th oldest of them leaves it."""
    oldest = list(
        rows.filter(created_at__gte=since).order_by("created_at").values_list("created_at", flat=True)[
            count - most : count - most + 1
        ]
    )
    if not oldest:  # gone between the count and now
        return 1
    return max(1, math.ceil((oldest[0] + window - now).total_seconds()))


def _check(rows: QuerySet[GenerationRequest], usage: Usage, limits: Limits, *, scope: str, now: datetime) -> None:
    mine = scope == "user"
    if limits.concurrent == 0 or limits.per_hour == 0 or limits.per_day == 0:
        raise QuotaExceeded(
            "Asking for chapters is turned off for your account; staff can tell you why.",
            limit="concurrent" if limits.concurrent == 0 else "per_hour" if limits.per_hour == 0 else "per_day",
            scope=scope, retry_after=int(DAY.total_seconds()),
        )
    if usage.concurrent >= limits.concurrent:
        being = "being written or waiting for the writer"
        if mine:
            message = (f"You have {_chapters(usage.concurrent)} {being}; ask again when one is done "
                       f"({limits.concurrent} at a time is the limit).")
        else:
            message = (f"{_chapters(usage.concurrent)} asked from your network are {being}; ask again when one "
                       f"is done ({limits.concurrent} at a time from one address is the limit).")
        raise QuotaExceeded(message, limit="concurrent", scope=scope, retry_after=CONCURRENT_RETRY_SECONDS)
    for field, count, window, words in (
        ("per_hour", usage.last_hour, HOUR, "an hour"),
        ("per_day", usage.last_day, DAY, "a day"),
    ):
        most = getattr(limits, field)
        if count < most:
            continue
        wait = _seconds_until_below(rows, since=now - window, window=window, most=most, count=count, now=now)
        who = "" if mine else " from one address"
        raise QuotaExceeded(
            f"You can ask for another chapter in {_wait_words(wait)}: {_chapters(most)} {words}{who} is the limit.",
            limit=field, scope=scope, retry_after=wait,
        )


def quota_check(*, user: AbstractBaseUser, own_story: bool, client_address: str | None) -> None:
    """Refuse (QuotaExceeded) a new generation request of `user` from `client_address` over any limit.
    Must run inside the transaction that then creates the row: it takes the user's (and the address's)
    advisory lock until that transaction ends, so concurrent requests are counted one after another."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("quota_check must run inside the transaction that creates the request")
    now = timezone.now()
    transaction_lock("writer.quota.user", user.pk)
    mine = GenerationRequest.objects.filter(requested_by_id=user.pk)
    _check(mine, _usage_of(mine, now), user_limits(user=user, own_story=own_story), scope="user", now=now)
    if client_address and not user.is_staff:
        transaction_lock("writer.quota.address", lock_class(client_address))
        theirs = GenerationRequest.objects.filter(client_address=client_address)
        _check(theirs, _usage_of(theirs, now), default_limits("address"), scope="address", now=now)


def concurrent_check(*, user: AbstractBaseUser, own_story: bool) -> None:
    """Trying a failed request again makes no new row, but queues one more: the `concurrent` limit only."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("concurrent_check must run inside the transaction that queues the request")
    transaction_lock("writer.quota.user", user.pk)
    mine = GenerationRequest.objects.filter(requested_by_id=user.pk)
    active = mine.filter(status__in=ACTIVE).count()
    # The windows are not counted again (Usage 0): a limit of 0 still refuses.
    _check(mine, Usage(active, 0, 0), user_limits(user=user, own_story=own_story), scope="user", now=timezone.now())


# --- Fair scheduling ------------------------------------------------------------------------------------


def queue_priority(*, user_id: int, exclude_pk: int | None = None) -> int:
    """The Redis priority of a request of `user_id` (0 runs first): PRIORITY_STEP for each of the user's
    other requests that are queued or running, at most PRIORITY_LOWEST."""
    pending = GenerationRequest.objects.filter(requested_by_id=user_id, status__in=ACTIVE)
    if exclude_pk is not None:
        pending = pending.exclude(pk=exclude_pk)
    return min(PRIORITY_LOWEST, PRIORITY_STEP * pending.count())


# --- Staff: who asks most, and setting a user's limits --------------------------------------------------


@dataclass(frozen=True)
class UserLine:
    user_id: int
    username: str
    is_staff: bool
    is_author: bool
    usage: Usage
    reader: Limits  # on others' stories (staff: their own tier)
    author: Limits  # on their own stories
    quota: GenerationQuota | None


@dataclass(frozen=True)
class AddressLine:
    address: str
    users: int
    usage: Usage


def heaviest_users(*, limit: int = 50, now: datetime | None = None) -> list[UserLine]:
    """The users who asked for the most chapters in the last 24 hours (then those with most waiting), with
    their usage and effective limits: three queries whatever `limit` is."""
    now = now or timezone.now()
    rows = list(
        GenerationRequest.objects.filter(Q(status__in=ACTIVE) | Q(created_at__gte=now - DAY))
        .values("requested_by_id", "requested_by__username", "requested_by__is_staff")
        .annotate(
            concurrent=Count("pk", filter=Q(status__in=ACTIVE)),
            last_hour=Count("pk", filter=Q(created_at__gte=now - HOUR)),
            last_day=Count("pk", filter=Q(created_at__gte=now - DAY)),
        )
        .order_by("-last_day", "-concurrent", "requested_by__username")[:limit]
    )
    ids = [r["requested_by_id"] for r in rows]
    quotas = {q.user_id: q for q in GenerationQuota.objects.filter(user_id__in=ids).select_related("updated_by")}
    authors = set(get_user_model().objects.filter(pk__in=ids, groups__name=AUTHOR).values_list("pk", flat=True))
    lines = []
    for r in rows:
        staff, quota = r["requested_by__is_staff"], quotas.get(r["requested_by_id"])
        lines.append(
            UserLine(
                user_id=r["requested_by_id"], username=r["requested_by__username"], is_staff=staff,
                is_author=r["requested_by_id"] in authors,
                usage=Usage(r["concurrent"], r["last_hour"], r["last_day"]),
                reader=merged(default_limits("staff" if staff else "reader"), quota),
                author=merged(default_limits("staff" if staff else "author"), quota),
                quota=quota,
            )
        )
    return lines


def heaviest_addresses(*, limit: int = 20, now: datetime | None = None) -> list[AddressLine]:
    """The addresses that asked for the most chapters in the last 24 hours, with how many users asked from each."""
    now = now or timezone.now()
    rows = (
        GenerationRequest.objects.filter(client_address__isnull=False)
        .filter(Q(status__in=ACTIVE) | Q(created_at__gte=now - DAY))
        .values("client_address")
        .annotate(
            users=Count("requested_by_id", distinct=True),
            concurrent=Count("pk", filter=Q(status__in=ACTIVE)),
            last_hour=Count("pk", filter=Q(created_at__gte=now - HOUR)),
            last_day=Count("pk", filter=Q(created_at__gte=now - DAY)),
        )
        .order_by("-last_day", "-concurrent", "client_address")[:limit]
    )
    return [
        AddressLine(r["client_address"], r["users"], Usage(r["concurrent"], r["last_hour"], r["last_day"]))
        for r in rows
    ]


def quota_set(
    *,
    user: AbstractBaseUser,
    staff_user: AbstractBaseUser,
    concurrent: int | None,
    per_hour: int | None,
    per_day: int | None,
    note: str = "",
) -> GenerationQuota | None:
    """Give `user` their own limits (None: the role's default for that field); all three None and no note
    removes the user's row (back to the defaults). Staff only."""
    if not (staff_user.is_authenticated and staff_user.is_staff):
        raise PermissionDenied("Only staff set generation quotas.")
    note = " ".join((note or "").split())
    if len(note) > GenerationQuota._meta.get_field("note").max_length:
        raise ApplicationError("Keep the note under 200 characters.")
    values = {"concurrent": concurrent, "per_hour": per_hour, "per_day": per_day}
    for field, value in values.items():
        if value is not None and not 0 <= value <= (1000 if field == "concurrent" else 100_000):
            raise ApplicationError(f"{field.replace('_', ' ')} must be between 0 and "
                                   f"{1000 if field == 'concurrent' else 100_000}, or empty for the default.")
    if all(v is None for v in values.values()) and not note:
        GenerationQuota.objects.filter(user_id=user.pk).delete()
        return None
    quota, _ = GenerationQuota.objects.update_or_create(
        user_id=user.pk, defaults={**values, "note": note, "updated_by": staff_user}
    )
    return quota
