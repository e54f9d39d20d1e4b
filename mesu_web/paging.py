"""The one way a page of a list is read from a query string's page number.

The rule, everywhere (keyset or offset, page or API): a page number is clamped, never refused with a
500. Anything that is not a plain positive integer of ASCII digits (``""``, ``"abc"``, ``"-1"``, ``"0"``,
``"1.5"``, ``"1e9"``, ``"%00"``, ``"１２"``) is page 1; a number past the last page is the last page. A
number is cut to `MAX_PAGE` before it reaches SQL, so an OFFSET can never leave PostgreSQL's bigint
(``?page=99999999999999999999`` was a 500: ``bigint out of range``) and the last page is found by one
COUNT. Django's own `Paginator.get_page` differs on one point (a page below 1 is the *last* page there):
call `page_get` instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from django.core.paginator import Page, Paginator

# Past any list this app shows (1,000,000 pages x 50 rows = 50 million rows); small enough that
# (MAX_PAGE - 1) x per_page stays far inside a bigint OFFSET for any page size below 10**12.
MAX_PAGE = 1_000_000
_DIGITS = re.compile(r"[0-9]{1,20}")  # ASCII only: int() would also take "１２", " 7 ", "1_0"


def page_number(raw: object) -> int:
    """The page a query string asks for, from 1 to `MAX_PAGE` (see the module's rule); no list needed."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        number = raw
    elif isinstance(raw, str) and _DIGITS.fullmatch(raw):
        number = int(raw)
    elif isinstance(raw, str) and raw.isascii() and raw.isdigit():  # over 20 digits: past any list
        number = MAX_PAGE
    else:
        return 1
    return min(max(number, 1), MAX_PAGE)


def page_get(object_list: Sequence | object, *, number: object, per_page: int, count: int | None = None) -> Page:
    """A page of `object_list` (a query set or a sequence), the number clamped by the module's rule.

    `count`: the list's length where the caller already has it (read with the row), so no COUNT runs."""
    paginator = Paginator(object_list, per_page)
    if count is not None:
        paginator.count = count  # Paginator's cached property, set: no COUNT query of its own
    return paginator.page(min(page_number(number), paginator.num_pages))


def page_from_window(
    *,
    number: object,
    per_page: int,
    rows: Callable[[int, int], tuple[list, int]],
    count: Callable[[], int],
) -> Page:
    """A page of a list read with its length in one query: `rows(start, stop)` gives the slice's rows and
    the whole list's length (a window count; 0 when the slice is empty). Past the end (no rows on a page
    after the first), `count()` gives the length once and the last page is read instead."""
    number = page_number(number)
    found, total = rows((number - 1) * per_page, number * per_page)
    if not found and number > 1:
        paginator = Paginator((), per_page)
        paginator.count = count()
        number = paginator.num_pages
        found, total = rows((number - 1) * per_page, number * per_page)
    paginator = Paginator((), per_page)
    paginator.count = total
    return Page(found, number, paginator)
