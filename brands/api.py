"""The partner API (issue 17), version 1: JSON at /api/v1/, schema at /api/v1/openapi.json, docs at
/api/v1/docs.

Mounted by mesu_web/urls.py as `include("brands.api")` (this module's `urlpatterns`, namespace
`partner_api`). Each route needs a partner token with one scope (brands/api_auth.py); every call to a
route is audited, refused ones too (`_audited`). Errors are `{"detail": "..."}` with their status: 401 no
or bad token, 403 a missing scope, 404 what the partner may not reach (another partner's request is 404,
never 403), 409 a story that may not carry the brand (with the reason), 422 a malformed body or query
(with `errors`), 429 over the token's rate or the contact's generation quota (with Retry-After). The views stay thin: brands/partners.py.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, reverse
from django.views.decorators.http import require_GET
from ninja import Field, NinjaAPI, Query, Schema
from ninja.errors import ValidationError

from brands import partners
from brands.api_auth import PartnerTokenAuth
from brands.models import PartnerToken
from mesu_web import paging
from mesu_web.ratelimit import client_ip
from writer.models import MAX_OPTIONS

NAMESPACE = "partner_api"

api = NinjaAPI(
    title="MeSu Studio partner API",
    version="1",
    description=(
        "Stories open to brand placements, branded next chapters for a partner's brands, and placement "
        "reports. Authenticate with `Authorization: Bearer <token>`; each route names the scope it needs."
    ),
    urls_namespace=NAMESPACE,
)


def _scoped(scope: str) -> dict[str, object]:
    """The route's auth, and its scope in the schema (`x-scope` and the description): ninja 1.7 writes an
    http scheme's security requirement with no scopes, and OpenAPI 3.1 has scopes for OAuth2 only."""
    return {
        "auth": PartnerTokenAuth(scope),
        "openapi_extra": {"x-scope": scope},
        "description": f"Needs a token with the scope `{scope}`.",
    }


# --- Errors -----------------------------------------------------------------------------------------


def _error(request: HttpRequest, status: int, detail: str, **extra: object) -> HttpResponse:
    return api.create_response(request, {"detail": detail, **extra}, status=status)


@api.exception_handler(partners.PartnerApiError)
def _partner_error(request: HttpRequest, exc: partners.PartnerApiError) -> HttpResponse:
    response = _error(request, exc.status, exc.message)
    if exc.status == 401:
        response["WWW-Authenticate"] = "Bearer"
    return response


@api.exception_handler(partners.ApiRateLimited)
def _rate_limited(request: HttpRequest, exc: partners.ApiRateLimited) -> HttpResponse:
    response = _error(request, 429, exc.message)
    response["Retry-After"] = str(math.ceil(exc.retry_after))
    return response


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors = [
        {
            "loc": [str(part) for part in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors
    ]
    words = "; ".join(f"{'.'.join(e['loc'][1:] or e['loc'])}: {e['msg']}" for e in errors) or "malformed"
    return _error(request, 422, f"Invalid request: {words}", errors=errors)


# --- Schemas ----------------------------------------------------------------------------------------


class ErrorOut(Schema):
    detail: str


class StoryOut(Schema):
    slug: str
    title: str
    author_name: str
    genre: str
    summary: str
    chapters: int
    url: str
    categories: list[str] | None = Field(description="IAB content categories; null while unclassified.")
    risk_tier: str | None = Field(description="low, medium or high; null while unclassified.")


class StoryPage(Schema):
    items: list[StoryOut]
    count: int
    page: int
    pages: int
    page_size: int


class StoryFilters(Schema):
    category: str = Field(  # letters, digits and dashes ("IAB17", "IAB8-5"): a NUL byte was a 500 (issue 18)
        "", max_length=16, pattern=r"^[A-Za-z0-9-]*$", description="Only stories of this IAB category."
    )
    max_tier: Literal["low", "medium", "high"] | None = Field(None, description="At most this risk tier.")
    page: int = Field(1, ge=1, description="Past the last page: the last page (the answer's `page` says which).")


class RequestIn(Schema):
    brand: str = Field(min_length=1, max_length=80, description="The slug of one of the partner's brands.")
    n: int = Field(1, ge=1, le=MAX_OPTIONS, description="How many options to write.")
    preference: str = Field("", max_length=1000, description="A wish for the chapter, in plain words.")


class RequestCreated(Schema):
    id: int
    status: str
    url: str


class OptionOut(Schema):
    index: int
    review_status: str
    brand: str | None
    text: str | None = Field(description="The chapter, once its brand approved it; null before.")


class RequestOut(Schema):
    id: int
    status: str
    stage: str
    story: str
    brand: str | None
    n: int
    created_at: datetime
    finished_at: datetime | None
    error: str
    options: list[OptionOut]


class CampaignReportOut(Schema):
    id: int
    name: str
    brand: str
    status: str
    pricing: str
    price: Decimal
    starts_on: date
    ends_on: date
    budget_total: Decimal
    budget_daily: Decimal | None
    spent: Decimal
    budget_left_today: Decimal
    impressions: int
    placements: int
    disclosure_opens: int


ERRORS = {401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 422: ErrorOut, 429: ErrorOut}

# --- Routes -----------------------------------------------------------------------------------------


@api.get(
    "/stories",
    response={200: StoryPage, **ERRORS},
    url_name="stories",
    summary="Stories open to placements",
    **_scoped("stories:read"),
)
def stories(request: HttpRequest, filters: Query[StoryFilters]) -> dict[str, object]:
    qs = partners.stories_open_to_placements(category=filters.category, max_tier=filters.max_tier or "")
    qs = qs.annotate(chapter_count=Count("chapters", distinct=True))
    size = settings.PARTNER_API_PAGE_SIZE
    page = paging.page_get(qs, number=filters.page, per_page=size)  # clamped: never an OFFSET past a bigint
    count = page.paginator.count
    items = []
    for story in page.object_list:
        suitability = partners.story_suitability_of(story)
        items.append(
            {
                "slug": story.slug,
                "title": story.title,
                "author_name": story.author_name,
                "genre": story.genre,
                "summary": story.summary,
                "chapters": story.chapter_count,
                "url": request.build_absolute_uri(story.get_absolute_url()),
                "categories": list(suitability.categories) if suitability else None,
                "risk_tier": suitability.risk_tier if suitability else None,
            }
        )
    return {
        "items": items,
        "count": count,
        "page": page.number,
        "pages": page.paginator.num_pages,
        "page_size": size,
    }


@api.post(
    "/stories/{slug}/requests",
    response={202: RequestCreated, 400: ErrorOut, 409: ErrorOut, **ERRORS},
    url_name="story_requests",
    summary="Request a branded next chapter",
    **_scoped("requests:write"),
)
def story_request_create(request: HttpRequest, slug: str, body: RequestIn) -> tuple[int, dict[str, object]]:
    token: PartnerToken = request.auth
    created = partners.partner_request_create(
        partner=token.partner, story_slug=slug, brand_slug=body.brand, n=body.n, preference=body.preference
    )
    url = request.build_absolute_uri(reverse(f"{NAMESPACE}:request_detail", args=[created.pk]))
    return 202, {"id": created.pk, "status": created.status, "url": url}


@api.get(
    "/requests/{int:request_id}",
    response={200: RequestOut, **ERRORS},
    url_name="request_detail",
    summary="A request's status and options",
    **_scoped("requests:read"),
)
def request_detail(request: HttpRequest, request_id: int) -> dict[str, object]:
    token: PartnerToken = request.auth
    found = partners.request_get_for_partner(partner=token.partner, pk=request_id)
    options = [
        {
            "index": o.index,
            "review_status": o.review_status,
            "brand": o.brand.slug if o.brand else None,
            "text": partners.option_text_for_partner(o),
        }
        for o in partners.request_options(request=found)
    ]
    return {
        "id": found.pk,
        "status": found.status,
        "stage": found.stage,
        "story": found.story.slug,
        "brand": found.requested_brand.slug if found.requested_brand else None,
        "n": found.n,
        "created_at": found.created_at,
        "finished_at": found.finished_at,
        "error": found.error,
        "options": options,
    }


@api.get(
    "/reports/campaigns",
    response={200: list[CampaignReportOut], **ERRORS},
    url_name="campaign_reports",
    summary="Reports of the partner's brands' campaigns",
    **_scoped("reports:read"),
)
def campaign_reports(request: HttpRequest) -> list[partners.CampaignReport]:
    return partners.campaign_reports(partner=request.auth.partner)


@api.get(
    "/reports/campaigns/{int:campaign_id}",
    response={200: CampaignReportOut, **ERRORS},
    url_name="campaign_report",
    summary="One campaign's report",
    **_scoped("reports:read"),
)
def campaign_report(request: HttpRequest, campaign_id: int) -> partners.CampaignReport:
    return partners.campaign_report(partner=request.auth.partner, pk=campaign_id)


# --- The audit and the URLs -------------------------------------------------------------------------

UNAUDITED = {"openapi-json", "openapi-view", "api-root"}  # public schema, docs, root: no token


def _detail_of(response: HttpResponse) -> str:
    if response.status_code < 400:
        return ""
    try:
        return str(json.loads(response.content).get("detail", ""))
    except (ValueError, AttributeError):
        return ""


def _audited(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Write an ApiAuditEntry for every call of `view`, whatever its answer (a crash as 500)."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        request.partner_token = None
        status, detail = 500, "server error"
        try:
            response = view(request, *args, **kwargs)
            status, detail = response.status_code, _detail_of(response)
            return response
        finally:
            partners.api_audit_record(
                token=request.partner_token,
                method=request.method or "",
                path=request.get_full_path(),
                status=status,
                ip=client_ip(request),
                detail=detail,
            )

    wrapper.csrf_exempt = True  # token auth only: no cookie is ever read
    return wrapper


def _urlpatterns() -> list[URLPattern]:
    patterns, _app_name, _namespace = api.urls
    for pattern in patterns:
        if pattern.name not in UNAUDITED:
            pattern.callback = _audited(pattern.callback)
        elif pattern.name != "api-root":
            pattern.callback = require_GET(pattern.callback)  # the schema and the docs are read-only
    return patterns


urlpatterns = _urlpatterns()
app_name = NAMESPACE
