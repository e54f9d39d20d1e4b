from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for the run script and load balancers: the web answers and so does the database."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("select 1")
    except Exception:  # noqa: BLE001 (any database failure means not ready)
        return JsonResponse({"ok": False, "database": "down"}, status=503)
    return JsonResponse({"ok": True})
