"""Issue 18: every response carries the Content-Security-Policy and the Permissions-Policy, and no template
holds what the policy refuses (an inline script, an on* handler, a style element or attribute). The browser
side: tests/browser/test_csp_journey.py."""

from __future__ import annotations

import re
from pathlib import Path

from django.urls import reverse

ROOT = Path(__file__).resolve().parent.parent.parent
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/(?:json|ld\+json)\")[^>]*>", re.I)
HANDLER = re.compile(r"\son[a-z]+\s*=", re.I)
STYLE = re.compile(r"<style\b|\sstyle\s*=", re.I)


def test_pages_json_and_errors_carry_the_policies(client, users, settings):
    for url, status in ((reverse("writer:home"), 200), (reverse("login"), 200), ("/no/such/page/", 404),
                        ("/api/v1/stories", 401)):
        response = client.get(url)
        assert response.status_code == status, url
        assert response["Content-Security-Policy"] == settings.CONTENT_SECURITY_POLICY, url
        assert "script-src 'self'" in response["Content-Security-Policy"] and "'unsafe-inline'" not in response[
            "Content-Security-Policy"
        ]
        assert "frame-ancestors 'none'" in response["Content-Security-Policy"]
        assert response["Permissions-Policy"] == settings.PERMISSIONS_POLICY and "geolocation=()" in response[
            "Permissions-Policy"
        ]


def test_the_api_docs_get_their_own_policy_and_no_cdn(client):
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "cdn" not in policy
    assert "cdn.jsdelivr" not in response.content.decode()  # Swagger UI from the app's static files


def test_no_template_holds_an_inline_script_handler_or_style():
    found = []
    for path in sorted((ROOT / "templates").rglob("*.html")):
        text = path.read_text(encoding="utf-8")
        text = re.sub(r"{#.*?#}|{% comment %}.*?{% endcomment %}", "", text, flags=re.S)
        for pattern in (INLINE_SCRIPT, HANDLER, STYLE):
            for match in pattern.finditer(text):
                found.append(f"{path.relative_to(ROOT)}: {match.group(0).strip()}")
    assert found == []
