"""The ratings on the pages: the control on a reader's personalised chapter (plain POST forms with the
CSRF token: no JavaScript needed), the ratings page, the errors and the flood's 429, HTML escaping, and
the training leaderboard's human preference section with the dataset's download."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client
from django.urls import reverse

from tests.factories import story_with_chapters
from writer.models import GenerationOption, GenerationRequest, OptionPreference, OptionRating, ReviewStatus

Kind = GenerationRequest.Kind
EVIL = '<script>alert("x")</script>'


@pytest.fixture(autouse=True)
def _own_cache(settings, request):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": request.node.nodeid}
    }
    settings.WRITER_BASE_URL = "http://127.0.0.1:9/v1"


@pytest.fixture
def story(users):
    return story_with_chapters(owner=users["alice"], chapters=2, slug="salt-road", title="Salt Road", is_published=True)


def make_request(story, user, kind=Kind.READER, texts=("First option.", "Second option."), **fields):
    gen = GenerationRequest.objects.create(
        story=story, requested_by=user, kind=kind, engine="vllm", max_new_tokens=64, next_number=3,
        n=len(texts), status=GenerationRequest.Status.SUCCEEDED, model_name="smollm2", **fields,
    )
    options = [
        GenerationOption.objects.create(request=gen, index=i, text=t, reasoning="Plan.", format_ok=True)
        for i, t in enumerate(texts)
    ]
    return gen, options


def rate_url(option) -> str:
    return reverse("writer:option_rate", args=[option.pk])


def prefer_url(option) -> str:
    return reverse("writer:option_prefer", args=[option.pk])


def forms(html: str) -> list[str]:
    return re.findall(r"<form\b[^>]*method=\"post\"[^>]*>.*?</form>", html, re.S | re.I)


def test_the_reader_sees_a_rating_control_and_i_prefer_this_one_on_their_chapter(story, users, client_for):
    gen, (a, b) = make_request(story, users["rita"])
    html = client_for("rita").get(gen.get_absolute_url()).content.decode()
    for option in (a, b):
        assert f'action="{rate_url(option)}"' in html and f'action="{prefer_url(option)}"' in html
    assert html.count('name="stars" value="') == 10  # 1-5 stars for each option
    assert "I prefer this one" in html
    assert reverse("writer:request_ratings", args=[gen.pk]) in html
    ours = [f for f in forms(html) if "option_rate" in f or "/rate/" in f or "/prefer/" in f]
    assert len(ours) == 4 and all('name="csrfmiddlewaretoken"' in f for f in ours)
    assert not any("hx-" in f for f in ours)  # plain forms: they work with JavaScript off


def test_no_prefer_with_one_option_and_no_control_for_anyone_else(story, users, client_for):
    gen, (only,) = make_request(story, users["rita"], texts=("Only option.",))
    html = client_for("rita").get(gen.get_absolute_url()).content.decode()
    assert rate_url(only) in html and prefer_url(only) not in html and "I prefer this one" not in html
    # The story's author and staff may see rita's request, but it is not theirs to rate.
    for who in ("alice", "root"):
        html = client_for(who).get(gen.get_absolute_url()).content.decode()
        assert rate_url(only) not in html, who
    # An author's own request: accepting is the author's say, not stars.
    authors, (option, _) = make_request(story, users["alice"], Kind.AUTHOR)
    html = client_for("alice").get(authors.get_absolute_url()).content.decode()
    assert rate_url(option) not in html and "Accept this option" in html


def test_an_option_waiting_for_review_has_no_control(story, users, client_for):
    gen, (a, held) = make_request(story, users["rita"])
    GenerationOption.objects.filter(pk=held.pk).update(review_status=ReviewStatus.PENDING)
    html = client_for("rita").get(gen.get_absolute_url()).content.decode()
    assert rate_url(a) in html and rate_url(held) not in html
    assert prefer_url(a) not in html  # one option shown: nothing to prefer it to
    assert client_for("rita").post(rate_url(held), {"stars": "5"}).status_code == 404
    assert not OptionRating.objects.exists()


def test_rate_then_change_it_and_prefer_then_see_it_on_the_ratings_page(story, users, client_for):
    gen, (a, b) = make_request(story, users["rita"])
    c = client_for("rita")
    response = c.post(rate_url(a), {"stars": "4"}, follow=True)
    assert response.redirect_chain[-1][0] == gen.get_absolute_url()
    assert "You gave Option 1 4 of 5 stars." in response.content.decode()
    response = c.post(rate_url(a), {"stars": "2", "next": "ratings"})
    ratings = reverse("writer:request_ratings", args=[gen.pk])
    assert response.status_code == 302 and response["Location"] == ratings
    assert list(OptionRating.objects.values_list("option_id", "stars")) == [(a.pk, 2)]
    response = c.post(prefer_url(b), {"next": "ratings"}, follow=True)
    html = response.content.decode()
    assert "You prefer Option 2 to the other option you were shown." in html
    assert "your rating 2 of 5" in html and "not rated" in html
    assert 'aria-pressed="true"' in html and "You prefer this one" in html
    assert list(OptionPreference.objects.values_list("chosen_id", "rejected_id")) == [(b.pk, a.pk)]


@pytest.mark.parametrize("stars", ["0", "9", "", "lots"])
def test_a_bad_rating_is_refused_with_a_message(story, users, client_for, stars):
    gen, (a, _) = make_request(story, users["rita"])
    response = client_for("rita").post(rate_url(a), {"stars": stars}, follow=True)
    assert "Rate with 1 to 5 stars" in response.content.decode()
    assert not OptionRating.objects.exists()


def test_prefer_with_one_option_tells_why(story, users, client_for):
    gen, (only,) = make_request(story, users["rita"], texts=("Only option.",))
    response = client_for("rita").post(prefer_url(only), follow=True)
    assert "nothing to prefer it to" in response.content.decode()
    assert not OptionPreference.objects.exists()


def test_a_flood_gets_429_with_retry_after_and_the_message(story, users, client_for, settings):
    settings.PREFERENCE_RATE_LIMIT_PER_MINUTE = 3
    gen, (a, b) = make_request(story, users["rita"])
    c = client_for("rita")
    for stars in ("1", "2", "3"):
        assert c.post(rate_url(a), {"stars": stars}).status_code == 302
    response = c.post(rate_url(b), {"stars": "5"})
    assert response.status_code == 429 and 1 <= int(response["Retry-After"]) <= 60
    html = response.content.decode()
    assert "the most we take from one reader" in html and 'name="stars"' in html
    assert c.post(prefer_url(b)).status_code == 429
    assert list(OptionRating.objects.values_list("option_id", "stars")) == [(a.pk, 3)]
    assert not OptionPreference.objects.exists()


def test_what_readers_and_writers_typed_is_escaped(story, users, client_for):
    gen, (a, b) = make_request(story, users["rita"], texts=(f"Dark {EVIL} night.", "Plain."), adapter="")
    GenerationRequest.objects.filter(pk=gen.pk).update(model_name=f"base{EVIL}")
    c = client_for("rita")
    c.post(rate_url(a), {"stars": "5", "next": f'"><b>{EVIL}'})  # an odd `next` goes to the request page
    html = c.get(reverse("writer:request_ratings", args=[gen.pk])).content.decode()
    assert EVIL not in html and "&lt;script&gt;" in html
    board = client_for("root").get(reverse("training:leaderboard")).content.decode()
    assert EVIL not in board and "base&lt;script&gt;" in board


def test_the_leaderboard_shows_no_data_then_the_rate_and_the_download(story, users, client_for):
    root = client_for("root")
    html = root.get(reverse("training:leaderboard")).content.decode()
    assert 'id="human-preference"' in html and "No data" in html
    gen, (a, b) = make_request(story, users["rita"], adapter="mesu-writer-v2")
    rita = client_for("rita")
    rita.post(rate_url(a), {"stars": "5"})
    rita.post(rate_url(b), {"stars": "3"})
    rita.post(prefer_url(a))
    html = root.get(reverse("training:leaderboard")).content.decode()
    section = html[html.index('id="human-preference"'):]
    section = section[: section.index("</section>")]
    assert "mesu-writer-v2" in section and "50 % of 2" in section and "4.00" in section
    assert "1 / 0" in section  # one reader's choice, no author's
    download = reverse("writer:preferences_download")
    assert f"{download}?source=reader" in section
    response = root.get(download + "?source=reader")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/x-ndjson")
    assert 'filename="mesu-preferences-reader-' in response["Content-Disposition"]
    rows = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    # Her choice (A over B); her stars say the same about the same two options: one pair.
    assert len(rows) == 1 and "First option." in rows[0]["chosen"] and "Second option." in rows[0]["rejected"]
    assert (rows[0]["source"], rows[0]["writer"]) == ("reader", "mesu-writer-v2")
    response = root.get(download + "?source=robots")
    assert response.status_code == 400 and "choose reader, author or all" in response.content.decode()
    assert Client().get(download).status_code == 302  # anonymous: to the admin's login
