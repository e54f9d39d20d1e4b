from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for the run script and load balancers: the web answers, and whether the database does
    (503 while it does not: a PostgreSQL restart shows here, and the next call after it is back is 200)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("select 1")
    except Exception as exc:  # noqa: BLE001 (any database failure means not ready)
        return JsonResponse({"ok": False, "database": "down", "error": type(exc).__name__}, status=503)
    return JsonResponse({"ok": True, "database": "up"})


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """The site's own 403 for a form whose CSRF check failed (settings.CSRF_FAILURE_VIEW): Django's default
    page carries an inline style that the Content-Security-Policy blocks, and says nothing a user can act on."""
    message = (
        "This form could not be sent: it is too old, or cookies are off for this site. "
        "Reload the page and send it again."
    )
    return render(request, "403.html", {"exception": message}, status=403)
