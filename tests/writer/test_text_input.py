"""Uploaded files and pasted text: what is accepted, how it is decoded, and every refusal's reason."""

from __future__ import annotations

import codecs
import struct
import zlib
from pathlib import Path

import pytest

from mesu_web.errors import ApplicationError
from writer.text_input import clean_text, decode_text_file

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
MB = 1024 * 1024
LIMIT = 5 * MB
STORY = "Juno ran across the bridge.\nThe rain kept falling, café lights and all — “Static?” she said.\n"


def decode(data: bytes, filename: str = "story.txt", max_bytes: int = LIMIT) -> str:
    return decode_text_file(data, filename=filename, max_bytes=max_bytes)


def refused(data: bytes, filename: str = "story.txt", max_bytes: int = LIMIT) -> str:
    with pytest.raises(ApplicationError) as caught:
        decode(data, filename, max_bytes)
    return caught.value.message


def png_bytes() -> bytes:
    """A real 1x1 PNG."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0\xff\0\0"))
        + chunk(b"IEND", b"")
    )


# --- refusals --------------------------------------------------------------------------------------


def test_empty_file():
    assert refused(b"") == "'story.txt' is empty."
    assert refused(b" \n\r\n\t") == "'story.txt' is empty."


def test_too_big_says_the_size_and_the_limit():
    assert refused(b"a" * (20 * MB), "big.txt") == "'big.txt' is 20.0 MB; the limit is 5.0 MB."
    # Sizes that round to the same number are shown in bytes, so the reason stays visible.
    assert (
        refused(b"a" * (LIMIT + 1), "big.txt")
        == "'big.txt' is 5,242,881 bytes; the limit is 5,242,880 bytes."
    )
    assert decode(b"a" * LIMIT) == "a" * LIMIT  # the limit itself is allowed


def test_only_text_extensions():
    for name in ("story.docx", "story.pdf", "story", "story.txt.exe"):
        assert "upload a .txt or .md file" in refused(STORY.encode(), name)
    for name in ("story.txt", "STORY.TXT", "story.md", "story.markdown", "dir/story.Md"):
        assert decode(STORY.encode(), name) == STORY


def test_a_png_renamed_to_txt():
    message = refused(png_bytes(), "cover.txt")
    assert message == "'cover.txt' looks like a binary file (a PNG image), not text."


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "a PDF document"),
        (b"PK\x03\x04\x14\x00\x06\x00word/document.xml", "a ZIP archive or a Word/EPUB document"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "a JPEG image"),
    ],
)
def test_other_binaries_renamed_to_txt(data, kind):
    assert refused(data) == f"'story.txt' looks like a binary file ({kind}), not text."


def test_nul_bytes_or_control_characters_mean_binary():
    assert refused(b"Juno\x00ran" * 10).endswith("looks like a binary file, not text.")
    noisy = bytes(range(1, 32)) * 20 + b"some text"
    assert "looks like a binary file" in refused(noisy)


def test_not_utf8_and_not_western_text_names_the_byte():
    data = "Джуно бежала по мосту под дождём.".encode("koi8_r")
    message = refused(data)
    assert message.startswith(f"'story.txt' is not UTF-8 text (byte 0x{data[0]:02x} at position 0)")
    assert message.endswith("save it as UTF-8 and upload again.")
    shift_jis = "ジュノは橋を渡った。".encode("shift_jis")
    assert "is not UTF-8 text" in refused(b"Title\n" + shift_jis)


# --- decodings ------------------------------------------------------------------------------------


def test_utf8_with_and_without_bom():
    assert decode(STORY.encode("utf-8")) == STORY
    assert decode(codecs.BOM_UTF8 + STORY.encode("utf-8")) == STORY  # the BOM is not text


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_with_bom(codec):
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}.get(codec, b"")
    assert decode(bom + STORY.encode(codec)) == STORY


def test_utf16_without_bom_is_recognised():
    assert decode("Juno ran. The rain fell.\n".encode("utf-16-le")) == "Juno ran. The rain fell.\n"
    assert decode("Juno ran. The rain fell.\n".encode("utf-16-be")) == "Juno ran. The rain fell.\n"


def test_latin1_and_windows_1252_text_is_accepted():
    # Old "ANSI" exports: é is 0xe9, curly quotes and dashes are 0x93/0x94/0x97.
    latin1 = "Chapter 1\n\nMarie-Hélène ordered a café crème. Ça va?\n"
    assert decode(latin1.encode("latin-1")) == latin1
    cp1252 = "“Static?” she said — and the rain… kept falling.\n"
    assert decode(cp1252.encode("cp1252")) == cp1252


def test_broken_utf8_in_english_falls_back_to_cp1252():
    # A UTF-8 file with one stray Latin-1 byte: the clean reading is kept, nothing is lost.
    assert decode(b"The caf\xe9 on Level Four.") == "The café on Level Four."


def test_html_and_script_are_kept_as_text():
    html = '<p>Juno <b>ran</b>.</p>\n<script>alert("x")</script>\n'
    assert decode(html.encode(), "story.md") == html
    assert clean_text(html) == html.strip()


def test_the_samples_decode():
    for name in ("the_lighthouse_keepers_daughter.md", "neon_rain.txt"):
        path = SAMPLES / name
        assert decode(path.read_bytes(), name) == path.read_text(encoding="utf-8")


# --- clean_text -----------------------------------------------------------------------------------


def test_clean_text_normalises_newlines_spaces_and_controls():
    raw = (
        "\ufeff  \r\nLine one.   \r\nLine\x00 two.\t\rLine three\x07.\u2028Four\x0cFive\n\n\n\n\n\nSix\t \n\n"
    )
    assert clean_text(raw) == "Line one.\nLine two.\nLine three.\nFour\nFive\n\n\nSix"


def test_clean_text_keeps_tabs_inside_lines_and_two_blank_lines():
    assert clean_text("a\tb\n\n\nc") == "a\tb\n\n\nc"
    assert clean_text("a\n\n\n\nc") == "a\n\n\nc"


def test_clean_text_keeps_unicode_and_emoji():
    text = "Wren 🧑‍🦰 said “hi” — naïve, 東京."
    assert clean_text(text) == text


@pytest.mark.parametrize("raw", ["", "   ", "\n\n\t\r\n", "\x00\x01\ufeff \n"])
def test_clean_text_refuses_an_empty_chapter(raw):
    with pytest.raises(ApplicationError, match="^The chapter is empty.$"):
        clean_text(raw)
