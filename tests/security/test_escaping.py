"""Everything users, brands and models write is shown escaped, on every page that shows it.

The payloads: a script tag, an attribute break-out with an onerror handler, and javascript: links (in
markdown and as raw HTML). They go into story metadata, chapters, a reader's wish, model output (text,
reasoning, warnings, errors), brand and asset fields, review reasons, and the training rows and books.
Chapters and options render as markdown through nh3: emphasis renders, raw HTML never does.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from brands import services as brand_services
from brands.models import Brand, BrandAsset
from brands.placements import find_mentions, highlight, mention_spans
from tests.factories import ChapterFactory, StoryFactory, approved_brand
from training import services as training_services
from training.models import EvaluationRun, TrainingJob, WriterAdapter
from writer.models import GenerationOption, GenerationRequest, ReviewStatus
from writer.templatetags.prose import ALLOWED_TAGS, render_markdown

SCRIPT = "<script>alert(1)</script>"
BREAKOUT = '"><img src=x onerror=alert(1)>'
JS_LINKS = '[click me](javascript:alert(1)) <a href="javascript:alert(2)">or me</a> <javascript:alert(3)>'
EVIL = f"{SCRIPT} {BREAKOUT} {JS_LINKS}"
SHORT_EVIL = f"{SCRIPT}{BREAKOUT}"  # for fields of 64-120 characters
ESCAPED_SCRIPT = "&lt;script&gt;alert(1)&lt;/script&gt;"

class _LiveMarkup(HTMLParser):
    """What the browser would run: script elements with the payload, img tags, event-handler attributes
    with the payload, javascript: URLs. Parsed, so escaped text that merely looks like them is not."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_script = tag == "script"
        if tag in ("img", "iframe", "object", "embed"):  # the app draws its charts as inline <svg>
            self.found.append(f"<{tag}> {attrs}")
        for name, value in attrs:
            value = (value or "").strip().lower()
            if name.startswith("on") and "alert" in value:
                self.found.append(f"<{tag} {name}={value!r}>")
            if name in ("href", "src", "action", "formaction") and value.replace(" ", "").startswith("javascript:"):
                self.found.append(f"<{tag} {name}={value!r}>")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and "alert" in data:
            self.found.append(f"<script>{data[:80]}")


def assert_safe(page: str, where: str) -> None:
    parser = _LiveMarkup()
    parser.feed(page)
    parser.close()
    assert not parser.found, f"{where}: live markup from the payloads: {parser.found}"


@pytest.fixture
def evil(users, settings, tmp_path):
    settings.TRAINING_BOOKS_DIR = tmp_path / "books"
    alice, rita, mia = users["alice"], users["rita"], users["mia"]
    story = StoryFactory(
        owner=alice, slug="evil-story", title=EVIL[:200], author_name=SHORT_EVIL, summary=EVIL, genre=SHORT_EVIL[:80],
        tags=[SCRIPT, "javascript:alert(1)"], characters=EVIL, setting=EVIL, intent_notes=EVIL, is_published=True,
    )
    ChapterFactory(story=story, number=1, title=SHORT_EVIL, text=f"*Soft* rain. {EVIL}")
    brand = approved_brand(name="Tidewave", managers=[mia], description="Surfboards.")
    Brand.objects.filter(pk=brand.pk).update(
        name=SHORT_EVIL, description=EVIL, tone_of_voice=EVIL, target_audience=EVIL, banned_themes=[SCRIPT]
    )
    asset = brand_services.asset_create(brand=brand, kind="product", name="Board", terms="Tidewave")
    BrandAsset.objects.filter(pk=asset.pk).update(name=SHORT_EVIL, description=EVIL, terms=["Tidewave", SCRIPT])
    asset.refresh_from_db()
    brand.refresh_from_db()

    def request(user, kind, **fields):  # noqa: ANN001, ANN003, ANN202
        return GenerationRequest.objects.create(
            story=story, requested_by=user, kind=kind, engine="vllm", max_new_tokens=24, next_number=2, n=3,
            status=GenerationRequest.Status.SUCCEEDED, model_name=SCRIPT, brand_note=EVIL,
            prompt_report={"summary": EVIL}, **fields,
        )

    def option(gen, index, text, branded=False, **fields):  # noqa: ANN001, ANN003, ANN202
        mentions = mention_spans(find_mentions(text, asset.terms)) if branded else []
        return GenerationOption.objects.create(
            request=gen, index=index, text=text, reasoning=EVIL, format_ok=False, warning=EVIL[:300],
            brand=brand if branded else None, asset=asset if branded else None, mentions=mentions,
            placement_found=bool(mentions), placement_hint=SHORT_EVIL,
            review_status=ReviewStatus.PENDING if branded else ReviewStatus.NONE, **fields,
        )

    gen = request(alice, GenerationRequest.Kind.AUTHOR)
    option(gen, 0, f"**Bold** move. {EVIL}")
    pending = option(gen, 1, f"Lou waxed her Tidewave board. {EVIL}", branded=True)
    rejected = option(gen, 2, f"Pip rode the Tidewave. {EVIL}", branded=True)
    brand_services.option_reject(option=rejected, reviewer=mia, reason=EVIL)  # a notification and a decision
    reader_gen = request(rita, GenerationRequest.Kind.READER, preference=EVIL)
    option(reader_gen, 0, f"_Gentle_ and sad. {EVIL}")
    failed = request(alice, GenerationRequest.Kind.AUTHOR, error=EVIL)
    GenerationRequest.objects.filter(pk=failed.pk).update(status=GenerationRequest.Status.FAILED, stage=EVIL)

    job = TrainingJob.objects.create(
        name=EVIL[:120], dataset_dir=EVIL, out_dir=EVIL, config={"note": EVIL}, max_steps=2, step=1,
        status=TrainingJob.Status.FAILED, error=EVIL,
        step_logs=[{"step": 1, "reward": 0.2, "rewards": {SCRIPT: 0.2}, "loss": 0.1}],
    )
    adapter = WriterAdapter.objects.create(name=SHORT_EVIL[:64], base_model=EVIL, path=EVIL, load_error=EVIL)
    evaluation = EvaluationRun.objects.create(
        adapter=adapter, target_name=SHORT_EVIL[:64], dataset_dir=EVIL, engine="vllm", max_new_tokens=16,
        status=EvaluationRun.Status.FAILED, error=EVIL, metrics={"bleu": 0.1}, format_ok=0.5, done=1, total=1,
        samples=[{"book": EVIL, "k": 1, "format_ok": False, "scores": {"bleu": 0.1}, "excerpt": EVIL}],
    )
    book = (f"# Rain {SCRIPT} {BREAKOUT}\n\nAuthor: {BREAKOUT}\n\n## Chapter 1\n\n{EVIL}\n\n## Chapter 2\n\n{EVIL}\n").encode()
    training_services.book_import(data=book, filename="evil.md", author=SHORT_EVIL, version=SCRIPT)
    return SimpleNamespace(
        story=story, brand=brand, asset=asset, gen=gen, reader_gen=reader_gen, failed=failed,
        pending=pending, job=job, evaluation=evaluation,
    )


def _pages(e: SimpleNamespace) -> list[tuple[str, str]]:
    s = e.story.slug
    return [
        ("anon", reverse("writer:home")),
        ("anon", reverse("writer:story_detail", args=[s])),
        ("anon", reverse("writer:chapter_detail", args=[s, 1])),
        ("alice", reverse("writer:home")),
        ("alice", reverse("writer:story_detail", args=[s])),
        ("alice", reverse("writer:story_edit", args=[s])),
        ("alice", reverse("writer:chapter_detail", args=[s, 1])),
        ("alice", reverse("writer:chapter_edit", args=[s, 1])),
        ("alice", reverse("writer:request_detail", args=[e.gen.pk])),
        ("alice", reverse("writer:request_progress", args=[e.gen.pk])),
        ("alice", reverse("writer:request_detail", args=[e.reader_gen.pk])),
        ("alice", reverse("writer:request_detail", args=[e.failed.pk])),
        ("alice", reverse("notifications:list")),
        ("alice", reverse("brands:story_settings", args=[s])),
        ("rita", reverse("writer:story_detail", args=[s])),
        ("rita", reverse("writer:request_detail", args=[e.reader_gen.pk])),
        ("mia", reverse("brands:brand_list")),
        ("mia", reverse("brands:brand_detail", args=[e.brand.slug])),
        ("mia", reverse("brands:brand_edit", args=[e.brand.slug])),
        ("mia", reverse("brands:asset_edit", args=[e.brand.slug, e.asset.pk])),
        ("mia", reverse("brands:brand_dashboard", args=[e.brand.slug])),
        ("mia", reverse("brands:review_queue")),
        ("mia", reverse("brands:review_detail", args=[e.pending.pk])),
        ("root", reverse("training:job_list")),
        ("root", reverse("training:job_detail", args=[e.job.pk])),
        ("root", reverse("training:job_progress", args=[e.job.pk])),
        ("root", reverse("training:adapter_list")),
        ("root", reverse("training:leaderboard")),
        ("root", reverse("training:evaluation_detail", args=[e.evaluation.pk])),
        ("root", reverse("training:evaluation_progress", args=[e.evaluation.pk])),
        ("root", reverse("training:book_list")),
    ]


def test_every_page_shows_the_payloads_escaped(evil, users):
    for role, url in _pages(evil):
        client = Client()
        if role != "anon":
            client.force_login(users[role])
        response = client.get(url)
        assert response.status_code in (200, 286), (role, url, response.status_code)
        page = response.content.decode()
        assert ESCAPED_SCRIPT in page, f"{url} as {role} does not show the payload at all"
        assert_safe(page, f"{url} as {role}")


def test_the_chapter_renders_markdown_but_never_raw_html(evil, users):
    page = Client().get(reverse("writer:chapter_detail", args=[evil.story.slug, 1])).content.decode()
    assert "<em>Soft</em> rain." in page
    # Raw HTML shows as the text that was typed (nh3 leaves quotes literal in text, where they are inert).
    assert f'{ESCAPED_SCRIPT} "&gt;&lt;img src=x onerror=alert(1)&gt;' in page
    assert "[click me](javascript:alert(1))" in page  # a javascript: link stays text
    assert '&lt;a href="javascript:alert(2)"&gt;or me&lt;/a&gt; &lt;javascript:alert(3)&gt;' in page


def test_options_render_markdown_for_the_author_and_the_reader(evil, users):
    for role, gen in (("alice", evil.gen), ("rita", evil.reader_gen)):
        client = Client()
        client.force_login(users[role])
        page = client.get(reverse("writer:request_detail", args=[gen.pk])).content.decode()
        assert ("<strong>Bold</strong> move." if role == "alice" else "<em>Gentle</em> and sad.") in page
        assert_safe(page, role)


def test_the_review_page_marks_mentions_and_escapes_around_them(evil, users):
    client = Client()
    client.force_login(users["mia"])
    page = client.get(reverse("brands:review_detail", args=[evil.pending.pk])).content.decode()
    assert '<mark class="placement">Tidewave</mark>' in page
    assert f'<mark class="placement">{ESCAPED_SCRIPT}</mark>' in page  # an evil term, marked and escaped
    assert_safe(page, "review page")


# --- The two renderers, on any input ------------------------------------------------------------------

TAG = re.compile(r"<\s*(/?)\s*([a-zA-Z][a-zA-Z0-9]*)([^>]*)>")
PROPERTY = hsettings(max_examples=150, derandomize=True, database=None, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])
# Text with the characters that matter to HTML and markdown, plus anything else.
html_ish = st.text(
    alphabet=st.one_of(st.sampled_from(list("<>&\"'=/:*_`[]()!#-~ \n")), st.characters(codec="utf-8")),
    max_size=200,
) | st.lists(
    st.sampled_from([SCRIPT, BREAKOUT, "javascript:", "[x](javascript:alert(1))", "<a href='x'>", "*a*", "**b**",
                     "\n\n", "* * *", "<!--", "&lt;", "&#106;avascript:", "![i](http://e/x.png)", "<svg onload=x>"]),
    max_size=8,
).map("".join)


@PROPERTY
@given(text=html_ish, data=st.data())
def test_highlight_escapes_everything_but_its_marks(text, data):
    cuts = sorted(data.draw(st.sets(st.integers(0, len(text)), max_size=6)))
    spans = [(a, b) for a, b in zip(cuts[::2], cuts[1::2], strict=False) if a < b]
    out = highlight(text, spans)
    assert out.count('<mark class="placement">') == len(spans) == out.count("</mark>")
    bare = out.replace('<mark class="placement">', "").replace("</mark>", "")
    assert "<" not in bare and ">" not in bare and '"' not in bare
    assert html.unescape(bare) == text


@PROPERTY
@given(text=html_ish)
def test_markdown_output_keeps_to_the_allow_list(text):
    out = render_markdown(text)
    for closing, tag, attrs in TAG.findall(out):
        assert tag.lower() in ALLOWED_TAGS, (text, out)
        if tag.lower() == "a" and not closing:
            assert re.fullmatch(r'(\s+(href="(https?:|mailto:)[^"]*"|title="[^"]*"|rel="noopener noreferrer nofollow"))*\s*',
                                attrs), (text, out)
        elif not closing:
            assert attrs.strip() in ("", "/"), (text, out)
    assert_safe(out, repr(text))


def test_markdown_keeps_prose_as_prose():
    out = render_markdown("She left.\n---\nMorning came.\n\n    An indented paragraph.\n\n- Hi, she said.\n\n~~~\n")
    assert "<h2>" not in out and "<code>" not in out and "<ul>" not in out and "<pre>" not in out
    assert "<hr>" in out and "An indented paragraph." in out and "- Hi, she said." in out
    assert render_markdown("*a* **b** ~~c~~") == "<p><em>a</em> <strong>b</strong> <s>c</s></p>\n"
    assert render_markdown("[site](https://example.org)") == (
        '<p><a href="https://example.org" rel="noopener noreferrer nofollow">site</a></p>\n'
    )


@pytest.mark.parametrize(
    "live",
    [f"<p>{SCRIPT}</p>", '<img src=x onerror="alert(1)">', '<a href=" javascript:alert(1)">x</a>',
     '<div onmouseover="alert(1)">x</div>', '<iframe src="https://evil.example"></iframe>'],
)
def test_the_checker_catches_live_markup(live):
    with pytest.raises(AssertionError):
        assert_safe(f"<html><body>{live}</body></html>", "sample")
    assert_safe(f"<p>{html.escape(live)}</p>", "escaped sample")
