"""Refuse a request body larger than any form or upload may be, before Django reads it.

The forms refuse an oversize chapter or book, but only once Django has streamed the whole body to a
temporary file, and the CSRF check reads a multipart body too: without this, anyone with a CSRF cookie
could make the server write gigabytes to disk. A reverse proxy's body limit (nginx's
client_max_body_size) does the same job in front of the app; this one also covers gunicorn alone.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse


def request_max_bytes() -> int:
    """The largest upload (a training book or a chapter file) plus the largest form fields, in bytes."""
    upload = max(settings.TRAINING_BOOK_MAX_BYTES, settings.MESU_UPLOAD_MAX_BYTES)
    return upload + settings.DATA_UPLOAD_MAX_MEMORY_SIZE


class RequestSizeLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # Django reads no body without a valid length
        limit = request_max_bytes()
        if length > limit:
            return HttpResponse(
                f"The request is {length / 2**20:.1f} MiB; the largest this site accepts is "
                f"{limit / 2**20:.1f} MiB (the largest upload plus the form).",
                status=413,
                content_type="text/plain; charset=utf-8",
            )
        return self.get_response(request)
