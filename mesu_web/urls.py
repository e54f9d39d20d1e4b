from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from mesu_web.ratelimit import RateLimitedLoginView, rate_limited_admin_login
from mesu_web.views import healthz

urlpatterns = [
    # Both logins with the rate limit, before the URLs they take over (same paths; "login" keeps its name).
    path("admin/login/", rate_limited_admin_login(admin.site.login)),
    path("admin/", admin.site.urls),
    path("accounts/login/", RateLimitedLoginView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("healthz", healthz, name="healthz"),
    path("training/", include("training.urls")),
    path("brands/", include("brands.urls")),
    # The partner API (brands/api.py, django-ninja): token auth, no session; schema at /api/v1/openapi.json.
    path("api/v1/", include("brands.api")),
    path("notifications/", include("mesu_web.notifications.urls")),
    path("", include("writer.urls")),
]
