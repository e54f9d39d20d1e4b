"""Login rate limiting on the real Redis cache: 5 failed logins for one username from one address in
15 minutes, then 429 with a clear message until the window passes; a success clears the count."""

from __future__ import annotations

import time

import pytest
import redis
from django.test import Client
from django.urls import reverse

from mesu_web import ratelimit
from tests.factories import PASSWORD

pytestmark = pytest.mark.usefixtures("redis_cache")


def _login(client: Client, username: str, password: str, *, url: str | None = None, **extra):  # noqa: ANN003, ANN202
    return client.post(url or reverse("login"), {"username": username, "password": password}, **extra)


def _fail(client: Client, username: str, times: int, **extra) -> None:  # noqa: ANN003
    for _ in range(times):
        response = _login(client, username, "wrong-password", **extra)
        assert response.status_code == 200, response.status_code
        assert "Please enter a correct username and password" in response.content.decode()


def _logged_in_as(client: Client) -> str | None:
    response = client.get(reverse("writer:home"))
    user = response.wsgi_request.user
    return user.username if user.is_authenticated else None


def test_five_failures_then_429_even_with_the_right_password(users, settings):
    assert settings.LOGIN_RATE_LIMIT_ATTEMPTS == 5 and settings.LOGIN_RATE_LIMIT_WINDOW == 15 * 60
    client = Client()
    _fail(client, "alice", 5)
    response = _login(client, "alice", PASSWORD)
    assert response.status_code == 429
    page = response.content.decode()
    assert "Too many failed logins from your address. Try again in 15 minutes." in page
    assert '<form method="post">' in page  # the login page itself, with its message
    assert 890 <= int(response["Retry-After"]) <= 900
    assert _logged_in_as(client) is None
    # The count is per username (any case) and address: another user, or alice elsewhere, may log in.
    assert _login(client, "ALICE ", "wrong-password").status_code == 429
    assert _login(Client(), "bob", PASSWORD).status_code == 302
    elsewhere = Client(REMOTE_ADDR="10.0.0.2")
    assert _login(elsewhere, "alice", PASSWORD).status_code == 302
    assert _logged_in_as(elsewhere) == "alice"


def test_password_spraying_from_one_address_is_refused_for_every_username(users, settings):
    """Issue 18: one password tried on many accounts from one address. Each username fails only once (under
    its own limit), but the address's failures reach LOGIN_RATE_LIMIT_ADDRESS_ATTEMPTS and then every
    username is refused from it, the right password too; other addresses are not, and a success there or
    here never clears the address's count."""
    settings.LOGIN_RATE_LIMIT_ADDRESS_ATTEMPTS = 6
    sprayer = Client(REMOTE_ADDR="10.9.9.9")
    for i in range(6):
        _fail(sprayer, f"someone{i}", 1)
    response = _login(sprayer, "alice", PASSWORD)
    assert response.status_code == 429 and "Too many failed logins from your address" in response.content.decode()
    assert _logged_in_as(sprayer) is None
    assert _login(Client(REMOTE_ADDR="10.9.9.10"), "alice", PASSWORD).status_code == 302
    admin = _login(sprayer, "root", PASSWORD, url=reverse("admin:login"))
    assert admin.status_code == 429


def test_the_block_ends_when_the_window_passes(users, settings):
    settings.LOGIN_RATE_LIMIT_WINDOW = 1  # second
    client = Client()
    _fail(client, "alice", 5)
    assert _login(client, "alice", PASSWORD).status_code == 429
    time.sleep(1.2)
    assert _login(client, "alice", PASSWORD).status_code == 302
    assert _logged_in_as(client) == "alice"


def test_a_successful_login_clears_the_count(users):
    client = Client()
    _fail(client, "alice", 4)
    assert _login(client, "alice", PASSWORD).status_code == 302
    client.post(reverse("logout"))
    _fail(client, "alice", 4)  # would be the 8th failure without the reset
    assert _login(client, "alice", PASSWORD).status_code == 302


def test_a_post_without_the_csrf_token_is_not_counted(users):
    strict = Client(enforce_csrf_checks=True)
    for _ in range(8):
        assert _login(strict, "alice", "wrong-password").status_code == 403
    assert _login(Client(), "alice", PASSWORD).status_code == 302


def test_the_admin_login_has_the_same_limit(users):
    client = Client()
    url = reverse("admin:login")
    for _ in range(5):
        assert _login(client, "root", "wrong-password", url=url).status_code == 200
    response = _login(client, "root", PASSWORD, url=url)
    assert response.status_code == 429 and "Too many failed logins" in response.content.decode()
    assert _logged_in_as(client) is None
    assert _login(client, "root", PASSWORD).status_code == 429  # the same count as the site's login


def test_behind_a_proxy_the_address_is_the_one_the_proxy_saw(users, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    client = Client(REMOTE_ADDR="10.0.0.1")  # the proxy
    # A client that forges the start of X-Forwarded-For still gets its own address counted.
    for forged in ("1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4", "5.5.5.5"):
        _fail(client, "alice", 1, HTTP_X_FORWARDED_FOR=f"{forged}, 203.0.113.7")
    assert _login(client, "alice", PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 429
    assert _login(client, "alice", PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.8").status_code == 302


def test_keys_hold_no_username_or_address(users, redis_cache):
    _fail(Client(), "alice", 2)
    from django.conf import settings

    backend = settings.CACHES["default"]
    client = redis.Redis.from_url(backend["LOCATION"])
    keys = [k.decode() for k in client.scan_iter(f"{backend['KEY_PREFIX']}:*")]
    client.close()
    assert keys and all(ratelimit.KEY_PREFIX in k for k in keys)
    assert not any("alice" in k or "127.0.0.1" in k for k in keys)


def test_logins_keep_working_while_the_cache_is_down(users, settings, caplog):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:9/0"}
    }
    client = Client()
    assert _login(client, "alice", "wrong-password").status_code == 200
    assert _login(client, "alice", PASSWORD).status_code == 302
    assert "The login rate limit is off: the cache is unreachable" in caplog.text
