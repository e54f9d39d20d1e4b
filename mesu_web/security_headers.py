"""Security headers on every response (issue 18): a Content-Security-Policy that the pages pass with no
violation (scripts and styles from this site's static files only: no inline script, handler or style; htmx
is told not to inject its indicator style), and a Permissions-Policy that turns off the browser features the
app never uses. The partner API's docs page (django-ninja's Swagger UI, from its CDN) gets its own policy.
A response that set its own header keeps it."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        policy = settings.CONTENT_SECURITY_POLICY
        if any(request.path.startswith(prefix) for prefix in settings.CSP_DOCS_PATHS):
            policy = settings.CONTENT_SECURITY_POLICY_DOCS
        if policy and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = policy
        if settings.PERMISSIONS_POLICY and "Permissions-Policy" not in response:
            response["Permissions-Policy"] = settings.PERMISSIONS_POLICY
        return response
