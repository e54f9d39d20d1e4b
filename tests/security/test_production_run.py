"""A production run, for real: gunicorn serving the app with DJANGO_DEBUG=0, a secret key, the allowed host,
collected static files, and TLS terminated by a proxy in front (X-Forwarded-Proto), as README's
"Production" section says to run it. The settings themselves are checked in test_deploy_and_secrets.py;
this test checks what a browser gets from the running server: the redirect to HTTPS, HSTS, Secure
cookies, the security headers, plain error pages (no technical 404 listing the URLs) and a login.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from tests.factories import PASSWORD, UserFactory

BASE_DIR = Path(__file__).resolve().parents[2]
HOST = "mesu.example.com"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def production(transactional_db, tmp_path):
    """The app under gunicorn with production settings, on the test database; yields its base URL."""
    db = settings.DATABASES["default"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))}
    env.update(
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(64),
        DJANGO_ALLOWED_HOSTS=HOST,
        DJANGO_CSRF_TRUSTED_ORIGINS=f"https://{HOST}",
        DJANGO_SECURE_PROXY_SSL_HEADER="true",  # the proxy in front terminates TLS and says so
        TRUSTED_PROXY_COUNT="1",
        DJANGO_STATIC_ROOT=str(tmp_path / "static"),
        POSTGRES_DB=db["NAME"],
        DJANGO_SETTINGS_MODULE="mesu_web.settings",
    )
    collect = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--no-input"],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=300,
    )
    assert collect.returncode == 0, collect.stderr
    port = _free_port()
    log = (tmp_path / "gunicorn.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("gunicorn")), "mesu_web.wsgi", "-b", f"127.0.0.1:{port}",
         "-w", "1", "--threads", "2", "--timeout", "60"],
        cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", headers={"Host": HOST}, timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()
            assert time.monotonic() < deadline, "gunicorn did not answer /healthz in 120 s"
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_the_production_run_serves_https_only_with_secure_cookies_and_plain_error_pages(production):
    user = UserFactory(username="pia", roles=["reader"])
    # The tests hash with MD5 for speed; the production run knows the production hashers only.
    hasher = PBKDF2PasswordHasher()
    user.password = hasher.encode(PASSWORD, hasher.salt())
    user.save(update_fields=["password"])
    plain = httpx.Client(base_url=production, headers={"Host": HOST}, timeout=30)
    # Over plain HTTP every page moves to HTTPS; the load balancer's probe does not.
    moved = plain.get("/stories/")
    assert moved.status_code == 301 and moved.headers["location"] == f"https://{HOST}/stories/"
    assert plain.get("/healthz").status_code == 200
    # A host that is not allowed gets a plain 400.
    assert httpx.get(f"{production}/", headers={"Host": "evil.example"}, timeout=30).status_code == 400

    https = httpx.Client(
        base_url=production, headers={"Host": HOST, "X-Forwarded-Proto": "https"}, timeout=30
    )
    home = https.get("/")
    assert home.status_code == 200
    headers = home.headers
    assert headers["strict-transport-security"] == "max-age=31536000; includeSubDomains; preload"
    assert "default-src 'self'" in headers["content-security-policy"]
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "camera=()" in headers["permissions-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"
    # Static files come from collectstatic's folder (WhiteNoise), with the page's stylesheet among them.
    css = re.search(r'href="(/static/[^"]+\.css)"', home.text)
    assert css, home.text[:2000]
    assert https.get(css[1]).status_code == 200

    # An unknown page is the site's own 404: no list of the URL patterns, no settings, no traceback.
    missing = https.get("/no-such-page/")
    assert missing.status_code == 404
    for technical in ("URLconf", "Django tried these URL patterns", "DEBUG = True", "Traceback"):
        assert technical not in missing.text

    # Logging in: the CSRF and session cookies are Secure, the session cookie HttpOnly.
    login = https.get("/accounts/login/")
    assert login.status_code == 200
    csrf_cookie = _set_cookie(login, "csrftoken")
    assert "Secure" in csrf_cookie and "SameSite=Lax" in csrf_cookie
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)[1]
    form = {"username": user.username, "password": PASSWORD, "csrfmiddlewaretoken": token}
    referer = {"Referer": f"https://{HOST}/accounts/login/"}
    # (httpx keeps a Secure cookie for https:// URLs only: the proxy's side is plain, so cookies go by hand.)
    refused = https.post("/accounts/login/", data=form, headers=referer)  # no CSRF cookie: the site's 403
    assert refused.status_code == 403 and "Reload the page and send it again" in refused.text
    assert "<style" not in refused.text  # Django's own page has an inline style, which the CSP blocks
    done = https.post("/accounts/login/", data=form, headers={**referer, "Cookie": _pair(csrf_cookie)})
    assert done.status_code == 302, done.text[:2000]
    session_cookie = _set_cookie(done, "sessionid")
    assert "Secure" in session_cookie and "HttpOnly" in session_cookie and "SameSite=Lax" in session_cookie
    # The session works over HTTPS: the reader's own page answers, with the user named.
    mine = https.get("/notifications/", headers={"Cookie": f"{_pair(csrf_cookie)}; {_pair(session_cookie)}"})
    assert mine.status_code == 200 and "pia" in mine.text


def _set_cookie(response: httpx.Response, name: str) -> str:
    cookies = [value for value in response.headers.get_list("set-cookie") if value.startswith(f"{name}=")]
    assert cookies, f"no {name} cookie in {response.headers.get_list('set-cookie')}"
    return cookies[0]


def _pair(set_cookie: str) -> str:
    return set_cookie.split(";", 1)[0]
