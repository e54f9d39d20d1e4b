"""The one slug helper: story and brand addresses, adapter names, book file names."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Collection


def slug_of(text: str, *, max_length: int = 60, keep_letters: bool = False) -> str:
    """Lower-case ASCII letters, digits and dashes ("The Keeper's Café" -> "the-keepers-cafe"), at most
    `max_length` characters; "" when the text has none. `keep_letters`: a text with no ASCII letter or
    digit keeps its own letters instead ("雨の街" -> "雨の街"), for file names that need not be URLs."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    ascii_text = ascii_text.replace("'", "")  # "keeper's" -> "keepers", not "keeper-s"
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if not slug and keep_letters:
        slug = re.sub(r"[\W_]+", "-", unicodedata.normalize("NFKC", text).lower()).strip("-")
    return slug[:max_length].strip("-")


def unique_slug(
    text: str,
    *,
    taken: Callable[[str], bool],
    fallback: str,
    reserved: Collection[str] = (),
    max_length: int = 60,
    separator: str = "-",
) -> str:
    """`slug_of(text)` (or `fallback` when it is empty), with "-2", "-3", ... added until `taken(slug)` is
    false and the slug is not `reserved` (paths the slug would shadow)."""
    base = slug_of(text, max_length=max_length) or fallback
    slug, suffix = base, 2
    while slug in reserved or taken(slug):
        slug = f"{base}{separator}{suffix}"
        suffix += 1
    return slug
