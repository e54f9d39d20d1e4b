"""Chapter and option text as light markdown, safe to show to anyone.

Authors write *italics*, **bold**, ~~strike~~, scene breaks (`***`, `---`, `* * *`), headings and
quoted letters; models answer the same way. Two layers keep it safe: markdown-it-py renders with raw
HTML off (a `<script>` typed into a chapter stays visible text), then nh3 (the Ammonia sanitiser)
keeps only an allow-list of tags and http(s)/mailto links, whatever the renderer produced.
"""

from __future__ import annotations

import functools

import nh3
from django import template
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

register = template.Library()

ALLOWED_TAGS = frozenset(
    {"p", "br", "em", "strong", "s", "hr", "blockquote", "code", "a", "h1", "h2", "h3", "h4", "h5", "h6"}
)
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}}
URL_SCHEMES = frozenset({"http", "https", "mailto"})


@functools.cache
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "breaks": True, "linkify": False, "typographer": False})
    # Prose, not documentation. Off: an indented paragraph ("code") or a "~~~" scene break ("fence")
    # would turn the rest of the chapter into code; "Text\n---" would make the line above a heading
    # ("lheading"); "- Hi, she said." is dialogue, not a list; "[1]: a note" would vanish as a link
    # definition ("reference"); images would load from anywhere on every reader's screen.
    md.disable(["code", "fence", "lheading", "list", "reference", "image", "html_block", "html_inline"])
    md.enable("strikethrough")
    return md


def render_markdown(text: str) -> str:
    """`text` as sanitised HTML: markdown without raw HTML, then nh3's allow-list."""
    html = _parser().render(text or "")
    return nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


@register.filter(name="markdown", is_safe=True)
def markdown_filter(value: object) -> SafeString:
    """`{{ chapter.text|markdown }}`: the text rendered and sanitised (safe because nh3 cleaned it)."""
    return mark_safe(render_markdown("" if value is None else str(value)))  # noqa: S308
