from __future__ import annotations

import functools

from django.http import HttpRequest

from brands.selectors import review_queue_for_manager, user_can_manage_brands


def brand_manager(request: HttpRequest) -> dict:
    can_manage = user_can_manage_brands(user=request.user)
    return {
        "can_manage_brands": can_manage,
        # A callable: the counting query runs only where a template shows the number, and once (the
        # header reads it twice: {% if n %}<span>{{ n }}</span>).
        "review_pending_count": (
            functools.cache(lambda: review_queue_for_manager(user=request.user).count()) if can_manage else 0
        ),
    }
