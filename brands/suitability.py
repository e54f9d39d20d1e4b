"""Suitability (issue 17): a story's IAB content categories and GARM-style risk tier, what each brand
accepts, and the reader's age."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser

from writer.models import Story


def brands_blocked_by_suitability(*, story: Story) -> dict[int, list[str]]:
    """Brand id -> why the story is not suitable for it (category, tier, sensitive topic, floor)."""
    return {}


def reader_placement_block(*, reader: AbstractBaseUser | None) -> str:
    """Why no placement may reach this reader ("" when one may): a reader who said they are under 18."""
    return ""
