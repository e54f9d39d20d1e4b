"""Readers' ratings and people's preferences (writer.preferences): rating and choosing, who may, the
flood limit, the author's acceptance recorded as a preference, the dataset (prompt, chosen, rejected)
and its export command, and the leaderboard's human preference rate."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from django.core.management import CommandError, call_command

from mesu_web import action_limits
from tests.factories import approved_brand, story_with_chapters
from training.selectors import human_preference
from writer import preferences, services
from writer.models import GenerationOption, GenerationRequest, OptionPreference, OptionRating, ReviewStatus
from writer.preferences import PreferenceLimited, option_prefer, option_rate, preference_pairs
from writer.prompting import SOLUTION_END, SOLUTION_START

Kind = GenerationRequest.Kind


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture(autouse=True)
def _own_cache(settings, request):
    """A private cache per test: the limit's counters never leak between tests (nor into Redis)."""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": request.node.nodeid}
    }
    settings.WRITER_BASE_URL = "http://127.0.0.1:9/v1"  # nothing listens: token counts never leave the machine


@pytest.fixture
def story(users):
    return story_with_chapters(owner=users["alice"], chapters=3, slug="tide-line", title="Tide Line", is_published=True)


def make_request(story, user, kind=Kind.READER, *, texts=("One.", "Two."), adapter="", model_name="smollm2",
                 status=GenerationRequest.Status.SUCCEEDED, preference="a storm at sea"):
    gen = GenerationRequest.objects.create(
        story=story, requested_by=user, kind=kind, engine="vllm", adapter=adapter, model_name=model_name,
        max_new_tokens=64, next_number=4, n=max(1, len(texts)), status=status, preference=preference,
    )
    options = [
        GenerationOption.objects.create(
            request=gen, index=i, text=text, reasoning=f"Plan {i}.", raw_output=f"raw {i}", format_ok=True
        )
        for i, text in enumerate(texts)
    ]
    return gen, options


# --- Ratings ------------------------------------------------------------------------------------------


def test_a_reader_rates_an_option_and_rating_again_changes_it(story, users):
    gen, (first, second) = make_request(story, users["rita"], adapter="mesu-writer-v2")
    rating = option_rate(option=first, user=users["rita"], stars="4")
    assert (rating.stars, rating.writer, rating.reader_id) == (4, "mesu-writer-v2", users["rita"].pk)
    option_rate(option=first, user=users["rita"], stars=2)
    assert list(OptionRating.objects.values_list("option_id", "stars")) == [(first.pk, 2)]
    option_rate(option=second, user=users["rita"], stars=5)
    assert OptionRating.objects.count() == 2


@pytest.mark.parametrize("stars", ["0", "6", "", "four", None, "3.5", "-1"])
def test_stars_outside_one_to_five_are_refused(story, users, stars):
    _, (option, _) = make_request(story, users["rita"])
    with pytest.raises(preferences.ApplicationError, match="Rate with 1 to 5 stars"):
        option_rate(option=option, user=users["rita"], stars=stars)
    assert not OptionRating.objects.exists()


def test_only_the_reader_who_asked_rates_a_finished_option_they_were_shown(story, users):
    gen, (option, _) = make_request(story, users["rita"])
    for who in ("ross", "alice", "root"):
        with pytest.raises(preferences.ApplicationError, match="Only the reader who asked"):
            option_rate(option=option, user=users[who], stars=3)
    _, (authors, _) = make_request(story, users["alice"], Kind.AUTHOR)
    with pytest.raises(preferences.ApplicationError, match="an author accepts an option instead"):
        option_rate(option=authors, user=users["alice"], stars=3)
    _, (running, _) = make_request(story, users["rita"], status=GenerationRequest.Status.RUNNING)
    with pytest.raises(preferences.ApplicationError, match="still being written"):
        option_rate(option=running, user=users["rita"], stars=3)
    GenerationOption.objects.filter(pk=option.pk).update(review_status=ReviewStatus.PENDING)
    option.refresh_from_db()
    with pytest.raises(preferences.ApplicationError, match="waiting for a brand's review"):
        option_rate(option=option, user=users["rita"], stars=3)
    assert not OptionRating.objects.exists()


# --- A reader's choice --------------------------------------------------------------------------------


def test_i_prefer_this_one_is_preferred_to_each_other_option_shown_and_can_change(story, users):
    gen, (a, b, c, held) = make_request(story, users["rita"], texts=("A.", "B.", "C.", "Held."))
    GenerationOption.objects.filter(pk=held.pk).update(review_status=ReviewStatus.PENDING)  # never shown to her
    pairs = option_prefer(option=b, user=users["rita"])
    assert sorted((p.chosen_id, p.rejected_id) for p in pairs) == [(b.pk, a.pk), (b.pk, c.pk)]
    assert {p.source for p in pairs} == {"reader"}
    option_prefer(option=c, user=users["rita"])  # she changed her mind: the earlier choice is gone
    assert sorted(OptionPreference.objects.values_list("chosen_id", "rejected_id")) == [(c.pk, a.pk), (c.pk, b.pk)]
    assert preferences.reader_state(request=gen, user=users["rita"]).preferred == c.pk


def test_nothing_to_prefer_when_one_option_was_shown(story, users):
    _, (only,) = make_request(story, users["rita"], texts=("Only.",))
    with pytest.raises(preferences.ApplicationError, match="nothing to prefer it to"):
        option_prefer(option=only, user=users["rita"])
    assert not OptionPreference.objects.exists()


# --- The flood ----------------------------------------------------------------------------------------


def test_a_rating_flood_from_one_reader_is_limited_per_minute(story, users, settings):
    settings.PREFERENCE_RATE_LIMIT_PER_MINUTE = 5
    _, (a, b) = make_request(story, users["rita"])
    for i in range(5):
        option_rate(option=(a, b)[i % 2], user=users["rita"], stars=1 + i)
    with pytest.raises(PreferenceLimited) as refused:
        option_rate(option=a, user=users["rita"], stars=1)
    assert 1 <= refused.value.retry_after <= 60
    assert "5 times in a minute" in refused.value.message and "Try again in" in refused.value.message
    with pytest.raises(PreferenceLimited):  # choices count against the same limit
        option_prefer(option=a, user=users["rita"])
    # Two rows, whatever was sent: one per reader and option, the last stars taken before the limit.
    assert sorted(OptionRating.objects.values_list("option_id", "stars")) == [(a.pk, 5), (b.pk, 4)]
    assert not OptionPreference.objects.exists()
    # Another reader is not held back by rita's flood.
    _, (ross_option, _) = make_request(story, users["ross"])
    assert option_rate(option=ross_option, user=users["ross"], stars=3).stars == 3


def test_the_hourly_limit_holds_across_minutes(story, users, settings, monkeypatch):
    settings.PREFERENCE_RATE_LIMIT_PER_MINUTE = 100
    settings.PREFERENCE_RATE_LIMIT_PER_HOUR = 3
    clock = [7200.0]
    monkeypatch.setattr(action_limits.time, "time", lambda: clock[0])
    _, (a, _) = make_request(story, users["rita"])
    for _ in range(3):
        option_rate(option=a, user=users["rita"], stars=3)
        clock[0] += 61  # a new minute each time
    with pytest.raises(PreferenceLimited, match="3 times in an hour") as refused:
        option_rate(option=a, user=users["rita"], stars=3)
    assert refused.value.retry_after == 3600 - 183
    assert "minutes" in refused.value.message
    clock[0] = 7200.0 + 3600  # the next hour
    assert option_rate(option=a, user=users["rita"], stars=4).stars == 4


def test_ratings_still_work_while_the_cache_is_down(story, users, monkeypatch, caplog):
    def down(*args, **kwargs):
        raise ConnectionError("redis is down")

    from django.core.cache import caches

    monkeypatch.setattr(type(caches["default"]), "add", down)
    _, (a, _) = make_request(story, users["rita"])
    assert option_rate(option=a, user=users["rita"], stars=4).stars == 4
    assert "rate limit is off" in caplog.text


# --- The author's acceptance --------------------------------------------------------------------------


def test_accepting_an_option_records_it_preferred_to_the_others_that_could_be_accepted(story, users):
    gen, (a, b, c, held) = make_request(
        story, users["alice"], Kind.AUTHOR, texts=("A ch.", "B ch.", "C ch.", "Held ch."), adapter="mesu-writer-v2"
    )
    GenerationOption.objects.filter(pk=held.pk).update(review_status=ReviewStatus.PENDING)
    services.option_accept(option=b, user=users["alice"], text="B ch, edited.")
    rows = OptionPreference.objects.filter(request=gen)
    assert sorted(rows.values_list("chosen_id", "rejected_id")) == [(b.pk, a.pk), (b.pk, c.pk)]
    assert set(rows.values_list("source", "user_id", "chosen_writer", "rejected_writer")) == {
        ("author", users["alice"].pk, "mesu-writer-v2", "mesu-writer-v2")
    }
    # A refused acceptance (another option of the same request) records nothing more.
    with pytest.raises(preferences.ApplicationError, match="already accepted"):
        services.option_accept(option=a, user=users["alice"])
    assert rows.count() == 2


def test_accepting_the_only_option_records_no_pair(story, users):
    _, (only,) = make_request(story, users["alice"], Kind.AUTHOR, texts=("Only ch.",))
    services.option_accept(option=only, user=users["alice"])
    assert not OptionPreference.objects.exists()


# --- The dataset --------------------------------------------------------------------------------------


def test_pairs_have_the_writers_prompt_and_the_chosen_and_rejected_completions(story, users):
    gen, (a, b) = make_request(story, users["rita"], texts=("The calm chapter.", "The storm chapter."),
                               adapter="mesu-writer-v2")
    option_prefer(option=b, user=users["rita"])
    (row,) = list(preference_pairs(count_tokens=words))
    assert set(row) == {"prompt", "chosen", "rejected", "source", "writer"}
    assert (row["source"], row["writer"]) == ("reader", "mesu-writer-v2")
    assert row["chosen"] == (
        f"<start_working_out>\nPlan 1.\n<end_working_out>\n{SOLUTION_START}\nThe storm chapter.\n{SOLUTION_END}"
    )
    assert "The calm chapter." in row["rejected"] and "The storm chapter." not in row["rejected"]
    system, user = row["prompt"]
    assert (system["role"], user["role"]) == ("system", "user")
    assert "Tide Line" in user["content"] and "Chapter 3 begins." in user["content"]
    assert "a storm at sea" in user["content"]  # the reader's wish


def test_ratings_make_pairs_and_a_readers_own_choice_wins_over_them(story, users):
    gen, (a, b, c) = make_request(story, users["rita"], texts=("A text.", "B text.", "C text."))
    option_rate(option=a, user=users["rita"], stars=5)
    option_rate(option=b, user=users["rita"], stars=2)
    option_rate(option=c, user=users["rita"], stars=2)  # b and c tie: no pair between them
    texts = {o.pk: o.text for o in (a, b, c)}

    def pairs():
        return sorted(
            (next(t for t in texts.values() if t in r["chosen"]), next(t for t in texts.values() if t in r["rejected"]))
            for r in preference_pairs(count_tokens=words)
        )

    assert pairs() == [("A text.", "B text."), ("A text.", "C text.")]
    # She says B after all: B over A and over C; her stars still put A over C, which her choice leaves open.
    option_prefer(option=b, user=users["rita"])
    assert pairs() == [("A text.", "C text."), ("B text.", "A text."), ("B text.", "C text.")]


def test_sources_filter_and_brand_placements_are_left_out(story, users):
    _, (r1, r2) = make_request(story, users["rita"], texts=("R one.", "R two."))
    option_prefer(option=r1, user=users["rita"])
    _, (a1, a2, branded) = make_request(story, users["alice"], Kind.AUTHOR, texts=("A one.", "A two.", "Sponsored."))
    services.option_accept(option=a1, user=users["alice"])
    # The branded option: its prompt had a brief and its text a placement, so it is no training pair.

    brand = approved_brand(name="Tidewave", managers=[users["mia"]], description="Boards.")
    GenerationOption.objects.filter(pk=branded.pk).update(brand=brand)
    assert [r["source"] for r in preference_pairs(source="reader", count_tokens=words)] == ["reader"]
    skipped = Counter()
    authors = list(preference_pairs(source="author", count_tokens=words, skipped=skipped))
    assert len(authors) == 1 and "A one." in authors[0]["chosen"] and "A two." in authors[0]["rejected"]
    assert skipped == {"brand placement": 1}
    assert Counter(r["source"] for r in preference_pairs(count_tokens=words)) == {"reader": 1, "author": 1}
    with pytest.raises(preferences.ApplicationError, match="choose reader, author or all"):
        list(preference_pairs(source="everyone"))


def test_an_answer_that_missed_the_format_is_kept_as_it_came(story, users):
    _, (a, b) = make_request(story, users["rita"], texts=("Good.", "broken"))
    GenerationOption.objects.filter(pk=b.pk).update(format_ok=False, raw_output="no tags at all, broken")
    option_prefer(option=a, user=users["rita"])
    (row,) = preference_pairs(count_tokens=words)
    assert row["rejected"] == "no tags at all, broken"


def test_the_export_command_writes_the_jsonl_and_prints_a_summary(story, users, tmp_path, capsys):
    _, (a, b) = make_request(story, users["rita"], adapter="mesu-writer-v2")
    option_prefer(option=a, user=users["rita"])
    _, (c, d) = make_request(story, users["alice"], Kind.AUTHOR)
    services.option_accept(option=d, user=users["alice"])
    out = tmp_path / "prefs.jsonl"
    call_command("export_preferences", "--out", str(out))
    summary = json.loads(capsys.readouterr().out)
    assert summary == {
        "path": str(out.resolve()), "source": "all", "pairs": 2, "by_source": {"author": 1, "reader": 1},
        "by_writer": {"mesu-writer-v2": 1, "smollm2": 1}, "skipped": {},
    }
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["source"], r["writer"]) for r in rows] == [("reader", "mesu-writer-v2"), ("author", "smollm2")]
    assert "One." in rows[1]["rejected"] and "Two." in rows[1]["chosen"]
    call_command("export_preferences", "--out", str(out), "--source", "author")
    assert json.loads(capsys.readouterr().out)["pairs"] == 1
    assert len(out.read_text().splitlines()) == 1
    with pytest.raises(CommandError, match="choose reader, author or all"):
        call_command("export_preferences", "--out", str(out), "--source", "robots")
    with pytest.raises(CommandError, match="does not exist"):
        call_command("export_preferences", "--out", str(tmp_path / "nope" / "x.jsonl"))


# --- The leaderboard's rate ---------------------------------------------------------------------------


def test_human_preference_rate_per_writer(story, users):
    assert human_preference() == {"rows": [], "ratings": 0, "pairs": 0}
    _, (a, b) = make_request(story, users["rita"], adapter="mesu-writer-v2")
    _, (c, d) = make_request(story, users["rita"], model_name="smollm2")
    _, (e, f) = make_request(story, users["ross"], adapter="mesu-writer-v2")
    option_rate(option=a, user=users["rita"], stars=5)
    option_rate(option=b, user=users["rita"], stars=3)
    option_rate(option=e, user=users["ross"], stars=4)
    option_rate(option=c, user=users["rita"], stars=2)
    option_prefer(option=d, user=users["rita"])
    board = human_preference()
    by = {r["writer"]: r for r in board["rows"]}
    assert [r["writer"] for r in board["rows"]] == ["mesu-writer-v2", "smollm2"]  # best liked rate first
    v2, base = by["mesu-writer-v2"], by["smollm2"]
    assert (v2["ratings"], v2["mean_stars"], v2["liked_rate"]) == (3, 4.0, 2 / 3)
    assert (base["ratings"], base["mean_stars"], base["liked_rate"]) == (1, 2.0, 0.0)
    assert (base["reader_pairs"], base["author_pairs"]) == (1, 0)
    # Pairs within one request share a writer: no head-to-head figure.
    assert v2["win_rate"] is None and base["win_rate"] is None
    assert (board["ratings"], board["pairs"]) == (4, 1)


def test_head_to_head_counts_pairs_between_two_writers(story, users):
    gen, (a, b) = make_request(story, users["rita"])
    OptionPreference.objects.create(request=gen, user=users["rita"], source="reader", chosen=a, rejected=b,
                                    chosen_writer="mesu-writer-v2", rejected_writer="smollm2")
    OptionPreference.objects.create(request=gen, user=users["ross"], source="reader", chosen=b, rejected=a,
                                    chosen_writer="mesu-writer-v2", rejected_writer="smollm2")
    OptionPreference.objects.create(request=gen, user=users["alice"], source="author", chosen=b, rejected=a,
                                    chosen_writer="smollm2", rejected_writer="mesu-writer-v2")
    by = {r["writer"]: r for r in human_preference()["rows"]}
    assert (by["mesu-writer-v2"]["wins"], by["mesu-writer-v2"]["head_to_head"]) == (2, 3)
    assert by["mesu-writer-v2"]["win_rate"] == pytest.approx(2 / 3)
    assert by["smollm2"]["win_rate"] == pytest.approx(1 / 3)
    assert by["smollm2"]["liked_rate"] is None  # no rating: "no data" on the page
