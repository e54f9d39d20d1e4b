"""Partners and their API tokens (issue 17): services and selectors of the partner API.

A partner is an app (a retail app, an agency) that reaches stories through `/api/v1/` for its brands.
Staff create partners and link them to brands; the managers of those brands (and staff) issue tokens with
scopes and a rate, see each token once, and revoke them. A token is kept as its sha256 with its first
characters (`prefix`) to tell tokens apart; the token itself is never stored.

A partner's request for a branded next chapter is a *reader* request made by the partner's contact user
(`Partner.contact`): the partner asks as a reader of the published story, so the author's opt-in, the
author's exclusions, the brand's suitability and the contact's own reader settings (age, sponsored
chapters switch) all rule, as they do for any reader. A partner without a contact cannot ask (409): staff
set the contact, a user of the partner's own, when they create it.
A brand staff have not approved (brands.approval) is never requested (409).

Every call is audited (`api_audit_record`), refused ones too, and each token is rate limited per minute
in Redis (`mesu_web.action_limits`).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.http import Http404
from django.utils import timezone

from brands.approval import not_placeable_reason
from brands.campaigns import budget_left
from brands.matching import brand_use_for_request, brands_blocked_for_story
from brands.models import (
    ApiAuditEntry,
    Brand,
    Campaign,
    Partner,
    PartnerToken,
    RiskTier,
    StoryBrandSettings,
    StorySuitability,
)
from brands.selectors import user_can_manage_brands
from mesu_web import action_limits
from mesu_web.errors import ApplicationError
from writer.models import GenerationOption, GenerationRequest, ReviewStatus, Story

AnyUser = AbstractBaseUser | AnonymousUser

SCOPES = tuple(name for name, _ in PartnerToken.SCOPES)
TOKEN_PREFIX = "mesu_"
PREFIX_CHARS = 12  # "mesu_" + 7 random characters: PartnerToken.prefix's length
TIER_ORDER = [RiskTier.LOW, RiskTier.MEDIUM, RiskTier.HIGH]  # the floor tier is never listed
LAST_USED_EVERY = timedelta(seconds=60)  # last_used_at is written at most once a minute per token


# --- Errors the API turns into statuses -------------------------------------------------------------


class PartnerApiError(ApplicationError):
    """An API refusal with its HTTP status; the message is the answer's `detail`."""

    status = 400


class ApiNotFound(PartnerApiError):
    status = 404


class ApiConflict(PartnerApiError):
    status = 409


class TokenRefused(PartnerApiError):
    status = 401


class ScopeMissing(PartnerApiError):
    status = 403


class ApiRateLimited(action_limits.ActionLimited):
    status = 429


# --- Partners ---------------------------------------------------------------------------------------


def _clean_partner_fields(*, name: str, contact_username: str, exclude_pk: int | None) -> tuple[str, object]:
    name = " ".join((name or "").split())
    if not name:
        raise ApplicationError("Give the partner a name.")
    if len(name) > 120:
        raise ApplicationError("Keep the partner's name under 120 characters.")
    taken = Partner.objects.filter(name__iexact=name)
    if exclude_pk is not None:
        taken = taken.exclude(pk=exclude_pk)
    if taken.exists():
        raise ApplicationError(f"A partner called {name!r} exists already.")
    contact = None
    contact_username = (contact_username or "").strip()
    if contact_username:
        contact = get_user_model().objects.filter(username=contact_username, is_active=True).first()
        if contact is None:
            raise ApplicationError(
                f"No active user {contact_username!r}: create the contact's account first."
            )
    return name, contact


@transaction.atomic
def partner_create(
    *, name: str, brands: Iterable[Brand] = (), contact_username: str = "", is_active: bool = True
) -> Partner:
    name, contact = _clean_partner_fields(name=name, contact_username=contact_username, exclude_pk=None)
    partner = Partner.objects.create(name=name, contact=contact, is_active=is_active)
    partner.brands.set(list(brands))
    return partner


@transaction.atomic
def partner_update(
    *,
    partner: Partner,
    name: str,
    brands: Iterable[Brand],
    contact_username: str = "",
    is_active: bool = True,
) -> Partner:
    name, contact = _clean_partner_fields(name=name, contact_username=contact_username, exclude_pk=partner.pk)
    partner.name, partner.contact, partner.is_active = name, contact, is_active
    partner.save(update_fields=["name", "contact", "is_active"])
    partner.brands.set(list(brands))
    return partner


def partner_list_for_user(*, user: AnyUser) -> QuerySet[Partner]:
    """Staff see every partner; a brand manager the partners of the brands they manage; anyone else none."""
    if not user_can_manage_brands(user=user):
        return Partner.objects.none()
    qs = Partner.objects.annotate(
        token_count=Count("tokens", filter=Q(tokens__revoked_at__isnull=True), distinct=True)
    ).order_by("name")
    if user.is_staff:
        return qs
    return qs.filter(pk__in=Partner.objects.filter(brands__managers=user).values("pk"))


def partner_get_for_user(*, pk: int, user: AnyUser) -> Partner:
    """404 for a partner the user may not see, so nobody learns another brand's partners."""
    partner = partner_list_for_user(user=user).filter(pk=pk).select_related("contact").first()
    if partner is None:
        raise Http404("No such partner.")
    return partner


# --- Tokens -----------------------------------------------------------------------------------------


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _clean_scopes(scopes: Sequence[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ApplicationError(f"Unknown scope {', '.join(unknown)}: choose from {', '.join(SCOPES)}.")
    chosen = [s for s in SCOPES if s in set(scopes)]
    if not chosen:
        raise ApplicationError("Choose at least one scope for the token.")
    return chosen


def token_create(
    *, partner: Partner, name: str, scopes: Sequence[str], rate_per_minute: int
) -> tuple[PartnerToken, str]:
    """A new token and its key, which is shown once: only its sha256 and its prefix are kept."""
    name = " ".join((name or "").split())
    if not name:
        raise ApplicationError("Name the token (what uses it, e.g. 'shop app, production').")
    if len(name) > 80:
        raise ApplicationError("Keep the token's name under 80 characters.")
    most = settings.PARTNER_API_MAX_RATE_PER_MINUTE
    if not isinstance(rate_per_minute, int) or not 1 <= rate_per_minute <= most:
        raise ApplicationError(f"The rate must be between 1 and {most} calls a minute.")
    chosen = _clean_scopes(scopes)
    if not partner.is_active:
        raise ApplicationError(f"{partner.name} is inactive: no new token until staff make it active again.")
    for _ in range(5):  # a prefix collision (7 random characters) is rare; try again
        key = TOKEN_PREFIX + secrets.token_urlsafe(32)
        prefix = key[:PREFIX_CHARS]
        if not PartnerToken.objects.filter(prefix=prefix).exists():
            break
    token = PartnerToken.objects.create(
        partner=partner,
        name=name,
        prefix=prefix,
        key_hash=key_hash(key),
        scopes=chosen,
        rate_per_minute=rate_per_minute,
    )
    return token, key


def token_revoke(*, token: PartnerToken) -> PartnerToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token


def token_list(*, partner: Partner) -> QuerySet[PartnerToken]:
    return PartnerToken.objects.filter(partner=partner).order_by("revoked_at", "-created_at")


def token_get_for_partner(*, partner: Partner, pk: int) -> PartnerToken:
    token = PartnerToken.objects.filter(partner=partner, pk=pk).first()
    if token is None:
        raise Http404("No such token.")
    return token


def token_for_key(*, key: str) -> PartnerToken | None:
    """The token of `key` (revoked or not), with its partner; None for an unknown key."""
    if not key.startswith(TOKEN_PREFIX) or len(key) > 200:
        return None
    return PartnerToken.objects.select_related("partner").filter(key_hash=key_hash(key)).first()


def token_check(*, token: PartnerToken | None) -> PartnerToken:
    """`token` if it is live; TokenRefused (401) for none (an unknown key), a revoked one, or one of an
    inactive partner."""
    if token is None:
        raise TokenRefused("Unknown token: send a valid token as 'Authorization: Bearer <token>'.")
    if token.revoked_at is not None:
        raise TokenRefused(f"The token {token.prefix}… was revoked.")
    if not token.partner.is_active:
        raise TokenRefused(f"The partner {token.partner.name} is inactive.")
    return token


def token_authenticate(*, key: str) -> PartnerToken:
    return token_check(token=token_for_key(key=key))


def token_rate_spend(*, token: PartnerToken) -> None:
    """Count one call of `token` this minute; ApiRateLimited (429, with the seconds to wait) over its rate."""
    action_limits.spend(
        key_prefix="partner-api",
        user_id=token.pk,
        limits=[(token.rate_per_minute, 60, "a minute")],
        error=ApiRateLimited,
        message=lambda most, words, wait: (
            f"This token may make {most} calls {words}: try again in {action_limits.wait_words(wait)}."
        ),
    )


def token_scope_check(*, token: PartnerToken, scope: str) -> None:
    if scope not in token.scopes:
        raise ScopeMissing(
            f"This token lacks the scope {scope!r} (it has: {', '.join(token.scopes) or 'none'})."
        )


def token_touch(*, token: PartnerToken) -> None:
    """Record the token's use, at most once a minute (a write per call would be a write per call)."""
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_EVERY:
        PartnerToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now


# --- The audit --------------------------------------------------------------------------------------


def api_audit_record(
    *, token: PartnerToken | None, method: str, path: str, status: int, ip: str | None, detail: str = ""
) -> ApiAuditEntry:
    return ApiAuditEntry.objects.create(
        token=token,
        partner_id=token.partner_id if token else None,
        method=method[:8],
        path=path[:300],
        status=status,
        ip=ip if ip and ip != "unknown" else None,
        detail=detail[:300],
    )


def audit_list(*, partner: Partner) -> QuerySet[ApiAuditEntry]:
    return ApiAuditEntry.objects.filter(partner=partner).select_related("token").order_by("-created_at")


# --- Stories open to placements ---------------------------------------------------------------------


def stories_open_to_placements(*, category: str = "", max_tier: str = "") -> QuerySet[Story]:
    """Published stories their authors opted in, never a floor-tier one; unclassified stories are listed
    (their category and tier unknown) unless a filter asks for a category or a tier."""
    opted_in = StoryBrandSettings.objects.filter(opt_in=True).values("story_id")
    qs = (
        Story.objects.filter(is_published=True, pk__in=opted_in)
        .exclude(suitability__risk_tier=RiskTier.FLOOR)
        .select_related("suitability")
        .order_by("-updated_at", "pk")
    )
    if category:
        qs = qs.filter(suitability__categories__contains=[category])
    if max_tier:
        if max_tier not in TIER_ORDER:
            raise PartnerApiError(f"max_tier must be one of {', '.join(TIER_ORDER)}.")
        qs = qs.filter(suitability__risk_tier__in=TIER_ORDER[: TIER_ORDER.index(max_tier) + 1])
    return qs


def story_suitability_of(story: Story) -> StorySuitability | None:
    try:
        return story.suitability
    except StorySuitability.DoesNotExist:
        return None


# --- Requests ---------------------------------------------------------------------------------------


def partner_request_create(
    *, partner: Partner, story_slug: str, brand_slug: str, n: int, preference: str = ""
) -> GenerationRequest:
    """A branded next chapter of a published story for one of `partner`'s brands, asked as a reader by
    the partner's contact. ApiNotFound for a story or brand the partner may not reach; ApiConflict (with
    the reason) when the story may not carry the brand: not opted in, excluded, unsuitable, no contact."""
    from writer.partner_requests import generation_request_create  # the writer's public door for it

    story = Story.objects.filter(slug=story_slug, is_published=True).first()
    if story is None:
        raise ApiNotFound(f"No published story {story_slug!r}.")
    brand = partner.brands.filter(slug=brand_slug).first()
    if brand is None:
        raise ApiNotFound(f"{partner.name} has no brand {brand_slug!r}.")
    if not brand.is_active:
        raise ApiConflict(f"The brand {brand.name} is inactive.")
    not_placeable = not_placeable_reason(brand)  # brands.approval: never a request for a brand not approved
    if not_placeable:
        raise ApiConflict(not_placeable)
    if partner.contact is None or not partner.contact.is_active:
        raise ApiConflict(f"{partner.name} has no active contact user to ask as: staff must set one.")
    places, note = brand_use_for_request(story=story, reader=partner.contact, use_brands=True)
    if not places:
        raise ApiConflict(note or "This story takes no brand placements.")
    blocked = brands_blocked_for_story(story=story, preference=preference).get(brand.pk)
    if blocked:
        raise ApiConflict(f"{brand.name} may not appear in this story: {'; '.join(blocked)}.")
    try:
        return generation_request_create(
            story=story,
            user=partner.contact,
            kind=GenerationRequest.Kind.READER,
            n=n,
            preference=preference,
            use_brands=True,
            partner=partner,
            requested_brand=brand,
        )
    except action_limits.ActionLimited as exc:
        # Over the contact's generation quota (writer/quotas.py: the partner's requests count against its
        # contact user like any reader's): 429 with Retry-After.
        raise ApiRateLimited(exc.message, retry_after=exc.retry_after) from exc
    except ApplicationError as exc:
        raise PartnerApiError(exc.message) from exc


def request_get_for_partner(*, partner: Partner, pk: int) -> GenerationRequest:
    """404 for another partner's request (never 403: nobody learns it exists)."""
    request = (
        GenerationRequest.objects.select_related("story", "requested_brand")
        .filter(pk=pk, partner=partner)
        .first()
    )
    if request is None:
        raise ApiNotFound("No such request.")
    return request


def request_options(*, request: GenerationRequest) -> list[GenerationOption]:
    """The options of a finished request; their text is for the partner only once its brand approved it."""
    if request.status != GenerationRequest.Status.SUCCEEDED:
        return []
    return list(request.options.select_related("brand").order_by("index"))


def option_text_for_partner(option: GenerationOption) -> str | None:
    return option.text if option.review_status == ReviewStatus.APPROVED else None


# --- Reports ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignReport:
    id: int
    name: str
    brand: str
    status: str
    pricing: str
    price: Decimal
    starts_on: object
    ends_on: object
    budget_total: Decimal
    budget_daily: Decimal | None
    spent: Decimal
    budget_left_today: Decimal
    impressions: int
    placements: int
    disclosure_opens: int


def _campaigns_of(partner: Partner) -> QuerySet[Campaign]:
    return (
        Campaign.objects.filter(brand__in=partner.brands.all())
        .select_related("brand")
        .annotate(
            impression_count=Count("views", distinct=True),
            placement_count=Count(
                "options", filter=Q(options__review_status=ReviewStatus.APPROVED), distinct=True
            ),
        )
        .order_by("brand__name", "-starts_on", "name")
    )


def _report(campaign: Campaign) -> CampaignReport:
    from brands.models import DisclosureOpen

    return CampaignReport(
        id=campaign.pk,
        name=campaign.name,
        brand=campaign.brand.slug,
        status=campaign.status,
        pricing=campaign.pricing,
        price=campaign.price,
        starts_on=campaign.starts_on,
        ends_on=campaign.ends_on,
        budget_total=campaign.budget_total,
        budget_daily=campaign.budget_daily,
        spent=campaign.spent,
        budget_left_today=budget_left(campaign=campaign),
        impressions=campaign.impression_count,
        placements=campaign.placement_count,
        disclosure_opens=DisclosureOpen.objects.filter(campaign=campaign).count(),
    )


def campaign_reports(*, partner: Partner) -> list[CampaignReport]:
    """Impressions, approved placements, spend and budget of the campaigns of `partner`'s brands."""
    return [_report(c) for c in _campaigns_of(partner)]


def campaign_report(*, partner: Partner, pk: int) -> CampaignReport:
    campaign = _campaigns_of(partner).filter(pk=pk).first()
    if campaign is None:
        raise ApiNotFound("No such campaign.")
    return _report(campaign)
