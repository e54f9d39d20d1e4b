"""Shared by the security tests: a private local-memory cache per test, so that login-failure counters
never leak from one test into another (the rate limit's own tests switch to the real Redis cache with
the `redis_cache` fixture, under a key prefix of their own)."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
from django.core.cache import cache, caches
from django.core.cache.backends.locmem import LocMemCache


@pytest.fixture(autouse=True)
def _private_cache(settings, request):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": request.node.nodeid}
    }
    cache.clear()
    yield
    if isinstance(caches["default"], LocMemCache):  # a test may have switched to another backend
        cache.clear()


@pytest.fixture
def redis_cache(settings, _private_cache):
    """The production cache backend (Redis at REDIS_URL, database 15 in tests) under a fresh prefix."""
    from django.conf import settings as live

    backend = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": live.CELERY_BROKER_URL,  # REDIS_URL, as settings.py configures the cache
        "KEY_PREFIX": f"mesu-test-{uuid.uuid4().hex}",
    }
    settings.CACHES = {"default": backend}
    yield cache
    # Delete this prefix's keys only: cache.clear() would flush the whole database (the test broker's).
    import redis

    client = redis.Redis.from_url(backend["LOCATION"])
    for key in client.scan_iter(f"{backend['KEY_PREFIX']}:*"):
        client.delete(key)
    client.close()


@pytest.fixture
def world(users, settings, tmp_path) -> SimpleNamespace:
    """Stories, chapters, requests, options, brands A and B, assets, training rows (permission_table.py)."""
    from tests.security.permission_table import build_world

    return build_world(users, settings, tmp_path)
