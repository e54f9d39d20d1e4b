"""Fixtures shared by the brands tests."""

from __future__ import annotations

import pytest

from brands.demo import seed_brands


@pytest.fixture
def brands(users):
    """The demo brands, managed by mia, by name."""
    return {b.name: b for b in seed_brands(users["mia"])}
