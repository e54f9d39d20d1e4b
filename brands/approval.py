"""Staff approval of brands (issue 18): a new brand waits until staff approve it.

The rules, in one place:
1. A brand starts `pending` (the model's default). Until it is `approved` it is never matched, planned,
   placed, charged or auto-approved, never offered to the partner API, and not on the public register.
   Its managers can still edit it, add assets and prepare campaigns (even activate one: it goes live when
   the brand is approved, as an ad network serves an enabled campaign once its ads pass review).
2. Only staff decide. Approving takes an optional note; rejecting needs a reason, which the managers read.
   Every decision notifies the brand's managers with the note.
3. A rejected brand comes back: when its managers edit its profile or its assets, it is pending again
   (`brand_resubmit`, called by brands.services), so staff see it in their list once more with the
   reason they gave last time. An approved brand stays approved when it is edited (staff can still
   reject it later, which stops its placements and charges at once).

Everything that offers brands asks this module: `approved_q` (a filter, for a query over brands or over a
relation to one: `approved_q("brand__")`) and `is_approved` (one brand).
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied
from django.core.paginator import Page
from django.db import transaction
from django.db.models import Q, QuerySet
from django.urls import reverse
from django.utils import timezone

from brands.models import Brand
from mesu_web import paging
from mesu_web.errors import ApplicationError
from mesu_web.notifications.services import notification_create

APPROVED = Brand.Approval.APPROVED
PENDING = Brand.Approval.PENDING
REJECTED = Brand.Approval.REJECTED
NOTE_CHARS = 2000  # a reason is a paragraph, not an essay
DEMO_NOTE = "approved by the demo seed"
PENDING_BANNER = "Waiting for staff approval: no chapter will carry this brand until then."


# --- Reads ------------------------------------------------------------------------------------------


def approved_q(prefix: str = "") -> Q:
    """The filter "the brand is approved", on Brand itself or through a relation (`prefix` "brand__")."""
    return Q(**{f"{prefix}approval": APPROVED})


def is_approved(brand: Brand) -> bool:
    return brand.approval == APPROVED


def approved_brands() -> QuerySet[Brand]:
    return Brand.objects.filter(approved_q())


def not_approved_brand_ids() -> set[int]:
    """Every brand that may not be placed for want of approval (pending or rejected)."""
    return set(Brand.objects.exclude(approved_q()).values_list("pk", flat=True))


def not_placeable_reason(brand: Brand) -> str:
    """Why no chapter may carry `brand` for want of approval; "" for an approved brand."""
    if brand.approval == PENDING:
        return f"{brand.name} is waiting for staff approval: no chapter carries it until then."
    if brand.approval == REJECTED:
        return f"{brand.name} was rejected by staff: no chapter carries it."
    return ""


def approval_banner(brand: Brand) -> str:
    """What the brand's pages tell its managers; "" for an approved brand."""
    if brand.approval == PENDING:
        return PENDING_BANNER
    if brand.approval == REJECTED:
        reason = brand.approval_note or "no reason given"
        return (
            f"Rejected by staff: {reason} Edit the brand's profile or assets to send it back for approval; "
            "until it is approved no chapter will carry it."
        )
    return ""


def pending_brands() -> QuerySet[Brand]:
    """The brands waiting for staff, newest first, with what staff decide on (profile, assets, managers)."""
    return (
        Brand.objects.filter(approval=PENDING)
        .prefetch_related("assets", "managers")
        .order_by("-created_at", "-pk")
    )


def pending_brands_page(*, number: object, per_page: int = 20) -> Page:
    """One page of `pending_brands` (`number` clamped as `mesu_web.paging` says)."""
    return paging.page_get(pending_brands(), number=number, per_page=per_page)


# --- Writes -----------------------------------------------------------------------------------------


def _check_staff(user: AbstractBaseUser | AnonymousUser | None) -> AbstractBaseUser:
    if user is None or not user.is_authenticated or not user.is_staff:
        raise PermissionDenied("Only staff approve or reject brands.")
    return user  # type: ignore[return-value]


def _clean_note(note: str) -> str:
    return str(note or "").strip()[:NOTE_CHARS]


def _notify_managers(brand: Brand, message: str) -> None:
    url = reverse("brands:brand_detail", args=[brand.slug])
    for manager_id in brand.managers.values_list("pk", flat=True):
        notification_create(user_id=manager_id, message=message, url=url)


def _decide(brand: Brand, *, approval: str, by: AbstractBaseUser | None, note: str) -> Brand:
    """Store the decision on the locked row (updated_at moves too: matching's catalogue of brand names
    is rebuilt when it does)."""
    locked = Brand.objects.select_for_update().get(pk=brand.pk)
    locked.approval = approval
    locked.approval_note = note
    locked.approval_decided_by = by
    locked.approval_decided_at = timezone.now()
    locked.save(
        update_fields=["approval", "approval_note", "approval_decided_by", "approval_decided_at", "updated_at"]
    )
    for name in ("approval", "approval_note", "approval_decided_by", "approval_decided_at", "updated_at"):
        setattr(brand, name, getattr(locked, name))
    return brand


@transaction.atomic
def brand_approve(*, brand: Brand, staff_user: AbstractBaseUser, note: str = "") -> Brand:
    """Staff approve a pending (or a rejected) brand: from now on it can be matched and placed."""
    staff_user = _check_staff(staff_user)
    note = _clean_note(note)
    current = Brand.objects.select_for_update().values_list("approval", flat=True).get(pk=brand.pk)
    if current == APPROVED:
        raise ApplicationError(f"{brand.name} is approved already.")
    _decide(brand, approval=APPROVED, by=staff_user, note=note)
    _notify_managers(
        brand,
        f"Staff approved {brand.name}: chapters can carry it now."
        + (f" Note: {note}" if note else ""),
    )
    return brand


@transaction.atomic
def brand_reject(*, brand: Brand, staff_user: AbstractBaseUser, note: str) -> Brand:
    """Staff reject a pending brand, or withdraw an approved one; the managers are told why. Its placements
    stop at once (no match, no approval of a waiting placement, no charge) until it is approved again."""
    staff_user = _check_staff(staff_user)
    note = _clean_note(note)
    if not note:
        raise ApplicationError("Say why the brand is rejected: its managers read the reason and can fix it.")
    current = Brand.objects.select_for_update().values_list("approval", flat=True).get(pk=brand.pk)
    if current == REJECTED:
        raise ApplicationError(f"{brand.name} is rejected already.")
    _decide(brand, approval=REJECTED, by=staff_user, note=note)
    _notify_managers(
        brand,
        f"Staff rejected {brand.name}: {note} Edit the brand to send it back for approval.",
    )
    return brand


def brand_resubmit(*, brand: Brand) -> bool:
    """A rejected brand that its managers edited waits for staff again (its last reason stays on the row
    for staff to compare). True when it went back to pending. Call inside the edit's transaction."""
    changed = Brand.objects.filter(pk=brand.pk, approval=REJECTED).update(
        approval=PENDING, updated_at=timezone.now()
    )
    if changed:
        brand.approval = PENDING
    return bool(changed)


@transaction.atomic
def brand_approve_for_demo(*, brand: Brand, staff_user: AbstractBaseUser | None = None) -> Brand:
    """The demo seed's approval (brands.demo): by the demo's staff user when there is one, else by nobody
    with a note that says so. Nobody is notified: the seed made the brand a moment ago."""
    if brand.approval == APPROVED:
        return brand
    if staff_user is not None:
        _check_staff(staff_user)
        return _decide(brand, approval=APPROVED, by=staff_user, note="")
    return _decide(brand, approval=APPROVED, by=None, note=DEMO_NOTE)
