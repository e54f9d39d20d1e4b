"""Reads."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.paginator import Page
from django.shortcuts import get_object_or_404

from mesu_web import paging
from mesu_web.notifications.models import Notification

AnyUser = AbstractBaseUser | AnonymousUser


def notification_page(*, user: AnyUser, number: object, per_page: int) -> Page:
    """One page of the user's notifications, newest first (`number` clamped as `mesu_web.paging` says).
    Reading it marks nothing read: that is a POST (`services.notification_mark_read`)."""
    qs = Notification.objects.none()
    if user.is_authenticated:
        qs = Notification.objects.filter(user=user).order_by("-created_at", "-pk")
    return paging.page_get(qs, number=number, per_page=per_page)


def notification_get_for_user(*, user: AnyUser, pk: int) -> Notification:
    """The user's own notification; 404 for anyone else's (no hint that it exists)."""
    return get_object_or_404(Notification, pk=pk, user_id=user.pk)  # anonymous: pk None, no row


def notification_unread_count(*, user: AnyUser) -> int:
    if not user.is_authenticated:
        return 0
    return Notification.objects.filter(user=user, read_at__isnull=True).count()
