"""Writes."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from mesu_web.notifications.models import Notification


def notification_create(*, user_id: int, message: str, url: str = "") -> Notification:
    return Notification.objects.create(user_id=user_id, message=message[:300], url=url[:300])


def notifications_mark_read(*, user: AbstractBaseUser) -> int:
    return Notification.objects.filter(user=user, read_at__isnull=True).update(read_at=timezone.now())
