"""The story bible's pages: the list by kind, the forms and their errors, proposals (accept, edit, reject,
ask for more), CSRF, and HTML escaping of what authors and the writer typed."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from tests.factories import story_with_chapters
from writer.bible import bible_proposals_fail, entry_create
from writer.models import BibleProposalRun, StoryBibleEntry


@pytest.fixture
def story(users):
    return story_with_chapters(owner=users["alice"], chapters=3, slug="neon-rain", title="Neon Rain")


def url(name: str, story, *args) -> str:
    return reverse(f"writer:{name}", args=[story.slug, *args])


def entry_form(**overrides) -> dict:
    data = {"kind": "character", "name": "Juno Vale", "aliases": "Juno, the courier", "description": "A courier.",
            "from_chapter": "1", "until_chapter": ""}
    data.update(overrides)
    return data


def test_the_story_page_links_its_author_to_the_bible(story, client_for):
    link = url("bible", story)
    assert f'href="{link}"' in client_for("alice").get(story.get_absolute_url()).content.decode()
    assert link not in client_for("rita").get(story.get_absolute_url()).content.decode()
    assert link not in Client().get(story.get_absolute_url()).content.decode()


def test_the_page_lists_entries_by_kind_with_aliases_and_chapters(story, client_for):
    entry_create(story=story, name="Juno Vale", aliases=["Juno"], description="A courier.", from_chapter=2)
    entry_create(story=story, name="Meridian Stack", kind="place", from_chapter=1, until_chapter=3)
    entry_create(story=story, name="The rain", kind="fact", description="It has rained for 612 days.")
    html = client_for("alice").get(url("bible", story)).content.decode()
    assert "Entries <span class=\"muted\">(3)</span>" in html
    assert html.index("<h3>Characters</h3>") < html.index("Juno Vale") < html.index("<h3>Places</h3>")
    assert html.index("<h3>Places</h3>") < html.index("Meridian Stack") < html.index("<h3>Facts</h3>")
    assert "<h3>Objects</h3>" not in html  # no empty group
    assert "also Juno" in html and "from chapter 2" in html and "chapters 1–3" in html
    assert "It has rained for 612 days." in html
    assert 'action="' + url("bible_propose", story) + '"' in html


def test_each_entry_s_buttons_post_the_one_form_to_their_own_address(story, client_for):
    """The entries' buttons share one hidden form (one CSRF token) and name their address in formaction;
    the links are built once per kind, so each must still end in its own entry's number."""
    accepted = entry_create(story=story, name="Juno")
    proposed = StoryBibleEntry.objects.create(story=story, name="Oki", status="proposed", source="writer")
    html = client_for("alice").get(url("bible", story)).content.decode()
    assert html.count('<form id="bible-actions" method="post" hidden>') == 1
    assert html.count("csrfmiddlewaretoken") == 3  # that form, "Propose from chapters" and the header's "Log out"
    for name, entry in (("bible_entry_delete", accepted), ("bible_entry_accept", proposed),
                        ("bible_entry_reject", proposed)):
        assert f'form="bible-actions" formaction="{url(name, story, entry.pk)}"' in html, name
    assert f'href="{url("bible_entry_edit", story, accepted.pk)}"' in html
    assert f'href="{url("bible_entry_edit", story, proposed.pk)}"' in html


def test_add_an_entry_and_the_form_errors(story, client_for):
    c = client_for("alice")
    assert c.get(url("bible_entry_add", story)).status_code == 200
    response = c.post(url("bible_entry_add", story), entry_form())
    assert response.status_code == 302 and response["Location"] == url("bible", story)
    entry = StoryBibleEntry.objects.get(story=story)
    assert (entry.name, entry.aliases, entry.status, entry.source) == ("Juno Vale", ["Juno", "the courier"],
                                                                       "accepted", "author")
    # A duplicate name (any case): the form again, the message on the name field, nothing saved.
    response = c.post(url("bible_entry_add", story), entry_form(name="juno vale", aliases=""))
    html = response.content.decode()
    assert response.status_code == 200
    assert response.context["form"].errors["name"] == [
        "The story bible already has an entry named “Juno Vale” (character): edit that one, or give this one "
        "another name."
    ]
    assert "already has an entry named" in html
    # A name that is another entry's alias.
    response = c.post(url("bible_entry_add", story), entry_form(name="Juno", aliases=""))
    assert "“Juno” is already an alias of “Juno Vale”" in response.context["form"].errors["name"][0]
    # Until before from; an empty name; a chapter below 1.
    response = c.post(url("bible_entry_add", story), entry_form(name="Oki", from_chapter="5", until_chapter="2"))
    assert response.context["form"].errors["until_chapter"] == ["“Until chapter” (2) is before “true from chapter” (5)."]
    response = c.post(url("bible_entry_add", story), entry_form(name="", from_chapter="0"))
    errors = response.context["form"].errors
    assert "name" in errors and "from_chapter" in errors
    response = c.post(url("bible_entry_add", story), entry_form(name="Oki", aliases=", ".join(f"O{i}" for i in range(13))))
    assert "at most 12 aliases" in response.context["form"].errors["aliases"][0]
    assert StoryBibleEntry.objects.filter(story=story).count() == 1


def test_edit_and_delete(story, client_for):
    c = client_for("alice")
    entry = entry_create(story=story, name="Juno", description="A courier.")
    other = entry_create(story=story, name="Oki")
    form = c.get(url("bible_entry_edit", story, entry.pk)).content.decode()
    assert 'value="Juno"' in form and "A courier." in form and "Save and accept" not in form
    response = c.post(url("bible_entry_edit", story, entry.pk), entry_form(name="Juno Vale", until_chapter="7"))
    assert response.status_code == 302
    entry.refresh_from_db()
    assert (entry.name, entry.until_chapter, entry.aliases) == ("Juno Vale", 7, ["Juno", "the courier"])
    response = c.post(url("bible_entry_edit", story, entry.pk), entry_form(name="OKI"))
    assert "already has an entry named “Oki”" in response.context["form"].errors["name"][0]
    assert c.get(url("bible_entry_delete", story, other.pk)).status_code == 405  # POST only
    response = c.post(url("bible_entry_delete", story, other.pk), follow=True)
    assert "“Oki” deleted from the story bible." in response.content.decode()
    assert not StoryBibleEntry.objects.filter(pk=other.pk).exists()
    # Another story's entry under this story's address: not found, even for its own author.
    elsewhere = story_with_chapters(owner=story.owner, chapters=1, slug="elsewhere")
    theirs = entry_create(story=elsewhere, name="Pip")
    assert c.get(url("bible_entry_edit", story, theirs.pk)).status_code == 404
    assert c.post(url("bible_entry_delete", story, theirs.pk)).status_code == 404
    assert StoryBibleEntry.objects.filter(pk=theirs.pk).exists()


def test_proposals_are_accepted_edited_or_rejected_from_the_page(story, client_for):
    c = client_for("alice")

    def propose(name: str) -> StoryBibleEntry:
        return StoryBibleEntry.objects.create(story=story, name=name, status="proposed", source="writer",
                                              description=f"{name}, as the writer saw it.", from_chapter=2)

    pip, oki, lou = propose("Pip"), propose("Oki"), propose("Lou")
    html = c.get(url("bible", story)).content.decode()
    assert "Proposed by the writer" in html and "Entries <span class=\"muted\">(0)</span>" in html
    for entry in (pip, oki, lou):
        assert url("bible_entry_accept", story, entry.pk) in html and url("bible_entry_reject", story, entry.pk) in html
    assert c.get(url("bible_entry_accept", story, pip.pk)).status_code == 405
    response = c.post(url("bible_entry_accept", story, pip.pk), follow=True)
    assert "“Pip” accepted into the story bible." in response.content.decode()
    response = c.post(url("bible_entry_reject", story, oki.pk), follow=True)
    assert "later proposals will leave it out" in response.content.decode()
    assert "Rejected proposals (1)" in response.content.decode()
    # Edit a proposal and accept it in one go.
    form = c.get(url("bible_entry_edit", story, lou.pk)).content.decode()
    assert "Save and accept" in form and "proposed by the writer" in form
    response = c.post(url("bible_entry_edit", story, lou.pk), entry_form(name="Lou", aliases="", description="The baker.",
                                                                      accept="1"))
    assert response.status_code == 302
    states = dict(StoryBibleEntry.objects.filter(story=story).values_list("name", "status"))
    assert states == {"Pip": "accepted", "Oki": "rejected", "Lou": "accepted"}
    assert StoryBibleEntry.objects.get(name="Lou").description == "The baker."
    # Rejecting what is accepted is refused with the reason.
    response = c.post(url("bible_entry_reject", story, pip.pk), follow=True)
    assert "Only a proposal can be rejected" in response.content.decode()


def test_ask_for_proposals_then_the_page_says_they_are_being_made_until_done(story, client_for, settings):
    c = client_for("alice")
    response = c.post(url("bible_propose", story), follow=True)
    html = response.content.decode()
    run = BibleProposalRun.objects.get(story=story)
    assert run.status == "queued" and run.requested_by == story.owner
    assert "The writer is reading the newest chapters" in html  # the message
    assert 'class="bible-run running"' in html and "proposing entries" in html
    assert f'hx-get="{url("bible_proposals_status", story)}"' in html
    # A second ask while one is on its way is refused with the reason.
    response = c.post(url("bible_propose", story), follow=True)
    assert "already reading the chapters" in response.content.decode()
    assert BibleProposalRun.objects.filter(story=story).count() == 1
    # The polled fragment: 200 while it runs, 286 (stop polling) with the outcome once it is done.
    assert c.get(url("bible_proposals_status", story), HTTP_HX_REQUEST="true").status_code == 200
    BibleProposalRun.objects.filter(pk=run.pk).update(
        status="succeeded", proposed=2, duplicates=1, skipped_lines=3, chapters=[1, 2, 3], answer="character | <b>Pip</b>"
    )
    done = c.get(url("bible_proposals_status", story), HTTP_HX_REQUEST="true")
    text = done.content.decode()
    assert done.status_code == 286
    assert "2 new proposals from chapters 1, 2, 3; 1 already in the bible; 3 lines of the answer skipped." in text
    assert "character | &lt;b&gt;Pip&lt;/b&gt;" in text
    html = c.get(url("bible", story)).content.decode()
    assert "hx-get" not in html.split('id="bible-run"')[1].split(">")[0]  # no more polling


def test_a_failed_run_shows_its_reason_and_a_story_without_chapters_cannot_ask(story, users, client_for):
    c = client_for("alice")
    run = BibleProposalRun.objects.create(story=story, requested_by=users["alice"], engine="vllm")
    bible_proposals_fail(run_id=run.pk, error="The writer at http://127.0.0.1:8001/v1 did not answer.")
    html = c.get(url("bible", story)).content.decode()
    assert "The writer could not make proposals: The writer at http://127.0.0.1:8001/v1 did not answer." in html
    empty = story_with_chapters(owner=users["alice"], chapters=0, slug="empty")
    html = c.get(url("bible", empty)).content.decode()
    assert "Add a chapter first" in html and url("bible_propose", empty) not in html
    response = c.post(url("bible_propose", empty), follow=True)
    assert "has no chapters yet" in response.content.decode()


def test_names_and_descriptions_are_escaped_everywhere(story, client_for):
    c = client_for("alice")
    nasty = '<script>alert("x")</script>'
    response = c.post(url("bible_entry_add", story), entry_form(name=f"Juno {nasty}", aliases="<b>Jay</b>",
                                                              description=f"<img src=x onerror=alert(1)>\n{nasty}"),
                      follow=True)
    html = response.content.decode()
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>Jay</b>" not in html
    assert "Juno &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html  # the list and the message
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "&lt;b&gt;Jay&lt;/b&gt;" in html
    entry = StoryBibleEntry.objects.get(story=story)
    form = c.get(url("bible_entry_edit", story, entry.pk)).content.decode()
    assert "<script>alert" not in form and "&lt;script&gt;" in form
    StoryBibleEntry.objects.create(story=story, name=f"Pip {nasty}", status="proposed", description=nasty)
    html = c.get(url("bible", story)).content.decode()
    assert "<script>alert" not in html and html.count("&lt;script&gt;") >= 3


def test_every_change_needs_the_csrf_token(story, users):
    c = Client(enforce_csrf_checks=True)
    c.force_login(users["alice"])
    entry = entry_create(story=story, name="Juno")
    for name, args, data in (
        ("bible_entry_add", (), entry_form(name="Oki")),
        ("bible_entry_edit", (entry.pk,), entry_form(name="Juno Vale")),
        ("bible_entry_delete", (entry.pk,), {}),
        ("bible_entry_accept", (entry.pk,), {}),
        ("bible_entry_reject", (entry.pk,), {}),
        ("bible_propose", (), {}),
    ):
        assert c.post(url(name, story, *args), data).status_code == 403, name
    assert list(StoryBibleEntry.objects.values_list("name", flat=True)) == ["Juno"]
    assert not BibleProposalRun.objects.exists()
    page = c.get(url("bible", story)).content.decode()
    assert page.count("csrfmiddlewaretoken") >= 2  # the propose form and the entry's delete form
