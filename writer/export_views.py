"""Downloads of a story (its author's) or of a reader's personalised copy: EPUB, DOCX or Markdown.

Thin: check who may export what (`writer.exports`), write the export to a temporary file, stream it.
GET only; nothing is written to the database (not even a placement view: the request page counts those).
"""

from __future__ import annotations

import tempfile

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_GET

from mesu_web.errors import ApplicationError
from writer import exports
from writer.models import Story


def _format_or_404(fmt: str) -> exports.ExportFormat:
    try:
        return exports.export_format(fmt)
    except ApplicationError:
        raise Http404("No such export format.") from None


def _download(*, story: Story, fmt: exports.ExportFormat, reader=None) -> FileResponse:  # noqa: ANN001
    handle = tempfile.TemporaryFile()  # gone when the response closes it
    try:
        result = exports.story_export(story=story, fmt=fmt, out=handle, reader=reader)
        handle.seek(0)
    except BaseException:
        handle.close()
        raise
    response = FileResponse(handle, as_attachment=True, filename=result.filename, content_type=fmt.content_type)
    patch_cache_control(response, private=True, no_store=True)  # an unpublished story or a reader's own copy
    return response


@login_required
@require_GET
def story_export(request: HttpRequest, slug: str, fmt: str) -> FileResponse:
    """The whole story, for its author."""
    story = exports.story_get_for_author_export(slug=slug, user=request.user)
    return _download(story=story, fmt=_format_or_404(fmt))


@login_required
@require_GET
def copy_export(request: HttpRequest, slug: str, fmt: str) -> FileResponse:
    """The user's personalised copy of a story they can read: its chapters and the chapters written for them."""
    story = exports.story_get_for_copy_export(slug=slug, user=request.user)
    return _download(story=story, fmt=_format_or_404(fmt), reader=request.user)
