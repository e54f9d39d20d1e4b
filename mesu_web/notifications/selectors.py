"""Reads."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from mesu_web.notifications.models import Notification

AnyUser = AbstractBaseUser | AnonymousUser


def notification_list(*, user: AnyUser, limit: int = 50) -> list[Notification]:
    if not user.is_authenticated:
        return []
    return list(Notification.objects.filter(user=user).order_by("-created_at")[:limit])


def notification_unread_count(*, user: AnyUser) -> int:
    if not user.is_authenticated:
        return 0
    return Notification.objects.filter(user=user, read_at__isnull=True).count()
