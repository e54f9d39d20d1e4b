"""Roles are Django groups (author, reader, brand manager); admins are staff users."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

AUTHOR = "author"
READER = "reader"
BRAND_MANAGER = "brand_manager"
GROUPS = (AUTHOR, READER, BRAND_MANAGER)
SIGNUP_ROLES = ((AUTHOR, "Author — I write stories"), (READER, "Reader — I read and ask for chapters"))


def user_roles(user: AbstractBaseUser | AnonymousUser) -> set[str]:
    if not user.is_authenticated:
        return set()
    cached = getattr(user, "_mesu_roles", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))
        if user.is_staff:
            cached.add("admin")
        user._mesu_roles = cached
    return cached


def is_author(user: AbstractBaseUser | AnonymousUser) -> bool:
    return AUTHOR in user_roles(user)
