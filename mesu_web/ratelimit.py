"""Login rate limiting: after LOGIN_RATE_LIMIT_ATTEMPTS failed logins for one username from one client
address within LOGIN_RATE_LIMIT_WINDOW seconds, the login page answers 429 until the window passes; and
after LOGIN_RATE_LIMIT_ADDRESS_ATTEMPTS failed logins from one address for any usernames (password
spraying: one password tried on many accounts), that address is refused for every username until its window
passes. A successful login clears its username's counter, never the address's.

The counters live in Django's cache (Redis in production, shared by every web process). The window is
fixed from the first failure: Redis INCR keeps the key's expiry, so more failures do not extend it. A
successful login clears the counter. Keys hold a hash, never the username or the address.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.utils.cache import add_never_cache_headers

logger = logging.getLogger(__name__)
T = TypeVar("T")

KEY_PREFIX = "login-failures"
USERNAME_MAX_CHARS = 150  # Django's username field; longer posts are cut before hashing


def client_ip(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or the X-Forwarded-For entry that the TRUSTED_PROXY_COUNT-th
    proxy from us added (each proxy appends the address it saw; entries before are the client's word)."""
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        forwarded = [part for part in forwarded if part]
        if len(forwarded) >= proxies:
            return forwarded[-proxies]
    return request.META.get("REMOTE_ADDR", "") or "unknown"


def _key(username: str, ip: str) -> str:
    normalised = username.strip().casefold()[:USERNAME_MAX_CHARS]
    digest = hashlib.sha256(f"{normalised}\x00{ip}".encode()).hexdigest()
    return f"{KEY_PREFIX}:{digest}"


def _address_key(ip: str) -> str:
    return f"{KEY_PREFIX}:address:{hashlib.sha256(ip.encode()).hexdigest()}"


def _expiry_key(key: str) -> str:
    return f"{key}:until"


def login_blocked_for(*, username: str, ip: str) -> int:
    """Seconds until `username` may try again from `ip` (0: not blocked): the longer wait of the
    username's counter at that address and the address's own."""
    pairs = ((_key(username, ip), settings.LOGIN_RATE_LIMIT_ATTEMPTS),
             (_address_key(ip), settings.LOGIN_RATE_LIMIT_ADDRESS_ATTEMPTS))
    values = cache.get_many([k for key, _ in pairs for k in (key, _expiry_key(key))])
    wait = 0
    for key, limit in pairs:
        if int(values.get(key) or 0) >= limit:
            until = float(values.get(_expiry_key(key)) or 0)
            wait = max(wait, max(1, math.ceil(until - time.time())))
    return wait


def login_failure_record(*, username: str, ip: str) -> int:
    """Count one failed login, for the username at `ip` and for `ip` itself; returns the username's failures
    in the current window."""
    _count(_address_key(ip))
    return _count(_key(username, ip))


def _count(key: str) -> int:
    window = settings.LOGIN_RATE_LIMIT_WINDOW
    if cache.add(key, 1, timeout=window):
        cache.set(_expiry_key(key), time.time() + window, timeout=window)
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add() and incr(): this failure starts a new window
        cache.set(key, 1, timeout=window)
        cache.set(_expiry_key(key), time.time() + window, timeout=window)
        return 1


def login_failures_clear(*, username: str, ip: str) -> None:
    key = _key(username, ip)
    cache.delete_many([key, _expiry_key(key)])


def _minutes(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def blocked_message(wait: int) -> str:
    return f"Too many failed logins from your address. Try again in {_minutes(wait)}."


def _unless_cache_down(fn: Callable[[], T], default: T) -> T:
    """Logins keep working while the cache is down (unlimited until it is back), with a warning."""
    try:
        return fn()
    except Exception:  # noqa: BLE001 (redis.ConnectionError and friends: any cache failure)
        logger.warning("The login rate limit is off: the cache is unreachable", exc_info=True)
        return default


class RateLimitedLoginView(LoginView):
    """Django's LoginView that refuses a username+address with too many recent failures (429)."""

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        username = request.POST.get("username", "")
        ip = client_ip(request)
        wait = _unless_cache_down(lambda: login_blocked_for(username=username, ip=ip), 0)
        if wait:
            # Not validated: while blocked the password is not even checked. The message shows through
            # the messages list of the page (base.html), above the form.
            messages.error(request, blocked_message(wait))
            form = self.get_form_class()(request, initial={"username": username[:USERNAME_MAX_CHARS]})
            response = self.render_to_response(self.get_context_data(form=form), status=429)
            response["Retry-After"] = str(wait)
            return response
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form) -> HttpResponse:  # noqa: ANN001 (an AuthenticationForm)
        username, ip = self.request.POST.get("username", ""), client_ip(self.request)
        _unless_cache_down(lambda: login_failure_record(username=username, ip=ip), 0)
        return super().form_invalid(form)

    def form_valid(self, form) -> HttpResponse:  # noqa: ANN001
        username, ip = self.request.POST.get("username", ""), client_ip(self.request)
        _unless_cache_down(lambda: login_failures_clear(username=username, ip=ip), None)
        return super().form_valid(form)


def rate_limited_admin_login(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The same limit around the admin site's login (`admin.site.login`), which builds its own
    LoginView: a POST answered with the form again (200) failed, a redirect (302) logged in."""

    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method != "POST":
            return view(request, *args, **kwargs)
        username, ip = request.POST.get("username", ""), client_ip(request)
        wait = _unless_cache_down(lambda: login_blocked_for(username=username, ip=ip), 0)
        if wait:
            response = HttpResponse(blocked_message(wait), status=429, content_type="text/plain; charset=utf-8")
            response["Retry-After"] = str(wait)
            add_never_cache_headers(response)
            return response
        response = view(request, *args, **kwargs)
        if response.status_code == 200:
            _unless_cache_down(lambda: login_failure_record(username=username, ip=ip), 0)
        elif response.status_code == 302:
            _unless_cache_down(lambda: login_failures_clear(username=username, ip=ip), None)
        return response

    return wrapped
