"""The one slug helper: story and brand addresses, adapter names, book file names."""

from __future__ import annotations

import re
import secrets
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


# The random part of a `private_slug`: lower-case letters and digits without the look-alikes (0/o, 1/l/i),
# 31 signs; 6 of them are 31**6 = 887 million suffixes, so a redraw on a taken one almost never happens.
SUFFIX_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
SUFFIX_LENGTH = 6


def private_slug(
    text: str,
    *,
    taken: Callable[[str], bool],
    fallback: str,
    max_length: int = 60,
    suffix_length: int = SUFFIX_LENGTH,
) -> str:
    """`slug_of(text)` (or `fallback`) and a random suffix, always: "secret-title-k3x9qz". For addresses of
    rows that others must not learn of (a story's draft): `unique_slug`'s "-2" after a taken slug tells
    whoever gets it that someone else holds the plain one, and a suffix added only when the slug is taken
    would tell the same by its absence. Here the slug is drawn the same way whatever exists; `taken` only
    redraws the one-in-hundreds-of-millions exact clash, so which slugs exist cannot be read off it."""
    base = slug_of(text, max_length=max_length) or fallback
    while True:
        slug = f"{base}-{''.join(secrets.choice(SUFFIX_ALPHABET) for _ in range(suffix_length))}"
        if not taken(slug):
            return slug
