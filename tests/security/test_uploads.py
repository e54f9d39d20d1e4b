"""Upload size and type limits on the three upload forms: a chapter file, a book import, a training
book. Over-size, wrong type, binary, non-UTF-8 and empty files get a clear reason on the form (never a
500) and nothing is kept; a body over every limit is refused before it is read (413)."""

from __future__ import annotations

import html

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from tests.factories import story_with_chapters
from writer.models import Chapter, Story

LIMIT = 2**20  # bytes: MESU_UPLOAD_MAX_BYTES and TRAINING_BOOK_MAX_BYTES in these tests
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
BAD_FILES = [
    ("huge.txt", b"a" * (2 * LIMIT), ["is 2.0 MB; the limit is 1.0 MB", "is 2.0 MiB; the largest book is 1 MiB"]),
    ("virus.exe", b"MZ\x90\x00\x03\x00\x00\x00" + bytes(range(256)), ["is a .exe file"]),
    ("story.pdf", b"%PDF-1.4\n1 0 obj\n", ["is a .pdf file"]),
    ("photo.txt", PNG, ["looks like a binary file (a PNG image)"]),
    ("program.md", b"\x7fELF\x02\x01\x01" + bytes(200), ["looks like a binary file (a program)"]),
    ("nul.txt", b"text\x00with\x00nul" * 10, ["looks like a binary file"]),
    ("sjis.txt", ("こんにちは、世界。" * 40).encode("shift_jis"), ["is not UTF-8 text"]),
    ("empty.txt", b"", ["The submitted file is empty."]),
    ("noext", b"Plain text.", ["is a file without an extension"]),
]
ENDPOINTS = ["chapter", "book_import", "training_book"]


@pytest.fixture
def limits(settings, tmp_path):
    settings.MESU_UPLOAD_MAX_BYTES = LIMIT
    settings.TRAINING_BOOK_MAX_BYTES = LIMIT
    settings.TRAINING_BOOKS_DIR = tmp_path / "books"
    return settings


def _post(client_for, users, endpoint: str, upload: SimpleUploadedFile):  # noqa: ANN202
    if endpoint == "chapter":
        story = Story.objects.filter(owner=users["alice"]).first() or story_with_chapters(
            owner=users["alice"], chapters=1
        )
        return client_for("alice").post(reverse("writer:chapter_add", args=[story.slug]), {"title": "t", "file": upload})
    if endpoint == "book_import":
        return client_for("alice").post(reverse("writer:book_import"), {"title": "Imported", "file": upload})
    return client_for("root").post(reverse("training:book_list"), {"file": upload})


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("name", "data", "reasons"), BAD_FILES, ids=[f[0] for f in BAD_FILES])
def test_bad_files_get_a_reason_and_nothing_is_kept(limits, client_for, users, endpoint, name, data, reasons):
    story_with_chapters(owner=users["alice"], chapters=1)
    chapters, stories = Chapter.objects.count(), Story.objects.count()
    response = _post(client_for, users, endpoint, SimpleUploadedFile(name, data))
    assert response.status_code == 200
    page = html.unescape(response.content.decode())
    assert any(reason in page for reason in reasons), (endpoint, name, page[page.find("errorlist") - 200:][:600])
    assert (Chapter.objects.count(), Story.objects.count()) == (chapters, stories)
    books = limits.TRAINING_BOOKS_DIR
    assert not books.exists() or not any(books.iterdir())


def test_a_corrupt_epub_is_refused_as_a_training_book(limits, client_for):
    upload = SimpleUploadedFile("book.epub", b"PK\x03\x04not really a zip")
    response = client_for("root").post(reverse("training:book_list"), {"file": upload})
    assert response.status_code == 200 and "is not a readable EPUB" in html.unescape(response.content.decode())


def test_a_file_at_the_limit_is_taken(limits, client_for, users):
    limits.MESU_CHAPTER_MAX_CHARS = 2 * LIMIT  # the byte limit is the one under test here
    story = story_with_chapters(owner=users["alice"], chapters=1)
    text = ("Rain on the stall. " * (LIMIT // 19 + 1)).encode()[:LIMIT]
    response = client_for("alice").post(
        reverse("writer:chapter_add", args=[story.slug]), {"file": SimpleUploadedFile("long.txt", text)}
    )
    assert response.status_code == 302
    assert story.chapters.count() == 2


def test_a_body_over_every_limit_is_refused_before_it_is_read(limits, client_for, users):
    """Chapter file and training book at most 1 MiB, form fields 4 MiB: a 6 MiB body gets 413."""
    story = story_with_chapters(owner=users["alice"], chapters=1)
    upload = SimpleUploadedFile("huge.txt", b"a" * (6 * LIMIT))
    response = client_for("alice").post(reverse("writer:chapter_add", args=[story.slug]), {"file": upload})
    assert response.status_code == 413
    assert "the largest this site accepts is 5.0 MiB" in response.content.decode()
    assert story.chapters.count() == 1
    # Anonymous too, and before the CSRF check reads the multipart body.
    upload.seek(0)
    assert Client().post(reverse("writer:home"), {"file": upload}).status_code == 413


def test_pasted_text_over_the_limits_is_a_form_error_or_400(limits, client_for, users, settings):
    story = story_with_chapters(owner=users["alice"], chapters=1)
    url = reverse("writer:chapter_add", args=[story.slug])
    settings.MESU_CHAPTER_MAX_CHARS = 1000
    response = client_for("alice").post(url, {"text": "x" * 1001})
    assert response.status_code == 200 and "The chapter has 1,001 characters; the limit is 1,000." in html.unescape(response.content.decode())
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096  # Django's own limit on form fields: 400, not 500
    assert client_for("alice").post(url, {"text": "x" * 5000}).status_code == 400
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    assert client_for("alice").post(url, {f"f{i}": "x" for i in range(20)}).status_code == 400
    assert story.chapters.count() == 1


def test_an_uploaded_file_name_never_picks_the_path(limits, client_for, tmp_path):
    book = b"# Salt Road\n\n## Chapter 1\n\nThey walked.\n\n## Chapter 2\n\nThey stopped.\n"
    upload = SimpleUploadedFile("../../../outside.md", book)
    response = client_for("root").post(reverse("training:book_list"), {"file": upload}, follow=True)
    assert response.status_code == 200 and "Imported" in response.content.decode()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(p.is_relative_to(limits.TRAINING_BOOKS_DIR) for p in written), written
