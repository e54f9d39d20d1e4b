"""CSRF on every state change: each URL that some role may POST to, posted by that role without a
token, gets 403 and changes nothing; with the token the same post goes through as the permission table
says. htmx posts carry the token from `hx-headers` on <body>."""

from __future__ import annotations

import json
import re

from django.core.cache import cache
from django.db import transaction
from django.test import Client
from django.urls import reverse

from brands.models import BrandAsset
from tests.security.permission_table import (
    ADMIN_LOGIN,
    LOGIN,
    ROLES,
    db_fingerprint,
    outcome_of,
    permission_table,
    url_patterns,
)

REFUSED = {401, 403, 404, 405, LOGIN, ADMIN_LOGIN}  # 401: the partner API, token only
HX_HEADERS = re.compile(r"<body hx-headers='(?P<json>[^']*)'>")


def _state_changing(world) -> list[tuple[str, str, dict, str, object]]:  # noqa: ANN001
    """(URL name, url, form data, a role that may post there, what it gets) for every POST that some
    role gets through."""
    table = permission_table(world)
    out = []
    for name in sorted(url_patterns()):
        for case in table[name]:
            allowed = [role for role in ROLES if case.post[role] not in REFUSED]
            if allowed:
                role = allowed[0]
                out.append((name, reverse(name, kwargs=case.kwargs), case.data, role, case.post[role]))
    return out


def _client(users: dict, role: str) -> Client:
    client = Client(enforce_csrf_checks=True)
    if role != "anon":
        client.force_login(users[role])
    return client


def test_every_state_change_needs_the_csrf_token(world, users):
    everyone = {**users, "max": world.max}
    posts = _state_changing(world)
    names = {name for name, *_ in posts}
    # The views that change something are all here (a sample, so that the table cannot shrink unseen).
    assert {"login", "logout", "writer:story_edit", "writer:option_accept", "brands:option_approve",
            "brands:asset_delete", "training:adapter_activate", "training:book_delete"} <= names
    problems = []
    for name, url, data, role, expected in posts:
        client = _client(everyone, role)
        client.get(reverse("writer:home"))  # the csrftoken cookie, as a browser would have it
        token = client.cookies["csrftoken"].value
        with transaction.atomic():
            before = db_fingerprint()
            response = client.post(url, data)
            if response.status_code != 403:
                problems.append(f"POST {url} ({name}) as {role} without a token: {response.status_code}")
            elif db_fingerprint() != before:
                problems.append(f"POST {url} ({name}) as {role} without a token changed the database")
            transaction.set_rollback(True)
        with transaction.atomic():
            outcome = outcome_of(client.post(url, {**data, "csrfmiddlewaretoken": token}))
            if outcome != expected:
                problems.append(f"POST {url} ({name}) as {role} with the token: {outcome}, expected {expected}")
            transaction.set_rollback(True)
        cache.clear()
    assert not problems, "\n".join(problems)
    assert len(posts) >= 40, len(posts)


def test_htmx_posts_send_the_token_from_the_body(world, users):
    client = Client(enforce_csrf_checks=True)
    client.force_login(users["mia"])
    page = client.get(reverse("brands:brand_detail", args=[world.a.slug])).content.decode()
    match = HX_HEADERS.search(page)
    assert match, "base.html's <body> must carry hx-headers with the CSRF token"
    token = json.loads(match["json"])["X-CSRFToken"]
    url = reverse("brands:asset_create", args=[world.a.slug])
    form = {"kind": "mascot", "name": "Wavey", "terms": "Wavey"}
    # Without the header htmx's post is refused; with it, it goes through as a fragment.
    assert client.post(url, form, HTTP_HX_REQUEST="true").status_code == 403
    assert not BrandAsset.objects.filter(name="Wavey").exists()
    response = client.post(url, form, HTTP_HX_REQUEST="true", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200 and 'id="assets"' in response.content.decode()
    assert BrandAsset.objects.filter(brand=world.a, name="Wavey").exists()


def test_every_page_with_a_post_form_has_the_token(world, users):
    """Each rendered <form method="post"> carries csrfmiddlewaretoken (pages of every role)."""
    form = re.compile(r"<form\b[^>]*method=\"post\"[^>]*>(.*?)</form>", re.S | re.I)
    pages = [
        ("alice", reverse("writer:story_detail", args=[world.pub.slug])),
        ("alice", reverse("writer:request_detail", args=[world.gen_alice.pk])),
        ("alice", reverse("writer:chapter_add", args=[world.pub.slug])),
        ("alice", reverse("brands:story_settings", args=[world.pub.slug])),
        ("rita", reverse("writer:story_detail", args=[world.pub.slug])),
        ("rita", reverse("brands:sponsorship")),
        ("mia", reverse("brands:brand_detail", args=[world.a.slug])),
        ("mia", reverse("brands:review_detail", args=[world.opt_a.pk])),
        ("root", reverse("training:adapter_list")),
        ("root", reverse("training:book_list")),
        ("root", reverse("training:job_list")),
        ("anon", reverse("login")),
        ("anon", reverse("writer:signup")),
    ]
    for role, url in pages:
        client = Client()
        if role != "anon":
            client.force_login({**users, "max": world.max}[role])
        html = client.get(url).content.decode()
        forms = form.findall(html)
        assert forms, url
        for body in forms:
            assert 'name="csrfmiddlewaretoken"' in body, (role, url, body[:200])
