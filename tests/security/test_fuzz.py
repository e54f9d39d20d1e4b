"""Fuzz every upload and form endpoint with arbitrary text, numbers, bytes and file names: whatever a
client sends, the answer is never a 500 (the test client re-raises a view's exception, so a crash fails
with its traceback and Hypothesis's smallest failing input).

Bounded and deterministic: `derandomize=True`, no example database, a few dozen examples an endpoint.
"""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from brands import services as brand_services
from tests.factories import approved_brand, story_with_chapters
from writer.models import GenerationOption, GenerationRequest, ReviewStatus

INT4_OVERFLOW = str(2**31)  # one past PostgreSQL's integer column: found by this file (DataError, a 500)

fuzz = settings(
    max_examples=20,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Text a form may get: anything printable or not (NUL, controls, RTL marks, emoji), plus tricky classics.
TRICKY = ["", " ", "\x00", "\r\n", "<script>alert(1)</script>", "../../etc/passwd", "%s%n", "{{ 7*7 }}",
          "-1", "0", "1e309", "NaN", "inf", "99999999999999999999999", "１２", "٣", "null", "true", "a" * 5000,
          "'; DROP TABLE writer_story; --", "\u202eRTL", "🦜" * 50]
text = st.one_of(st.text(max_size=200), st.sampled_from(TRICKY))
number = st.one_of(st.integers().map(str), st.integers(-5, 10).map(str), text)
file_name = st.one_of(
    st.tuples(st.text(max_size=40), st.sampled_from([".txt", ".md", ".markdown", ".epub", ".exe", ".pdf", ""]))
    .map("".join),
    st.sampled_from(["../../x.txt", "a/b\\c.md", "con.txt", ".txt", "x" * 300 + ".txt", "e\u0301.md"]),
)
file_bytes = st.one_of(
    st.binary(max_size=2000),
    text.map(lambda t: t.encode("utf-8", "surrogatepass")),
    text.map(lambda t: t.encode("utf-16")),
    st.sampled_from([b"\x89PNG\r\n\x1a\n", b"PK\x03\x04", b"%PDF-1.4", b"\xef\xbb\xbf# T\n\n## 1\n\nA.\n\n## 2\n\nB."]),
)


class _Upload(io.BytesIO):
    """A file with any name at all (SimpleUploadedFile refuses some before they reach the server; a
    client does not). The test client sends the name's last path part, as browsers do."""

    def __init__(self, name: str, data: bytes) -> None:
        super().__init__(data)
        self.name = name


upload = st.builds(_Upload, file_name, file_bytes)
checkbox = st.sampled_from(["", "on", "1", "0", "true", "false", "x"])


def _ok(response, url: str) -> None:  # noqa: ANN001
    assert response.status_code < 500, (url, response.status_code)


@pytest.fixture
def site(users, settings, tmp_path):  # noqa: ANN201
    """Logged-in clients and the rows the forms act on (a story, an option, brands, a dataset)."""
    settings.TRAINING_BOOKS_DIR = tmp_path / "books"
    settings.TRAINING_DATASETS_DIR = tmp_path / "datasets"
    settings.TRAINING_RUNS_DIR = tmp_path / "runs"
    settings.TRAINING_EXPORTS_DIR = tmp_path / "exports"
    settings.WRITER_ADAPTER_DIR = tmp_path / "adapters"
    settings.WRITER_BASE_URL = "http://127.0.0.1:9/v1"  # nothing listens: nothing is sent anywhere
    clients = {}
    for name in ("alice", "rita", "mia", "root"):
        clients[name] = Client()
        clients[name].force_login(users[name])
    story = story_with_chapters(owner=users["alice"], chapters=3, slug="fuzzed")
    brand = approved_brand(name="Tidewave", managers=[users["mia"]], description="Surfboards.")
    asset = brand_services.asset_create(brand=brand, kind="product", name="Board", terms="Tidewave")
    gen = GenerationRequest.objects.create(
        story=story, requested_by=users["alice"], engine="vllm", max_new_tokens=24, next_number=4, n=1,
        status=GenerationRequest.Status.SUCCEEDED,
    )
    option = GenerationOption.objects.create(request=gen, index=0, text="Lou opened the stall.", format_ok=True)
    dataset = tmp_path / "datasets" / "ds"
    dataset.mkdir(parents=True)
    row = {"prompt": [{"role": "user", "content": "Next?"}], "answer": "Then rain.", "book": "b", "k": 1}
    for split in ("train", "test"):
        (dataset / f"{split}.jsonl").write_text(json.dumps(row) + "\n")
    return SimpleNamespace(
        c=clients, story=story, brand=brand, asset=asset, gen=gen, option=option, dataset=str(dataset), users=users
    )


# --- writer ------------------------------------------------------------------------------------------


@fuzz
@given(data=st.fixed_dictionaries({"username": text, "password1": text, "password2": text, "role": text}))
def test_signup(site, data):
    _ok(Client().post(reverse("writer:signup"), data), "signup")


@fuzz
@given(data=st.fixed_dictionaries({"username": text, "password": text}))
def test_login(site, data):
    _ok(Client().post(reverse("login"), data), "login")


STORY_FIELDS = ("title", "author_name", "summary", "genre", "tags", "characters", "setting", "intent_notes")


@fuzz
@given(data=st.fixed_dictionaries({f: text for f in STORY_FIELDS}))
def test_story_create_and_edit(site, data):
    _ok(site.c["alice"].post(reverse("writer:story_create"), data), "story_create")
    _ok(site.c["alice"].post(reverse("writer:story_edit", args=[site.story.slug]), data), "story_edit")


@fuzz
@given(title=text, body=text, file=st.none() | upload)
def test_chapter_add_with_text_and_file(site, title, body, file):
    data = {"title": title, "text": body, **({"file": file} if file is not None else {})}
    _ok(site.c["alice"].post(reverse("writer:chapter_add", args=[site.story.slug]), data), "chapter_add")


@fuzz
@given(title=text, body=text, number=st.sampled_from([1, 2, 3]))
def test_chapter_edit(site, title, body, number):
    url = reverse("writer:chapter_edit", args=[site.story.slug, number])
    _ok(site.c["alice"].post(url, {"title": title, "text": body}), url)


@fuzz
@given(title=text, author=text, file=st.none() | upload)
def test_book_import(site, title, author, file):
    data = {"title": title, "author_name": author, **({"file": file} if file is not None else {})}
    _ok(site.c["alice"].post(reverse("writer:book_import"), data), "book_import")


@fuzz
@given(n=number, direction=text, publish=text)
@example(n="99999999999999999999999", direction="up", publish="1")
def test_generate_move_and_publish(site, n, direction, publish):
    slug = site.story.slug
    _ok(site.c["alice"].post(reverse("writer:generate", args=[slug]), {"n": n}), "generate")
    _ok(site.c["alice"].post(reverse("writer:chapter_move", args=[slug, 2]), {"direction": direction}), "move")
    _ok(site.c["alice"].post(reverse("writer:story_publish", args=[slug]), {"publish": publish}), "publish")


@fuzz
@given(preference=text)
def test_personalise_preference(site, preference):
    url = reverse("writer:personalise", args=[site.story.slug])
    _ok(site.c["rita"].post(url, {"preference": preference}), url)


@fuzz
@given(title=text, body=text)
def test_option_accept(site, title, body):
    url = reverse("writer:option_accept", args=[site.option.pk])
    _ok(site.c["alice"].post(url, {"title": title, "text": body}), url)


# --- brands ------------------------------------------------------------------------------------------

BRAND_FIELDS = {"name": text, "description": text, "tone_of_voice": text, "target_audience": text,
                "banned_themes": text, "max_placements_per_chapter": number, "is_active": checkbox}
ASSET_FIELDS = {"kind": st.one_of(st.sampled_from(["product", "mascot", "character", "slogan"]), text),
                "name": text, "description": text, "terms": text}


@fuzz
@given(data=st.fixed_dictionaries(BRAND_FIELDS))
def test_brand_create_and_edit(site, data):
    _ok(site.c["mia"].post(reverse("brands:brand_create"), data), "brand_create")
    _ok(site.c["mia"].post(reverse("brands:brand_edit", args=[site.brand.slug]), data), "brand_edit")


@fuzz
@given(data=st.fixed_dictionaries(ASSET_FIELDS), htmx=st.booleans())
def test_asset_create_and_edit(site, data, htmx):
    extra = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    slug = site.brand.slug
    _ok(site.c["mia"].post(reverse("brands:asset_create", args=[slug]), data, **extra), "asset_create")
    _ok(site.c["mia"].post(reverse("brands:asset_edit", args=[slug, site.asset.pk]), data), "asset_edit")


@fuzz
@given(reason=text)
def test_review_reject_reason(site, reason):
    option = GenerationOption.objects.create(  # a fresh pending placement each time
        request=site.gen, index=GenerationOption.objects.filter(request=site.gen).count(), text="Lou's Tidewave.",
        brand=site.brand, asset=site.asset, mentions=[[6, 14]], placement_found=True,
        review_status=ReviewStatus.PENDING,
    )
    url = reverse("brands:option_reject", args=[option.pk])
    _ok(site.c["mia"].post(url, {"reason": reason}), url)


@fuzz
@given(opt_in=checkbox, excluded=st.lists(number, max_size=4), enabled=text)
@example(opt_in="on", excluded=["99999999999999999999999", "-1"], enabled="1")
def test_story_settings_and_sponsorship(site, opt_in, excluded, enabled):
    url = reverse("brands:story_settings", args=[site.story.slug])
    _ok(site.c["alice"].post(url, {"opt_in": opt_in, "excluded_brands": excluded}), url)
    _ok(site.c["rita"].post(reverse("brands:sponsorship"), {"enabled": enabled}), "sponsorship")


# --- generation quotas (issue 18) -----------------------------------------------------------------------


@fuzz
@given(username=st.one_of(text, st.sampled_from(["rita", "alice", "root"])), concurrent=number, per_hour=number,
       per_day=number, note=text)
@example(username="rita", concurrent=INT4_OVERFLOW, per_hour="99999999999999999999999", per_day="-1", note="")
@example(username="rita", concurrent="", per_hour="", per_day="", note="")
def test_quota_set_form(site, username, concurrent, per_hour, per_day, note):
    data = {"username": username, "concurrent": concurrent, "per_hour": per_hour, "per_day": per_day, "note": note}
    _ok(site.c["root"].post(reverse("writer:quota_set"), data), "quota_set")
    _ok(site.c["root"].get(reverse("writer:quota_list")), "quota_list")


@fuzz
@given(note=text, reason=text)
@example(note="a" * 5000, reason="\x00")
def test_brand_approval_decisions(site, note, reason):
    """Issue 18: staff's approve (optional note) and reject (a reason) of a brand waiting for approval."""
    for url, data in (
        (reverse("brands:brand_reject", args=[site.brand.pk]), {"reason": reason}),
        (reverse("brands:brand_approve", args=[site.brand.pk]), {"note": note}),
    ):
        _ok(site.c["root"].post(url, data), url)


# --- training ----------------------------------------------------------------------------------------


@fuzz
@given(
    data=st.fixed_dictionaries({
        "name": text, "dataset_dir": st.one_of(text, st.just("DATASET")), "out_dir": text,
        "max_steps": number, "num_generations": number, "max_completion_length": number, "lora_rank": number,
        "gradient_accumulation_steps": number, "rewards": st.one_of(text, st.just("format_partial,rouge1")),
    })
)
@example(data={"name": "big", "dataset_dir": "DATASET", "out_dir": "out", "max_steps": INT4_OVERFLOW,
               "num_generations": "2", "max_completion_length": "16", "lora_rank": "8",
               "gradient_accumulation_steps": "1", "rewards": "format_partial"})
def test_training_job_form(site, data):
    data = {k: (site.dataset if v == "DATASET" else v) for k, v in data.items()}
    _ok(site.c["root"].post(reverse("training:job_list"), data), "job_list")


@fuzz
@given(name=text, path=text, target=st.one_of(st.just("base"), number), dataset=st.one_of(text, st.just("DATASET")),
       limit=number, max_new_tokens=number, rewards=text)
@example(name="x", path="/", target="base", dataset="DATASET", limit=INT4_OVERFLOW, max_new_tokens="16",
         rewards="bleu")
def test_adapter_and_evaluation_forms(site, name, path, target, dataset, limit, max_new_tokens, rewards):
    _ok(site.c["root"].post(reverse("training:adapter_list"), {"name": name, "path": path}), "adapter_list")
    data = {"target": target, "dataset_dir": site.dataset if dataset == "DATASET" else dataset, "limit": limit,
            "max_new_tokens": max_new_tokens, "rewards": rewards}
    _ok(site.c["root"].post(reverse("training:leaderboard"), data), "leaderboard")


@fuzz
@given(file=upload, author=text, version=text, overwrite=checkbox)
def test_training_book_upload(site, file, author, version, overwrite):
    data = {"file": file, "author": author, "version": version, "overwrite": overwrite}
    _ok(site.c["root"].post(reverse("training:book_list"), data), "book_list")


@fuzz
@given(name=text, fraction=number, seed=number, formats=st.lists(text, max_size=3), types=st.lists(text, max_size=3))
def test_dataset_and_export_forms(site, name, fraction, seed, formats, types):
    data = {"name": name, "test_fraction": fraction, "seed": seed}
    _ok(site.c["root"].post(reverse("training:dataset_build"), data), "dataset_build")
    from training.models import WriterAdapter

    adapter, _ = WriterAdapter.objects.get_or_create(name="fuzz-lora", defaults={"base_model": "x", "path": "/nope"})
    url = reverse("training:adapter_export", args=[adapter.pk])
    _ok(site.c["root"].post(url, {"formats": formats, "gguf_types": types}), url)
