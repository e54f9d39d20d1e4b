"""The books & datasets page: import books into the training library, build a dataset, staff only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.fixture
def library(settings, tmp_path, model_dir):
    settings.TRAINING_BOOKS_DIR = tmp_path / "books"
    settings.TRAINING_DATASETS_DIR = tmp_path / "datasets"
    settings.WRITER_TOKENIZER_PATH = str(model_dir)
    return settings


def upload(client, name: str, data: bytes, **extra):
    return client.post(
        reverse("training:book_list"), {"file": SimpleUploadedFile(name, data), **extra}, follow=True
    )


def test_import_books_and_build_a_dataset(client_for, library):
    admin = client_for("root")
    for path in sorted(SAMPLES.glob("*.*")):
        if path.name == "README.md":
            continue
        page = upload(admin, path.name, path.read_bytes(), author="MeSu samples", version="1").content.decode()
        assert "Imported" in page, page[:2000]
    page = admin.get(reverse("training:book_list")).content.decode()
    assert "neon rain" in page.lower() and "MeSu samples" in page
    books = {b.slug: b for b in __import__("training.selectors", fromlist=["x"]).library_books()}
    expected_pairs = sum(b.pairs for b in books.values())
    assert len(books) == 2 and expected_pairs > 0

    response = admin.post(reverse("training:dataset_build"), {"name": "demo", "test_fraction": 0.3, "seed": 0}, follow=True)
    text = response.content.decode()
    assert "Dataset demo:" in text
    folder = library.TRAINING_DATASETS_DIR / "demo"
    split = json.loads((folder / "split.json").read_text())
    assert not set(split["train"]) & set(split["test"])  # no book in both halves
    lines = sum(1 for _ in (folder / "train.jsonl").open()) + sum(1 for _ in (folder / "test.jsonl").open())
    assert lines == expected_pairs
    assert "Train on it" in text and str(folder.resolve()) in text
    # The job form and the evaluation form come prefilled from the dataset's links.
    job_form = admin.get(reverse("training:job_list"), {"dataset": str(folder)}).content.decode()
    assert f'value="{folder}"' in job_form
    # The same name again is refused: trained jobs point at the folder.
    again = admin.post(reverse("training:dataset_build"), {"name": "demo", "test_fraction": 0.3, "seed": 0})
    assert again.status_code == 400 and "exists" in again.content.decode()
    bad = admin.post(reverse("training:dataset_build"), {"name": "../up", "test_fraction": 0.3, "seed": 0})
    assert bad.status_code == 400 and "Name the dataset" in bad.content.decode()


@pytest.mark.parametrize(
    ("name", "data", "fragment"),
    [
        ("empty.txt", b"", "empty"),
        ("noise.txt", bytes(range(256)) * 64, "binary"),
        ("book.pdf", b"%PDF-1.4", ".pdf"),
        ("broken.epub", b"PK\x03\x04 not really a zip", "EPUB"),
    ],
)
def test_bad_books_are_refused_with_a_reason(client_for, library, name, data, fragment):
    page = upload(client_for("root"), name, data).content.decode()
    assert "Imported" not in page and fragment.lower() in page.lower(), page[:3000]
    assert not list(library.TRAINING_BOOKS_DIR.glob("*.md")) if library.TRAINING_BOOKS_DIR.exists() else True


def test_a_book_over_the_limit_is_refused(client_for, library):
    library.TRAINING_BOOK_MAX_BYTES = 2048
    page = upload(client_for("root"), "long.txt", b"Chapter 1\n\n" + b"word " * 1000).content.decode()
    assert "the largest book is" in page


def test_script_in_a_book_is_shown_as_text(client_for, library):
    book = b"# <script>alert(1)</script>\n\n## Chapter 1\n\nOne.\n\n## Chapter 2\n\nTwo.\n"
    page = upload(client_for("root"), "x.md", book).content.decode()
    assert "<script>alert(1)</script>" not in page


def test_remove_a_book_and_only_staff_reach_the_page(client_for, library):
    admin = client_for("root")
    upload(admin, "neon_rain.txt", (SAMPLES / "neon_rain.txt").read_bytes())
    slug = next(library.TRAINING_BOOKS_DIR.glob("*.md")).stem
    for name in ("alice", "rita", "mia"):
        other = client_for(name)
        assert other.get(reverse("training:book_list")).status_code == 302
        assert other.post(reverse("training:book_delete", args=[slug])).status_code == 302
        assert other.post(reverse("training:dataset_build"), {"name": "x"}).status_code == 302
    assert (library.TRAINING_BOOKS_DIR / f"{slug}.md").exists()
    page = admin.post(reverse("training:book_delete", args=[slug]), follow=True).content.decode()
    assert "out of the library" in page and not (library.TRAINING_BOOKS_DIR / f"{slug}.md").exists()
    page = admin.post(reverse("training:book_delete", args=[slug]), follow=True).content.decode()
    assert "out of the library" not in page
