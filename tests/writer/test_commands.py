from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from writer.models import Story

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def test_seed_demo_is_idempotent_and_prints_credentials(db, client):
    first, second = StringIO(), StringIO()
    call_command("seed_demo", stdout=first)
    call_command("seed_demo", stdout=second)
    assert first.getvalue() == second.getvalue()
    for username in ("ava", "remy", "bree", "admin"):
        assert f"  {username} / " in first.getvalue()
    assert get_user_model().objects.filter(username__in=["ava", "remy", "bree", "admin"]).count() == 4
    assert Story.objects.filter(owner__username="ava").count() == 2
    assert all(s.is_published and s.chapters.count() >= 5 for s in Story.objects.all())
    # The printed credentials work.
    line = next(li for li in first.getvalue().splitlines() if li.strip().startswith("remy /"))
    password = line.split(" / ")[1]
    assert client.login(username="remy", password=password)


def test_import_book_prints_slug_and_count(users):
    out = StringIO()
    call_command("import_book", str(SAMPLES / "the_lighthouse_keepers_daughter.md"), "--title", "Lighthouse", stdout=out)
    payload = json.loads(out.getvalue())
    story = Story.objects.get(slug=payload["story"])
    assert payload["chapters"] == story.chapters.count() == 6
    assert story.owner.username == "alice"  # the first author


def test_import_book_opts_the_story_in_to_brands_only_when_asked(users):
    from brands.selectors import sponsorship_allowed

    def imported(*flags: str) -> Story:
        out = StringIO()
        book = str(SAMPLES / "the_lighthouse_keepers_daughter.md")
        call_command("import_book", book, "--title", "Lighthouse", *flags, stdout=out)
        return Story.objects.get(slug=json.loads(out.getvalue())["story"])

    assert sponsorship_allowed(story=imported()) is False
    assert sponsorship_allowed(story=imported("--brands-opt-in")) is True


def test_import_book_refuses_a_binary_file(users, tmp_path):
    bad = tmp_path / "cover.txt"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    with pytest.raises(CommandError, match="binary"):
        call_command("import_book", str(bad), "--title", "Cover")
    assert not Story.objects.filter(title="Cover").exists()
