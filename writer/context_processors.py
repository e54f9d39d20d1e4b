from __future__ import annotations

import functools

from django.http import HttpRequest

from brands.selectors import review_queue_for_manager, user_can_manage_brands
from writer.roles import user_roles
from writer.selectors import notification_unread_count


def roles(request: HttpRequest) -> dict:
    can_manage = user_can_manage_brands(user=request.user)
    return {
        "user_roles": user_roles(request.user),
        # Callables: the counting queries run only where a template shows the number, and once: the
        # header reads each twice ({% if n %}<span>{{ n }}</span>).
        "unread_notifications": functools.cache(lambda: notification_unread_count(user=request.user)),
        "can_manage_brands": can_manage,
        "review_pending_count": (
            functools.cache(lambda: review_queue_for_manager(user=request.user).count()) if can_manage else 0
        ),
    }
