from __future__ import annotations

import functools

from django.http import HttpRequest

from mesu_web.notifications.selectors import notification_unread_count


def unread(request: HttpRequest) -> dict:
    # A callable: the counting query runs only where a template shows the number, and once: the header
    # reads it twice ({% if n %}<span>{{ n }}</span>).
    return {"unread_notifications": functools.cache(lambda: notification_unread_count(user=request.user))}
