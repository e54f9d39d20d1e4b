from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from mesu_web.views import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("healthz", healthz, name="healthz"),
    path("training/", include("training.urls")),
    path("brands/", include("brands.urls")),
    path("", include("writer.urls")),
]
