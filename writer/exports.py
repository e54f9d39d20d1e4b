"""A story, or a reader's personalised copy of it, as EPUB, DOCX or Markdown.

What goes in is what that user may see on the pages:
- the author's export (`reader=None`) is the story's chapters, as the author reads them;
- a reader's copy is the story's chapters as readers read them (a chapter withheld for a brand's review
  is the same notice the chapter page shows) with the reader's own personalised chapters (the options of
  their succeeded requests that a brand let through, as the request page shows them) after the chapter
  each was written to follow. Never another reader's chapters, never an option waiting for review, held
  or rejected.
Chapter 0 (the story's metadata) is the title page. A chapter that carries an approved paid placement
keeps the disclosure label of the pages ("Includes a paid placement by ...") under its heading.

Memory stays bounded whatever the story's length: chapters come from the database a chunk at a time
(`.iterator()`), and each is rendered and written out before the next is read.
- Markdown is written straight to the file.
- EPUB: each chapter's XHTML goes to a spool file as it is rendered; the book ebooklib writes holds a
  small stub per chapter (its name and title) whose content is read back from the spool only while
  ebooklib writes that chapter into the zip.
- DOCX: python-docx builds each chapter's paragraphs (styles, bold and italic runs), which are
  serialised to a spool file and taken out of the document at once; the saved document's body is then
  streamed into the final zip with the spooled chapters in place.

Text safety: chapter text is user content. EPUB and DOCX chapters are rendered by the same markdown
renderer and allow-list sanitiser as the chapter page (`writer.templatetags.prose.render_markdown`: raw HTML off, so
a `<script>` typed into a chapter stays visible text) and every other string is escaped; characters
XML forbids (control characters) are taken out of everything; Markdown escapes a `<` that could open a
tag; file names come from `slug_of`.
"""

from __future__ import annotations

import heapq
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import IO

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, Subquery

from brands.matching import chapter_placement_check
from brands.suitability import reader_placement_block
from mesu_web.errors import ApplicationError
from mesu_web.slugs import slug_of
from writer import selectors
from writer.models import Chapter, GenerationOption, GenerationRequest, ReviewStatus, Story
from writer.roles import AUTHOR, READER, user_roles
from writer.templatetags.prose import render_markdown

AnyUser = AbstractBaseUser | AnonymousUser

CHUNK = 20  # chapters read from the database at a time (a chapter may have MESU_CHAPTER_MAX_CHARS)

# The wording of the pages (templates/writer/chapter_detail.html and _request_body.html).
DISCLOSURE = "Includes a paid placement by {brand}"
WITHHELD_NOTICE = "This chapter is waiting for a brand's review after an edit; it will be back soon."
CHAPTER_ZERO = "Chapter 0 — characters, setting, intent"


@dataclass(frozen=True)
class ExportFormat:
    name: str
    extension: str
    content_type: str
    label: str


FORMATS: dict[str, ExportFormat] = {
    "epub": ExportFormat("epub", "epub", "application/epub+zip", "EPUB"),
    "docx": ExportFormat(
        "docx", "docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "DOCX"
    ),
    "md": ExportFormat("md", "md", "text/markdown; charset=utf-8", "Markdown"),
}


def export_format(name: str) -> ExportFormat:
    fmt = FORMATS.get((name or "").strip().lower())
    if fmt is None:
        raise ApplicationError(f"Unknown export format {name!r}: choose {', '.join(FORMATS)}.")
    return fmt


@dataclass(frozen=True)
class ExportResult:
    story: Story
    format: ExportFormat
    chapters: int  # chapters exported, the title page (chapter 0) not counted
    filename: str  # a safe file name for a download


# --- Who may export what -----------------------------------------------------------------------------


def can_export_copy(user: AnyUser) -> bool:
    """Readers and authors (any author reads others' stories too) and staff; brand managers do not."""
    if not user.is_authenticated:
        return False
    return user.is_staff or bool(user_roles(user) & {AUTHOR, READER})


def story_get_for_author_export(*, slug: str, user: AnyUser) -> Story:
    """The story its author exports: 404 to those who may not see it, 403 to those who may."""
    return selectors.story_get_for_owner(slug=slug, user=user)


def story_get_for_copy_export(*, slug: str, user: AnyUser) -> Story:
    """A story the user may read and export their copy of: 404 if they may not see it, 403 for a user who
    is no reader (a brand manager)."""
    story = selectors.story_get_for_viewer(slug=slug, user=user)
    if not can_export_copy(user):
        raise PermissionDenied("Only readers and authors can export a copy of a story.")
    return story


# --- Text ---------------------------------------------------------------------------------------------

# Everything XML 1.0 allows: tab, newline, carriage return and the rest of Unicode but the surrogates and
# U+FFFE/U+FFFF. The rest (NUL, other C0 controls, ...) goes.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_SPACES = re.compile(r"\s+")
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


def xml_safe(text: str | None) -> str:
    """`text` without the characters XML forbids, with Windows and old Mac line ends made newlines."""
    return _NOT_XML.sub("", (text or "").replace("\r\n", "\n").replace("\r", "\n"))


def one_line(text: str | None) -> str:
    return _SPACES.sub(" ", xml_safe(text)).strip()


def safe_filename(title: str, extension: str, *, suffix: str = "") -> str:
    """A file name from a title: letters, digits and dashes only ("story" when none is left)."""
    base = slug_of(title or "", max_length=80, keep_letters=True) or "story"
    return f"{base}{suffix}.{extension}"


def _md_text(text: str) -> str:
    """Markdown that a renderer cannot turn into HTML: a `<` that could open a tag is escaped."""
    return _TAG_START.sub(r"\\<", xml_safe(text))


# --- What is exported ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TitlePage:
    title: str
    byline: str
    genre: str
    tags: tuple[str, ...]
    summary: str
    characters: str
    setting: str
    intent_notes: str
    copy_for: str  # the reader whose copy this is ("" for the author's export)

    @property
    def sections(self) -> list[tuple[str, str]]:
        named = (("Characters", self.characters), ("Setting", self.setting), ("Creative intent", self.intent_notes))
        return [(name, text) for name, text in named if text.strip()]

    @property
    def details(self) -> str:
        parts = [f"by {self.byline}"] if self.byline else []
        if self.genre:
            parts.append(self.genre)
        if self.tags:
            parts.append(" ".join(f"#{tag}" for tag in self.tags))
        return " · ".join(parts)


@dataclass(frozen=True)
class ExportChapter:
    title: str
    text: str
    sponsor: str = ""  # the brand named by the disclosure label ("" for none)
    withheld: bool = False  # readers get the notice instead of the text

    @property
    def disclosure(self) -> str:
        return DISCLOSURE.format(brand=self.sponsor) if self.sponsor else ""


def title_page(story: Story, reader: AnyUser | None = None) -> TitlePage:
    return TitlePage(
        title=one_line(story.title) or "Untitled",
        byline=one_line(story.author_name or story.owner.username),
        genre=one_line(story.genre),
        tags=tuple(one_line(tag) for tag in story.tags if one_line(tag)),
        summary=xml_safe(story.summary).strip(),
        characters=xml_safe(story.characters).strip(),
        setting=xml_safe(story.setting).strip(),
        intent_notes=xml_safe(story.intent_notes).strip(),
        copy_for=one_line(reader.get_username()) if reader is not None else "",
    )


def _story_chapters(
    story: Story, *, for_reader: bool, minor: bool = False
) -> Iterator[tuple[int, int, ExportChapter]]:
    """(number, 0, chapter) for the story's chapters in reading order, a chunk at a time. `minor`: the copy
    of a reader who said they are under 18, who never gets a placement (the chapter page's rule,
    brands.measurement.chapter_reading): a sponsored chapter as written without the brand, else withheld."""
    approved = GenerationOption.objects.filter(accepted_chapter=OuterRef("pk"), review_status=ReviewStatus.APPROVED)
    rows = (
        Chapter.objects.filter(story=story)
        .only("id", "story_id", "number", "title", "text", "source", "created_at", "updated_at")
        .annotate(
            sponsor_name=Subquery(approved.values("brand__name")[:1]),
            sponsor_draft=Subquery(approved.values("draft")[:1]),
        )
        .order_by("number")
    )
    for chapter in rows.iterator(chunk_size=CHUNK):
        # The chapter page's rule: the label only over text its brand approved; an edited chapter that
        # names a brand without approval is withheld from readers (its author reads it, unlabelled).
        placement = chapter_placement_check(chapter=chapter, sponsor_name=chapter.sponsor_name)
        withheld = placement.withheld and for_reader
        if minor and placement.sponsor:
            draft = (chapter.sponsor_draft or "").strip()
            yield chapter.number, 0, ExportChapter(
                title=one_line(chapter.display_title), text=xml_safe(draft), withheld=not draft
            )
            continue
        yield chapter.number, 0, ExportChapter(
            title=one_line(chapter.display_title),
            text="" if withheld else xml_safe(chapter.text),
            sponsor=one_line(placement.sponsor),
            withheld=withheld,
        )


VISIBLE_TO_READER = tuple(
    status for status in ReviewStatus.values if GenerationOption(review_status=status).visible_to_requester
)


def _reader_chapters(story: Story, reader: AbstractBaseUser) -> Iterator[tuple[int, int, ExportChapter]]:
    """(number, -1, chapter) for the personalised chapters `reader` was served: their own succeeded
    requests' options that the request page shows them (plain, or approved by the brand)."""
    rows = (
        GenerationOption.objects.filter(
            request__story=story,
            request__requested_by=reader,
            request__kind=GenerationRequest.Kind.READER,
            request__status=GenerationRequest.Status.SUCCEEDED,
            review_status__in=VISIBLE_TO_READER,
        )
        .exclude(text="")
        .order_by("request__next_number", "request__created_at", "request_id", "index")
        .values_list("request__next_number", "request__n", "index", "text", "review_status", "brand__name")
    )
    for number, n, index, text, status, brand in rows.iterator(chunk_size=CHUNK):
        title = f"Chapter {number} — your chapter" + (f" (option {index + 1})" if n > 1 else "")
        sponsor = one_line(brand) if status == ReviewStatus.APPROVED and brand else ""
        # A personalised chapter "N" continues from chapter N - 1: it comes before the story's chapter N.
        yield number, -1, ExportChapter(title=title, text=xml_safe(text), sponsor=sponsor)


def export_chapters(story: Story, reader: AbstractBaseUser | None = None) -> Iterator[ExportChapter]:
    """The chapters of the export in reading order (see the module's docstring), streamed."""
    if reader is None:
        for _, _, chapter in _story_chapters(story, for_reader=False):
            yield chapter
        return
    is_owner = story.owner_id == reader.pk
    insider = is_owner or reader.is_staff
    minor = not insider and bool(reader_placement_block(reader=reader))
    story_rows = _story_chapters(story, for_reader=not insider, minor=minor)
    merged = heapq.merge(story_rows, _reader_chapters(story, reader), key=lambda row: (row[0], row[1]))
    for _, _, chapter in merged:
        yield chapter


# --- Markdown -----------------------------------------------------------------------------------------


def _write_markdown(out: IO[bytes], page: TitlePage, chapters: Iterable[ExportChapter]) -> int:
    def w(text: str) -> None:
        out.write(text.encode("utf-8"))

    w(f"# {_md_text(page.title)}\n\n")
    if page.copy_for:
        w(f"*A personalised copy for {_md_text(page.copy_for)}*\n\n")
    if page.details:
        w(f"{_md_text(page.details)}\n\n")
    if page.summary:
        w(f"{_md_text(page.summary)}\n\n")
    if page.sections:
        w(f"## {CHAPTER_ZERO}\n\n")
        for name, text in page.sections:
            w(f"### {name}\n\n{_md_text(text)}\n\n")
    count = 0
    for chapter in chapters:
        count += 1
        w(f"---\n\n## {_md_text(chapter.title)}\n\n")
        if chapter.disclosure:
            w(f"> {_md_text(chapter.disclosure)}\n\n")
        body = WITHHELD_NOTICE if chapter.withheld else chapter.text.strip()
        if body:
            w(f"{_md_text(body)}\n\n")
    return count


# --- EPUB ---------------------------------------------------------------------------------------------

EPUB_CSS = b"""body { font-family: serif; line-height: 1.5; }
h1 { text-align: center; }
p.disclosure { font-size: 0.85em; font-style: italic; border: 1px solid #999; padding: 0.2em 0.5em; }
p.details, p.copy-for { text-align: center; }
p.notice { font-style: italic; }
"""


def _xhtml_fragment(text: str) -> str:
    """Chapter markdown as XHTML: the chapter page's renderer and sanitiser, then made well-formed XML."""
    from lxml import etree
    from lxml import html as lxml_html

    rendered = render_markdown(text).strip()
    if not rendered:
        return ""
    root = lxml_html.fragment_fromstring(rendered, create_parent="div")
    parts = [escape(root.text, quote=False)] if root.text else []
    parts += [etree.tostring(child, method="xml", encoding="unicode") for child in root]
    return "".join(parts)


def _xhtml_document(title: str, body: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE html>\n'
        '<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops" '
        'lang="en" xml:lang="en">\n'
        f'<head><title>{escape(title)}</title><link rel="stylesheet" type="text/css" href="style.css"/></head>\n'
        f"<body>\n{body}\n</body>\n</html>\n"
    ).encode()


def _paragraphs_html(text: str) -> str:
    return "".join(f"<p>{escape(p)}</p>" for p in re.split(r"\n\s*\n", text) if p.strip()).replace("\n", "<br/>")


def _title_page_xhtml(page: TitlePage) -> bytes:
    body = [f'<section epub:type="titlepage"><h1>{escape(page.title)}</h1>']
    if page.copy_for:
        body.append(f'<p class="copy-for"><em>A personalised copy for {escape(page.copy_for)}</em></p>')
    if page.details:
        body.append(f'<p class="details">{escape(page.details)}</p>')
    if page.summary:
        body.append(_paragraphs_html(page.summary))
    if page.sections:
        body.append(f"<h2>{escape(CHAPTER_ZERO)}</h2>")
        for name, text in page.sections:
            body.append(f"<h3>{escape(name)}</h3>{_paragraphs_html(text)}")
    body.append("</section>")
    return _xhtml_document(page.title, "\n".join(body))


def _chapter_xhtml(chapter: ExportChapter) -> bytes:
    body = [f'<section epub:type="chapter"><h1>{escape(chapter.title)}</h1>']
    if chapter.disclosure:
        body.append(f'<p class="disclosure">{escape(chapter.disclosure)}</p>')
    if chapter.withheld:
        body.append(f'<p class="notice">{escape(WITHHELD_NOTICE)}</p>')
    else:
        body.append(_xhtml_fragment(chapter.text))
    body.append("</section>")
    return _xhtml_document(chapter.title, "\n".join(body))


def _spooled_epub_chapter_class():  # noqa: ANN202
    from ebooklib import epub

    class SpooledChapter(epub.EpubHtml):
        """A chapter whose XHTML lies in the spool file until ebooklib writes it into the zip."""

        def __init__(self, *, spool: IO[bytes], offset: int, length: int, **kwargs: object) -> None:
            super().__init__(media_type="application/xhtml+xml", **kwargs)
            self._spool, self._offset, self._length = spool, offset, length
            # Nothing to hold per chapter: its XHTML has its own head (shared empties, not four lists).
            self.metas = self.links = self.properties = self.pages = ()

        def get_content(self, default: bytes | None = None) -> bytes:
            self._spool.seek(self._offset)
            return self._spool.read(self._length)

    return SpooledChapter


def _write_epub(out: IO[bytes], page: TitlePage, chapters: Iterable[ExportChapter], identifier: str) -> int:
    from ebooklib import epub

    spooled = _spooled_epub_chapter_class()
    book = epub.EpubBook()
    book.set_identifier(identifier)
    book.set_title(page.title)
    book.set_language("en")
    if page.byline:
        book.add_author(page.byline)
    if page.summary:
        book.add_metadata("DC", "description", page.summary)
    book.add_item(epub.EpubItem(uid="style", file_name="style.css", media_type="text/css", content=EPUB_CSS))

    with tempfile.TemporaryFile() as spool:

        def add(uid: str, file_name: str, title: str, content: bytes) -> epub.EpubHtml:
            offset = spool.seek(0, os.SEEK_END)
            spool.write(content)
            # Its XHTML links the style sheet itself (EpubHtml.add_item would keep a link per chapter).
            item = spooled(spool=spool, offset=offset, length=len(content), uid=uid, file_name=file_name, title=title)
            return book.add_item(item)

        cover = add("chapter-0", "chapter-0000.xhtml", page.title, _title_page_xhtml(page))
        items = [cover]
        for count, chapter in enumerate(chapters, start=1):
            items.append(add(f"chapter-{count}", f"chapter-{count:04d}.xhtml", chapter.title, _chapter_xhtml(chapter)))
        book.toc = items
        book.add_item(epub.EpubNcx())
        book.add_item(epub.EpubNav())
        book.spine = [cover, "nav", *items[1:]]
        # No page list: it would parse every chapter again (and the book has no print page numbers).
        writer = epub.EpubWriter(out, book, {"raise_exceptions": True, "epub3_pages": False})
        writer.process()
        writer.write()
    return len(items) - 1


# --- DOCX ---------------------------------------------------------------------------------------------

_XMLNS = re.compile(rb'\s+xmlns:\w+="[^"]*"')
_DOCX_STYLES = ("Title", "Quote", *(f"Heading {level}" for level in range(1, 10)))


class _Docx:
    """A python-docx document and the two shortcuts that make 2,000 chapters quick: styles set by id
    (python-docx looks a style name up among all the styles on every paragraph) and plain text added as
    one `<w:t>` (`add_run(text)` walks the text a character at a time, for tabs and line breaks)."""

    def __init__(self) -> None:
        import docx

        self.document = docx.Document()
        self.style_ids = {name: self.document.styles[name].style_id for name in _DOCX_STYLES}

    def paragraph(self, style: str | None = None):  # noqa: ANN201
        paragraph = self.document.add_paragraph()
        if style:
            paragraph._p.style = self.style_ids[style]
        return paragraph

    @staticmethod
    def run(paragraph, text: str = "", *, bold: bool = False, italic: bool = False, strike: bool = False):  # noqa: ANN001, ANN205
        if any(c in text for c in "\t\r\n"):
            run = paragraph.add_run(text)
        else:
            run = paragraph.add_run()
            if text:
                run._r.add_t(text)
        if bold:
            run.bold = True
        if italic:
            run.italic = True
        if strike:
            run.font.strike = True
        return run

    def text_paragraphs(self, text: str, style: str | None = None) -> None:
        for part in re.split(r"\n\s*\n", text):
            if part.strip():
                self.run(self.paragraph(style), part.strip())


_HEADINGS = {f"h{level}": f"Heading {min(level + 1, 9)}" for level in range(1, 7)}  # chapter titles are Heading 1
_INLINE_STYLE = {"strong": "bold", "b": "bold", "em": "italic", "i": "italic", "s": "strike"}


def _docx_inline(doc: _Docx, paragraph, element, **style: bool) -> None:  # noqa: ANN001
    """An element's text and inline children as runs: bold, italic and struck-through as the page shows
    them; <br> as a line break (the newline after it is the renderer's, not the author's)."""

    def text(value: str | None, after_break: bool = False) -> None:
        if value:
            value = value.lstrip("\n") if after_break else value
            if value:
                doc.run(paragraph, value.replace("\n", " "), **style)

    text(element.text)
    for child in element:
        if not isinstance(child.tag, str):  # a comment (nh3 strips them; never mind)
            text(child.tail)
            continue
        if child.tag == "br":
            paragraph.add_run().add_break()
        else:
            flag = _INLINE_STYLE.get(child.tag)
            _docx_inline(doc, paragraph, child, **({**style, flag: True} if flag else style))
        text(child.tail, after_break=child.tag == "br")


def _docx_html(doc: _Docx, text: str) -> None:
    """Chapter markdown as paragraphs: rendered and sanitised as the chapter page renders it
    (`render_markdown`), then paragraphs, headings, quotes, scene breaks and inline styles as Word's."""
    from docx.enum.text import WD_ALIGN_PARAGRAPH
    from lxml import html as lxml_html

    rendered = render_markdown(text).strip()
    if not rendered:
        return

    def blocks(parent, quote: bool) -> None:  # noqa: ANN001
        if parent.text and parent.text.strip():
            doc.run(doc.paragraph("Quote" if quote else None), parent.text.strip())
        for element in parent:
            tag = element.tag if isinstance(element.tag, str) else ""
            if tag == "blockquote":
                blocks(element, True)
            elif tag == "hr":
                paragraph = doc.paragraph()
                doc.run(paragraph, "* * *")
                paragraph.alignment = WD_ALIGN_PARAGRAPH.CENTER
            elif tag:
                style = _HEADINGS.get(tag) or ("Quote" if quote else None)
                _docx_inline(doc, doc.paragraph(style), element)
            if element.tail and element.tail.strip():
                doc.run(doc.paragraph("Quote" if quote else None), element.tail.strip())

    blocks(lxml_html.fragment_fromstring(rendered, create_parent="div"), False)


def _docx_title_page(doc: _Docx, page: TitlePage) -> None:
    from docx.enum.text import WD_ALIGN_PARAGRAPH

    doc.document.core_properties.title = page.title[:255]
    doc.document.core_properties.author = page.byline[:255]
    doc.run(doc.paragraph("Title"), page.title)
    if page.copy_for:
        doc.run(doc.paragraph(), f"A personalised copy for {page.copy_for}", italic=True)
    if page.details:
        paragraph = doc.paragraph()
        doc.run(paragraph, page.details)
        paragraph.alignment = WD_ALIGN_PARAGRAPH.CENTER
    doc.text_paragraphs(page.summary)
    if page.sections:
        doc.run(doc.paragraph("Heading 2"), CHAPTER_ZERO)
        for name, text in page.sections:
            doc.run(doc.paragraph("Heading 3"), name)
            doc.text_paragraphs(text)


def _docx_chapter(doc: _Docx, chapter: ExportChapter) -> None:
    heading = doc.paragraph("Heading 1")
    doc.run(heading, chapter.title)
    heading.paragraph_format.page_break_before = True
    if chapter.disclosure:
        doc.run(doc.paragraph(), chapter.disclosure, italic=True)
    if chapter.withheld:
        doc.run(doc.paragraph(), WITHHELD_NOTICE, italic=True)
    else:
        _docx_html(doc, chapter.text)


def _write_docx(out: IO[bytes], page: TitlePage, chapters: Iterable[ExportChapter]) -> int:
    doc = _Docx()
    _docx_title_page(doc, page)
    body = doc.document.element.body
    kept = len(body)  # the title page and the section properties stay; chapters leave as they are made
    count = 0
    with tempfile.TemporaryFile() as spool, tempfile.TemporaryFile() as saved:
        for chapter in chapters:
            count += 1
            _docx_chapter(doc, chapter)
            # python-docx adds before the closing sectPr: the new paragraphs are body[kept - 1:-1].
            for element in list(body)[kept - 1 : -1]:
                spool.write(_element_xml(element))
                body.remove(element)
        doc.document.save(saved)
        saved.seek(0)
        with zipfile.ZipFile(saved) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
            for info in source.infolist():
                data = source.read(info.filename)
                if info.filename != "word/document.xml":
                    target.writestr(info, data)
                    continue
                cut = data.rfind(b"<w:sectPr")  # the body's own section properties close the body
                if cut < 0:
                    raise ApplicationError("The DOCX template has no section properties.")
                entry = zipfile.ZipInfo(info.filename, date_time=info.date_time)
                entry.compress_type = zipfile.ZIP_DEFLATED
                with target.open(entry, "w", force_zip64=True) as w:
                    w.write(data[:cut])
                    spool.seek(0)
                    shutil.copyfileobj(spool, w, 1 << 16)
                    w.write(data[cut:])
    return count


def _element_xml(element) -> bytes:  # noqa: ANN001
    """One body element as XML, without the namespace declarations the document's root already makes."""
    from lxml import etree

    xml = etree.tostring(element, encoding="utf-8")
    end = xml.index(b">")
    return _XMLNS.sub(b"", xml[:end]) + xml[end:]


# --- The service --------------------------------------------------------------------------------------


def story_export(
    *, story: Story, fmt: str | ExportFormat, out: IO[bytes], reader: AbstractBaseUser | None = None
) -> ExportResult:
    """Write `story` (the author's export; `reader` None) or `reader`'s personalised copy of it to `out`, a
    binary file open for writing (and seeking, for EPUB and DOCX). The caller checks that the user may
    export it (`story_get_for_author_export`, `story_get_for_copy_export`)."""
    export = fmt if isinstance(fmt, ExportFormat) else export_format(fmt)
    page = title_page(story, reader)
    chapters = export_chapters(story, reader)
    if export.name == "md":
        count = _write_markdown(out, page, chapters)
    elif export.name == "epub":
        identifier = f"mesu-story-{story.pk}" + (f"-reader-{reader.pk}" if reader is not None else "")
        count = _write_epub(out, page, chapters, identifier)
    else:
        count = _write_docx(out, page, chapters)
    suffix = f"-copy-{slug_of(reader.get_username(), max_length=40) or reader.pk}" if reader is not None else ""
    return ExportResult(
        story=story, format=export, chapters=count, filename=safe_filename(story.title, export.extension, suffix=suffix)
    )


def story_export_to_path(
    *, story: Story, fmt: str | ExportFormat, path: str | os.PathLike, reader: AbstractBaseUser | None = None
) -> tuple[ExportResult, Path]:
    """`story_export` into the file `path`, written whole or not at all (a temporary file beside it,
    renamed when complete). ApplicationError when it cannot be written there."""
    export = fmt if isinstance(fmt, ExportFormat) else export_format(fmt)
    target = Path(path).expanduser().absolute()
    if target.is_dir():
        raise ApplicationError(f"Cannot write {target}: it is a directory.")
    if not target.parent.is_dir():
        raise ApplicationError(f"Cannot write {target}: the directory {target.parent} does not exist.")
    try:
        handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False)
    except OSError as exc:
        raise ApplicationError(f"Cannot write {target}: {exc.strerror or exc}.") from None
    try:
        with handle:
            result = story_export(story=story, fmt=export, out=handle, reader=reader)
        os.chmod(handle.name, 0o644)
        os.replace(handle.name, target)
    except OSError as exc:
        Path(handle.name).unlink(missing_ok=True)
        raise ApplicationError(f"Cannot write {target}: {exc.strerror or exc}.") from None
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return result, target
