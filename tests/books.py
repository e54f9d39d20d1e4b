"""Book files built by tests: a small real EPUB for the one book reader (`writer.book_import`) and for
the commands that read books through it (import_book, import_books, build_dataset)."""

from __future__ import annotations

from pathlib import Path


def make_epub(
    path: Path,
    chapters: list[tuple[str, str]],
    *,
    title: str = "The Glass Market",
    authors: tuple[str, ...] = ("A. Writer",),
    date: str = "2024-05-01T00:00:00+00:00",
    description: str = "<p>A market made of <b>glass</b> &amp; rain.</p>",
    nav: bool = True,
) -> Path:
    """A small EPUB 3 written by ebooklib itself: one XHTML page per (heading, body html) chapter."""
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("urn:mesu:test")
    book.set_title(title)
    book.set_language("en")
    for author in authors:
        book.add_author(author)
    if date:
        book.add_metadata("DC", "date", date)
    if description:
        book.add_metadata("DC", "description", description)
    pages = []
    for i, (heading, body) in enumerate(chapters, start=1):
        page = epub.EpubHtml(title=heading or f"Page {i}", file_name=f"ch{i}.xhtml", lang="en")
        page.content = (f"<h1>{heading}</h1>" if heading else "") + body
        book.add_item(page)
        pages.append(page)
    book.toc = pages
    book.add_item(epub.EpubNcx())
    spine: list = list(pages)
    if nav:
        book.add_item(epub.EpubNav())
        spine = ["nav", *pages]
    book.spine = spine
    epub.write_epub(str(path), book)
    return path
