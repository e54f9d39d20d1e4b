"""Turn uploaded bytes and pasted text into clean chapter text.

Pure text, no Django: the training pipeline cleans its corpus with the same `clean_text`.

Decoding policy (`decode_text_file`):
1. A byte-order mark decides: UTF-8 (BOM dropped), UTF-16 LE/BE, UTF-32 LE/BE.
2. UTF-16 without a BOM is recognised by its NUL pattern (plain-English UTF-16 has a NUL in every
   other byte); anything else with NUL bytes, a known binary signature (PNG, PDF, ZIP/DOCX, ...)
   or more than 2% control bytes is rejected as "looks like a binary file, not text".
3. UTF-8 is tried strictly.
4. Windows-1252 is accepted only when the text looks like Western European text that was saved
   in it (old Notepad/Word "ANSI" exports, which are common among fan-fiction archives): it decodes
   strictly, every non-ASCII character is a Latin letter or common typographic punctuation, and
   non-ASCII bytes are at most a quarter of the file. cp1252 is a superset of Latin-1's printable
   range, so Latin-1 files take this path too. Anything else (Shift-JIS, GBK, KOI8-R, a broken
   UTF-8 file) gets a clear error naming the first bad byte instead of silent mojibake.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from pathlib import PurePath

from mesu_web.errors import ApplicationError

ALLOWED_EXTENSIONS = (".txt", ".md", ".markdown")

# Binary formats people rename to .txt (or export by mistake), by their first bytes. Only
# signatures no real text starts with: "MZ", "RIFF" or "Rar!" could open a story, so they are out.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive or a Word/EPUB document"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"{\\rtf", "an RTF document"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Word/Office document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"\x7fELF", "a program"),
)
# Control bytes that plain text does contain: tab, newline, carriage return, form feed, escape.
_TEXT_CONTROLS = frozenset(b"\t\n\r\x0c\x1b")
_MAX_CONTROL_SHARE = 0.02
_MAX_NON_ASCII_SHARE_CP1252 = 0.25
# Non-letter characters that Windows-1252 text legitimately uses.
_CP1252_PUNCTUATION = frozenset("€‚„…†‡ˆ‰‹›‘’“”•–—˜™¡¢£¤¥¦§¨©ª«¬\xad®¯°±²³´µ¶·¸¹º»¼½¾¿×÷\xa0")


def _human_size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n} bytes"


def decode_text_file(data: bytes, *, filename: str, max_bytes: int) -> str:
    """The uploaded file's text, or ApplicationError saying why it can't be used."""
    name = PurePath(filename).name or "The file"
    quoted = f"'{name}'"

    if len(data) > max_bytes:
        size, limit = _human_size(len(data)), _human_size(max_bytes)
        if size == limit:  # "5.0 MB; the limit is 5.0 MB" would read as no reason at all
            size, limit = f"{len(data):,} bytes", f"{max_bytes:,} bytes"
        raise ApplicationError(f"{quoted} is {size}; the limit is {limit}.")

    suffix = PurePath(name).suffix.lower()
    if suffix not in ALLOWED_EXTENSIONS:
        kind = f"a {suffix} file" if suffix else "a file without an extension"
        raise ApplicationError(
            f"{quoted} is {kind}; upload a .txt or .md file (save Word or PDF documents as plain text first)."
        )

    if not data:
        raise ApplicationError(f"{quoted} is empty.")

    text = _decode(data, quoted)
    if not text.strip():
        raise ApplicationError(f"{quoted} is empty.")
    return text


def _decode(data: bytes, quoted: str) -> str:
    # UTF-32 first: its little-endian BOM starts with UTF-16's.
    for bom, codec in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError as exc:
                raise ApplicationError(
                    f"{quoted} starts like {codec.upper().replace('-SIG', '')} text but is damaged "
                    f"(bad bytes at position {exc.start}); save it as UTF-8 and upload again."
                ) from exc

    bom_less = _bomless_utf16(data)
    if bom_less is not None:
        return bom_less

    _reject_binary(data, quoted)

    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        fallback = _cp1252_if_plausible(data)
        if fallback is not None:
            return fallback
        raise ApplicationError(
            f"{quoted} is not UTF-8 text (byte 0x{data[exc.start]:02x} at position {exc.start}); "
            "save it as UTF-8 and upload again.",
            {"position": exc.start},
        ) from exc


def _bomless_utf16(data: bytes) -> str | None:
    """UTF-16 text saved without a BOM, recognised by mostly-NUL odd (LE) or even (BE) bytes."""
    if len(data) < 4 or len(data) % 2:
        return None
    evens, odds = data[0::2], data[1::2]
    for codec, zeros, other in (("utf-16-le", odds, evens), ("utf-16-be", evens, odds)):
        if zeros.count(0) >= 0.9 * len(zeros) and other.count(0) == 0:
            try:
                return data.decode(codec)
            except UnicodeDecodeError:
                return None
    return None


def _reject_binary(data: bytes, quoted: str) -> None:
    for signature, kind in _SIGNATURES:
        if data.startswith(signature):
            raise ApplicationError(f"{quoted} looks like a binary file ({kind}), not text.")
    # Judge by a sample: a few hundred KB show what a file is, and this keeps big uploads cheap.
    sample = data[: 256 * 1024]
    controls = sum(1 for b in sample if (b < 0x20 and b not in _TEXT_CONTROLS) or b == 0x7F)
    if b"\x00" in sample or controls > _MAX_CONTROL_SHARE * len(sample):
        raise ApplicationError(f"{quoted} looks like a binary file, not text.")


def _cp1252_if_plausible(data: bytes) -> str | None:
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        return None  # bytes 0x81, 0x8d, 0x8f, 0x90, 0x9d are undefined in cp1252: not that either
    non_ascii = [c for c in text if ord(c) > 0x7F]
    if len(non_ascii) > _MAX_NON_ASCII_SHARE_CP1252 * len(text):
        return None  # Cyrillic/Greek/CJK legacy encodings are mostly high bytes
    for c in non_ascii:
        if c in _CP1252_PUNCTUATION:
            continue
        # Latin letters (é, ß, Œ, š, Ÿ ...) are what Western European text is made of.
        if unicodedata.category(c).startswith("L") and "LATIN" in unicodedata.name(c, ""):
            continue
        return None
    return text


# Line and paragraph separators that should simply be newlines.
_NEWLINES = re.compile(r"\r\n|[\r\x0b\x0c\x85\u2028\u2029]")
# C0/C1 controls other than tab and newline, DEL, and stray byte-order marks.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\ufeff]")
_TRAILING_SPACE = re.compile(r"[^\S\n]+$", re.MULTILINE)
# More than two blank lines (= 4+ newlines); two are kept because some authors mark scene breaks so.
_BLANK_RUN = re.compile(r"\n{4,}")


def clean_text(text: str) -> str:
    """Normalised chapter text; ApplicationError("The chapter is empty.") if nothing is left."""
    text = _NEWLINES.sub("\n", text)
    text = _CONTROL.sub("", text)
    text = _TRAILING_SPACE.sub("", text)
    text = _BLANK_RUN.sub("\n\n\n", text)
    text = text.strip()
    if not text:
        raise ApplicationError("The chapter is empty.")
    return text
