"""Writes."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from mesu_web.notifications.models import Notification


def notification_create(*, user_id: int, message: str, url: str = "") -> Notification:
    return Notification.objects.create(user_id=user_id, message=message[:300], url=url[:300])


def notification_mark_read(*, notification: Notification) -> bool:
    """Mark one notification read (its owner's POST); False when it already was (its time is kept)."""
    if notification.read_at is not None:
        return False
    now = timezone.now()
    changed = Notification.objects.filter(pk=notification.pk, read_at__isnull=True).update(read_at=now)
    if changed:
        notification.read_at = now
    return bool(changed)


def notifications_mark_read(*, user: AbstractBaseUser) -> int:
    """Mark all the user's unread notifications read (their POST): how many were unread."""
    return Notification.objects.filter(user=user, read_at__isnull=True).update(read_at=timezone.now())
