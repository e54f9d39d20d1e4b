"""PostgreSQL down (restarting, failing over, out of connections): the web answers 503 with a short page
instead of a 500 and a trace, and recovers by itself once the database is back (CONN_HEALTH_CHECKS
replaces the broken connection at the next request)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db.utils import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 10  # what the 503 asks clients (and the page's own reload) to wait

# Plain HTML, no template: rendering the site's templates would need the user, so the database.
PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">{refresh}
<title>Back in a moment · MeSu Studio</title></head>
<body><h1>Back in a moment</h1><p>MeSu Studio cannot reach its database right now. Nothing you saved is lost:
your chapters and requests are safe, and requests waiting for the writer go on once it is back.</p>
<p>This page tries again by itself in a few seconds.</p></body></html>
"""


class DatabaseUnavailableMiddleware:
    """Turns a view's lost database connection (django.db OperationalError or InterfaceError) into a 503.

    OperationalError also covers a deadlock or a statement timeout: those are logged as errors with their
    trace, and the user gets the same "try again in a moment", which is what helps them too.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        if _is_connection_error(exception):
            logger.warning("Database unavailable for %s %s: %s", request.method, request.path, exception)
        else:
            logger.error("Database error for %s %s", request.method, request.path, exc_info=exception)
        # A GET reloads itself; a form is never re-posted behind the user's back.
        refresh = f'<meta http-equiv="refresh" content="{RETRY_AFTER_SECONDS}">' if request.method == "GET" else ""
        response = HttpResponse(PAGE.format(refresh=refresh), status=503, content_type="text/html")
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        response["Cache-Control"] = "no-store"
        return response


def _is_connection_error(exc: Exception) -> bool:
    """Whether the error means "no usable connection" (down, restarting, refused, closed)."""
    if isinstance(exc, InterfaceError):
        return True
    sqlstate = getattr(exc.__cause__, "sqlstate", None)
    # 08: connection exceptions; 57P01-57P03: admin/crash shutdown, cannot connect now. None: psycopg
    # found no server at all (refused, or closed while idle).
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in {"57P01", "57P02", "57P03"}
