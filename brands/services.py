"""Writes. Every change to brands, assets, embeddings and sponsorship settings goes through here."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from brands.approval import brand_resubmit, not_placeable_reason
from brands.campaigns import approval_cap_check, placement_charge
from brands.embedder import get_embedder
from brands.models import (
    AutoApproveRule,
    Brand,
    BrandAsset,
    PlacementDecision,
    ReaderSponsorshipPreference,
    StoryBrandSettings,
    text_hash,
)
from mesu_web.errors import ApplicationError
from mesu_web.notifications.services import notification_create
from mesu_web.slugs import unique_slug
from writer import roles
from writer.models import GenerationOption, GenerationRequest, ReviewStatus, Story

logger = logging.getLogger(__name__)

BRAND_FIELDS = (
    "name",
    "description",
    "tone_of_voice",
    "target_audience",
    "banned_themes",
    "max_placements_per_chapter",
    "is_active",
)
ASSET_FIELDS = ("kind", "name", "description", "terms")
MAX_THEMES = 30
THEME_CHARS = 40  # the column's max_length
MAX_TERMS = 20
TERM_CHARS = 80  # the column's max_length
MAX_PLACEMENTS = 10  # per chapter; more would read as an advert, not a placement


# --- Cleaning --------------------------------------------------------------------------------------


def _split(values: Sequence[str] | str) -> list[str]:
    """A list as given, or a text of comma- or line-separated items (as a form sends it)."""
    if isinstance(values, str):
        return re.split(r"[,\n]", values)
    return list(values)


def _clean_themes(themes: Sequence[str] | str) -> list[str]:
    cleaned: list[str] = []
    for theme in _split(themes):
        theme = " ".join(str(theme).split()).lower()
        if not theme:
            continue
        if len(theme) > THEME_CHARS:
            raise ApplicationError(f"Keep each banned theme under {THEME_CHARS} characters: {theme[:50]!r}.")
        if theme not in cleaned:
            cleaned.append(theme)
    if len(cleaned) > MAX_THEMES:
        raise ApplicationError(f"A brand can ban at most {MAX_THEMES} themes.")
    return cleaned


def _clean_terms(terms: Sequence[str] | str) -> list[str]:
    cleaned: list[str] = []
    for term in _split(terms):
        term = " ".join(str(term).split())  # case kept: these are the exact words in a chapter
        if not term:
            continue
        if len(term) > TERM_CHARS:
            raise ApplicationError(f"Keep each term under {TERM_CHARS} characters: {term[:50]!r}.")
        if term.lower() not in (t.lower() for t in cleaned):
            cleaned.append(term)
    if not cleaned:
        raise ApplicationError("An asset needs at least one term: the exact words that name it in a chapter.")
    if len(cleaned) > MAX_TERMS:
        raise ApplicationError(f"An asset can have at most {MAX_TERMS} terms.")
    return cleaned


def _clean_placements(value: object) -> int:
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ApplicationError("Placements per chapter must be a whole number.") from None
    if not 1 <= number <= MAX_PLACEMENTS:
        raise ApplicationError(f"Placements per chapter must be between 1 and {MAX_PLACEMENTS}.")
    return number


def _clean_name(name: str, *, what: str) -> str:
    name = " ".join(str(name).split())
    if not name:
        raise ApplicationError(f"A {what} needs a name.")
    if len(name) > 120:
        raise ApplicationError(f"Keep the {what}'s name under 120 characters.")
    return name


# Fixed paths under /brands/ that a brand's slug must not shadow.
RESERVED_SLUGS = frozenset({"new", "review", "sponsorship", "story", "approvals"})


def _brand_slug(name: str) -> str:
    return unique_slug(
        name, taken=lambda slug: Brand.objects.filter(slug=slug).exists(), fallback="brand", reserved=RESERVED_SLUGS
    )


def _check_brand_name_free(name: str, *, exclude_pk: int | None = None) -> None:
    if Brand.objects.filter(name__iexact=name).exclude(pk=exclude_pk).exists():
        raise ApplicationError(f"There is already a brand called {name!r}.")


def _check_asset_name_free(brand: Brand, name: str, *, exclude_pk: int | None = None) -> None:
    if BrandAsset.objects.filter(brand=brand, name__iexact=name).exclude(pk=exclude_pk).exists():
        raise ApplicationError(f"{brand.name} already has an asset called {name!r}.")


def _clean_brand_fields(fields: dict[str, object], *, brand: Brand | None = None) -> dict[str, object]:
    unknown = set(fields) - set(BRAND_FIELDS)
    if unknown:
        raise ApplicationError(f"Unknown brand field(s): {', '.join(sorted(unknown))}.")
    cleaned = dict(fields)
    if "name" in cleaned:
        cleaned["name"] = _clean_name(str(cleaned["name"]), what="brand")
        _check_brand_name_free(cleaned["name"], exclude_pk=brand.pk if brand else None)  # type: ignore[arg-type]
    for text_field in ("description", "tone_of_voice", "target_audience"):
        if text_field in cleaned:
            cleaned[text_field] = str(cleaned[text_field] or "").strip()
    if "banned_themes" in cleaned:
        cleaned["banned_themes"] = _clean_themes(cleaned["banned_themes"])  # type: ignore[arg-type]
    if "max_placements_per_chapter" in cleaned:
        cleaned["max_placements_per_chapter"] = _clean_placements(cleaned["max_placements_per_chapter"])
    if "is_active" in cleaned:
        cleaned["is_active"] = bool(cleaned["is_active"])
    return cleaned


def _check_managers(managers: Iterable[AbstractBaseUser]) -> list[AbstractBaseUser]:
    managers = list(managers)
    if not managers:
        raise ApplicationError("A brand needs at least one brand manager.")
    not_managers = [
        str(u) for u in managers if not (u.is_staff or roles.BRAND_MANAGER in roles.user_roles(u))
    ]
    if not_managers:
        raise ApplicationError(f"Only brand managers can manage a brand; not one: {', '.join(not_managers)}.")
    return managers


# --- Brands ----------------------------------------------------------------------------------------


def brand_create(
    *,
    name: str,
    managers: Iterable[AbstractBaseUser],
    description: str = "",
    tone_of_voice: str = "",
    target_audience: str = "",
    banned_themes: Sequence[str] | str = (),
    max_placements_per_chapter: int = 1,
    is_active: bool = True,
) -> Brand:
    managers = _check_managers(managers)
    fields = _clean_brand_fields(
        {
            "name": name,
            "description": description,
            "tone_of_voice": tone_of_voice,
            "target_audience": target_audience,
            "banned_themes": banned_themes,
            "max_placements_per_chapter": max_placements_per_chapter,
            "is_active": is_active,
        }
    )
    try:
        with transaction.atomic():
            brand = Brand.objects.create(slug=_brand_slug(str(fields["name"])), **fields)
            brand.managers.set(managers)
            brand_embedding_enqueue(brand=brand)
    except IntegrityError:  # two managers picked the same name at the same moment
        raise ApplicationError(f"There is already a brand called {fields['name']!r}.") from None
    return brand


def brand_update(*, brand: Brand, **fields: object) -> Brand:
    """Change the given fields; the vectors follow when a text they are made from changed."""
    cleaned = _clean_brand_fields(fields, brand=brand)
    before = brand.embedding_text()
    for name, value in cleaned.items():
        setattr(brand, name, value)
    try:
        with transaction.atomic():
            # Only these columns: a full save could put back a vector older than the task's.
            brand.save(update_fields=[*cleaned, "updated_at"])
            if brand.embedding_text() != before or brand.embedding is None:
                brand_embedding_enqueue(brand=brand)
            brand_resubmit(brand=brand)  # a rejected brand, edited: staff look at it again
    except IntegrityError:
        raise ApplicationError(f"There is already a brand called {brand.name!r}.") from None
    return brand


@transaction.atomic
def brand_set_managers(*, brand: Brand, managers: Iterable[AbstractBaseUser]) -> Brand:
    brand.managers.set(_check_managers(managers))
    return brand


# --- Assets ----------------------------------------------------------------------------------------


def _clean_asset_fields(
    fields: dict[str, object], *, brand: Brand, asset: BrandAsset | None = None
) -> dict[str, object]:
    unknown = set(fields) - set(ASSET_FIELDS)
    if unknown:
        raise ApplicationError(f"Unknown asset field(s): {', '.join(sorted(unknown))}.")
    cleaned = dict(fields)
    if "kind" in cleaned and cleaned["kind"] not in BrandAsset.Kind.values:
        raise ApplicationError(
            f"Unknown asset kind {cleaned['kind']!r}; choose one of: {', '.join(BrandAsset.Kind.values)}."
        )
    if "name" in cleaned:
        cleaned["name"] = _clean_name(str(cleaned["name"]), what="brand asset")
        _check_asset_name_free(brand, cleaned["name"], exclude_pk=asset.pk if asset else None)  # type: ignore[arg-type]
    if "description" in cleaned:
        cleaned["description"] = str(cleaned["description"] or "").strip()
    if "terms" in cleaned:
        cleaned["terms"] = _clean_terms(cleaned["terms"])  # type: ignore[arg-type]
    return cleaned


def asset_create(
    *, brand: Brand, kind: str, name: str, terms: Sequence[str] | str, description: str = ""
) -> BrandAsset:
    fields = _clean_asset_fields(
        {"kind": kind, "name": name, "terms": terms, "description": description}, brand=brand
    )
    try:
        with transaction.atomic():
            asset = BrandAsset.objects.create(brand=brand, **fields)
            asset_embedding_enqueue(asset=asset)
            brand_resubmit(brand=brand)
    except IntegrityError:
        raise ApplicationError(f"{brand.name} already has an asset called {fields['name']!r}.") from None
    return asset


def asset_update(*, asset: BrandAsset, **fields: object) -> BrandAsset:
    cleaned = _clean_asset_fields(fields, brand=asset.brand, asset=asset)
    before = asset.embedding_text()
    for name, value in cleaned.items():
        setattr(asset, name, value)
    try:
        with transaction.atomic():
            asset.save(update_fields=[*cleaned, "updated_at"])  # never an older vector over the task's
            if asset.embedding_text() != before or asset.embedding is None:
                asset_embedding_enqueue(asset=asset)
            brand_resubmit(brand=asset.brand)
    except IntegrityError:
        raise ApplicationError(f"{asset.brand.name} already has an asset called {asset.name!r}.") from None
    return asset


@transaction.atomic
def asset_delete(*, asset: BrandAsset) -> None:
    brand = asset.brand
    asset.delete()
    brand_resubmit(brand=brand)


# --- Story and reader settings ---------------------------------------------------------------------


@transaction.atomic
def story_brand_settings_update(
    *, story: Story, opt_in: bool, excluded_brand_ids: Iterable[int] = ()
) -> StoryBrandSettings:
    """The author's choice: brands in this story or not, and which brands never."""
    ids = set(excluded_brand_ids)
    known = set(Brand.objects.filter(pk__in=ids).values_list("pk", flat=True))
    if ids - known:
        raise ApplicationError("Some of the brands to exclude do not exist; reload the page and try again.")
    story_settings, _ = StoryBrandSettings.objects.update_or_create(
        story=story, defaults={"opt_in": bool(opt_in)}
    )
    story_settings.excluded_brands.set(known)
    return story_settings


def reader_sponsorship_set(*, user: AbstractBaseUser, enabled: bool) -> ReaderSponsorshipPreference:
    preference, _ = ReaderSponsorshipPreference.objects.update_or_create(
        user=user, defaults={"sponsored_chapters_enabled": bool(enabled)}
    )
    return preference


# --- Embeddings ------------------------------------------------------------------------------------


def brand_embedding_enqueue(*, brand: Brand) -> None:
    from brands.tasks import brand_embed_task

    brand_id = brand.pk
    transaction.on_commit(lambda: brand_embed_task.delay(brand_id), robust=True)


def asset_embedding_enqueue(*, asset: BrandAsset) -> None:
    from brands.tasks import asset_embed_task

    asset_id = asset.pk
    transaction.on_commit(lambda: asset_embed_task.delay(asset_id), robust=True)


def _store_vector(
    model: type[Brand] | type[BrandAsset], pk: int, *, text: str, vector: list[float], model_id: str
) -> bool:
    """Save a vector unless the row's text changed while it was computed (a newer task follows)."""
    with transaction.atomic():
        row = model.objects.select_for_update().filter(pk=pk).first()
        if row is None or text_hash(row.embedding_text()) != text_hash(text):
            return False
        model.objects.filter(pk=pk).update(
            embedding=vector, embedding_model=model_id, embedded_text_hash=text_hash(text), embedding_error=""
        )
    return True


def _is_current(row: Brand | BrandAsset, text: str, model_id: str) -> bool:
    return (
        row.embedding is not None
        and row.embedding_model == model_id
        and row.embedded_text_hash == text_hash(text)
    )


def assets_embed(*, assets: Sequence[BrandAsset], force: bool = False) -> int:
    """Embed the assets whose vector is missing, stale or another embedder's; returns how many."""
    embedder = get_embedder()
    todo = [(a, a.embedding_text()) for a in assets]
    todo = [(a, text) for a, text in todo if force or not _is_current(a, text, embedder.model_id)]
    if not todo:
        return 0
    vectors = embedder.embed([text for _, text in todo])
    return sum(
        _store_vector(BrandAsset, a.pk, text=text, vector=v, model_id=embedder.model_id)
        for (a, text), v in zip(todo, vectors, strict=True)
    )


def asset_embed(*, asset_id: int, force: bool = False) -> BrandAsset | None:
    """Embed one asset if its text or the embedder changed. None when the asset is gone."""
    asset = BrandAsset.objects.select_related("brand").filter(pk=asset_id).first()
    if asset is None:
        return None
    assets_embed(assets=[asset], force=force)
    asset.refresh_from_db()
    return asset


def brand_embed(*, brand_id: int, force: bool = False) -> Brand | None:
    """Embed the brand and its assets (their texts include the brand's). None when the brand is gone."""
    brand = Brand.objects.filter(pk=brand_id).first()
    if brand is None:
        return None
    embedder = get_embedder()
    text = brand.embedding_text()
    if force or not _is_current(brand, text, embedder.model_id):
        [vector] = embedder.embed([text])
        _store_vector(Brand, brand.pk, text=text, vector=vector, model_id=embedder.model_id)
    assets_embed(assets=list(BrandAsset.objects.filter(brand=brand).select_related("brand")), force=force)
    brand.refresh_from_db()
    return brand


def assets_embed_missing() -> int:
    """Synchronously embed every asset the current embedder has no up-to-date vector for."""
    from brands.selectors import assets_needing_embedding  # local: selectors import nothing from services

    return assets_embed(assets=assets_needing_embedding(model_id=get_embedder().model_id))


def brand_embedding_fail(*, brand_id: int, error: str) -> None:
    Brand.objects.filter(pk=brand_id).update(
        embedding_error=error or "Embedding failed for an unknown reason."
    )


def asset_embedding_fail(*, asset_id: int, error: str) -> None:
    BrandAsset.objects.filter(pk=asset_id).update(
        embedding_error=error or "Embedding failed for an unknown reason."
    )


# --- The review queue ------------------------------------------------------------------------------


def _lock_pending(option: GenerationOption, reviewer: AbstractBaseUser | None, *, verb: str) -> GenerationOption:
    """Lock the option's request, then the option (in that order, so decisions on one request queue
    up), and check that `reviewer` manages its brand (None: a brand's auto-approve rule decides) and that it
    still waits for a decision."""
    request = GenerationRequest.objects.select_for_update().select_related("story").get(pk=option.request_id)
    option = GenerationOption.objects.select_for_update(of=("self",)).select_related("brand").get(pk=option.pk)
    option.request = request
    if option.brand_id is None:
        raise ApplicationError("This option carries no brand placement.")
    if reviewer is not None and not (reviewer.is_staff or option.brand.managers.filter(pk=reviewer.pk).exists()):
        raise ApplicationError("Only a manager of this brand can review its placements.")
    if option.review_status != ReviewStatus.PENDING:
        raise ApplicationError(
            f"This placement is {option.get_review_status_display().lower()}; only a waiting one can be {verb}."
        )
    return option


def _notify_decision(option: GenerationOption, text: str) -> None:
    request = option.request
    url = request.get_absolute_url()
    recipients = {request.story.owner_id, request.requested_by_id}
    for user_id in recipients:
        notification_create(user_id=user_id, message=text, url=url)


@transaction.atomic
def option_approve(
    *,
    option: GenerationOption,
    reviewer: AbstractBaseUser | None,
    action: str = PlacementDecision.Action.APPROVED,
    rule: AutoApproveRule | None = None,
) -> GenerationOption:
    """Approve one placement. Serialised per request (row lock) and guarded by a database constraint,
    so of two managers clicking at the same moment exactly one succeeds. `reviewer` None with `rule`: a
    brand's auto-approve rule (brands.review). The campaign's caps are checked and a fixed price charged in
    the same transaction (brands.campaigns): a refused charge refuses the approval."""
    if reviewer is None and rule is None:
        raise ApplicationError("An approval needs a reviewer or an auto-approve rule.")
    option = _lock_pending(option, reviewer, verb="approved")
    request = option.request
    not_placeable = not_placeable_reason(option.brand)  # brands.approval: a brand staff have not approved
    if not_placeable:
        raise ApplicationError(f"{not_placeable} Its placements can be approved once staff approve it.")
    if GenerationOption.objects.filter(request=request, review_status=ReviewStatus.APPROVED).exists():
        raise ApplicationError("Another option of this request was already approved.")
    if GenerationOption.objects.filter(request=request, accepted_chapter__isnull=False).exclude(pk=option.pk).exists():
        raise ApplicationError("The author already took another option of this request as the chapter.")
    option.review_status = ReviewStatus.APPROVED
    option.reviewed_by = reviewer
    option.reviewed_at = timezone.now()
    option.review_reason = ""
    # The approval covers this exact text: an edit of its passage sends it back here (brands.matching).
    option.approved_text_hash = text_hash(option.text)
    try:
        with transaction.atomic():
            option.save(
                update_fields=["review_status", "reviewed_by", "reviewed_at", "review_reason", "approved_text_hash"]
            )
    except IntegrityError:
        raise ApplicationError("Another option of this request was already approved.") from None
    approval_cap_check(option=option)  # raises ApplicationError: the whole approval rolls back
    placement_charge(option=option)
    PlacementDecision.objects.create(
        option=option, brand=option.brand, reviewer=reviewer, rule=rule, action=action,
        text_hash=option.approved_text_hash,
    )
    _notify_decision(
        option,
        f"{option.brand.name} approved {option.label} of chapter {request.next_number} of “{request.story.title}”.",
    )
    return option


@transaction.atomic
def option_reject(*, option: GenerationOption, reviewer: AbstractBaseUser, reason: str) -> GenerationOption:
    reason = reason.strip()
    if not reason:
        raise ApplicationError("Say why the placement is rejected: the author and the writer learn from it.")
    option = _lock_pending(option, reviewer, verb="rejected")
    request = option.request
    option.review_status = ReviewStatus.REJECTED
    option.reviewed_by = reviewer
    option.reviewed_at = timezone.now()
    option.review_reason = reason[:2000]
    option.approved_text_hash = ""
    option.save(update_fields=["review_status", "reviewed_by", "reviewed_at", "review_reason", "approved_text_hash"])
    PlacementDecision.objects.create(
        option=option, brand=option.brand, reviewer=reviewer, action=PlacementDecision.Action.REJECTED,
        reason=option.review_reason, text_hash=text_hash(option.text),
    )
    _notify_decision(
        option,
        f"{option.brand.name} rejected {option.label} of chapter {request.next_number} of “{request.story.title}”: {reason[:120]}",
    )
    return option


@transaction.atomic
def option_changes_request(*, option: GenerationOption, reviewer: AbstractBaseUser, comment: str) -> GenerationOption:
    """Ask the story's author to revise the placed passage: the option leaves the queue (CHANGES) with the
    comment, and comes back as pending once the author revises it (brands.review.option_revise)."""
    from brands.review import clean_comment  # local: review imports this module late for the approval

    comment = clean_comment(comment)
    option = _lock_pending(option, reviewer, verb="sent back for changes")
    request = option.request
    option.review_status = ReviewStatus.CHANGES
    option.reviewed_by = reviewer
    option.reviewed_at = timezone.now()
    option.review_reason = comment
    option.approved_text_hash = ""
    option.save(update_fields=["review_status", "reviewed_by", "reviewed_at", "review_reason", "approved_text_hash"])
    PlacementDecision.objects.create(
        option=option, brand=option.brand, reviewer=reviewer, action=PlacementDecision.Action.CHANGES_REQUESTED,
        reason=comment, text_hash=text_hash(option.text),
    )
    notification_create(
        user_id=request.story.owner_id,
        message=f"{option.brand.name} asks for changes to {option.label} of chapter {request.next_number} of "
        f"“{request.story.title}”: {comment[:120]}",
        url=request.get_absolute_url(),
    )
    return option


@transaction.atomic
def option_approve_with_edit(*, option: GenerationOption, reviewer: AbstractBaseUser, text: str) -> GenerationOption:
    """Edit the placed passage (only: the rest of `text` must be the option's, byte for byte), keep the edit
    as a version, then approve the edited text (action approved_edit). A refused approval (a cap, the
    budget) rolls the edit back too."""
    from brands.review import passage_apply, passage_change

    locked = _lock_pending(option, reviewer, verb="approved")
    change = passage_change(option=locked, new_text=text)
    passage_apply(option=locked, change=change, user=reviewer)
    return option_approve(option=locked, reviewer=reviewer, action=PlacementDecision.Action.APPROVED_WITH_EDIT)
