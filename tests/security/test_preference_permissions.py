"""The ratings' URLs in the security matrix: every role, GET and POST, on the world of
test_url_permissions.py (permission_table.py), checked the same way.

Only the reader who asked for a personalised chapter rates it or says which option they prefer; the
story's author and staff, who may see the request, get 403; everyone else 404 (nobody learns it
exists); an author's request has no ratings (404 for all); anonymous visitors go to the login page. A
refused request changes no row, and every change needs the CSRF token. The preference dataset's
download is staff only, as every training page.

`preference_permission_cases(world)` is the table's part for these URLs; permission_table.py takes it in."""

from __future__ import annotations

import json

from django.test import Client
from django.urls import reverse

from tests.security.permission_table import (
    ADMIN_LOGIN,
    DENIED,
    LOGIN,
    ROLES,
    WRONG_METHOD,
    Case,
    clients_for,
    logged_in,
    outcome_of,
    staff_only,
    url_patterns,
    walk_table,
)
from writer.models import OptionPreference, OptionRating

PREFERENCE_URLS = ("writer:request_ratings", "writer:option_rate", "writer:option_prefer", "writer:preferences_download")


def preference_permission_cases(w) -> dict[str, list[Case]]:  # noqa: ANN001
    """{URL name: [Case, ...]} for the ratings' URLs and the dataset's download."""
    # rita's personalised chapter: hers to rate; alice (the story's author) and root see it: 403.
    ritas = logged_in(404, rita=200, alice=403, root=403)
    nobodys = logged_in(404)  # an author's request, a missing one, an option rita was never shown
    stars = {"stars": "4"}

    def rita_post(ok: object) -> dict[str, object]:
        return logged_in(404, rita=ok, alice=403, root=403)

    return {
        "writer:request_ratings": [
            Case("rita's request", {"pk": w.gen_rita.pk}, ritas, WRONG_METHOD),
            Case("alice's author request", {"pk": w.gen_alice.pk}, nobodys, WRONG_METHOD),
            Case("missing request", {"pk": 987654}, nobodys, WRONG_METHOD),
        ],
        "writer:option_rate": [
            Case("rita's option", {"pk": w.rita_opt.pk}, WRONG_METHOD, rita_post(302), stars),
            Case("alice's option", {"pk": w.plain.pk}, WRONG_METHOD, nobodys, stars),
            Case("a pending placement", {"pk": w.opt_a.pk}, WRONG_METHOD, nobodys, stars),
            Case("missing option", {"pk": 987654}, WRONG_METHOD, nobodys, stars),
        ],
        # rita was shown one option: she is told there is nothing to prefer it to (302 with the message).
        "writer:option_prefer": [
            Case("rita's option", {"pk": w.rita_opt.pk}, WRONG_METHOD, rita_post(302)),
            Case("alice's option", {"pk": w.plain.pk}, WRONG_METHOD, nobodys),
            Case("missing option", {"pk": 987654}, WRONG_METHOD, nobodys),
        ],
        "writer:preferences_download": [Case("", {}, staff_only(200), staff_only(405))],
    }


def test_every_preference_url_has_an_entry_in_the_table(world):
    patterns = url_patterns()
    assert set(PREFERENCE_URLS) <= set(patterns)
    assert set(preference_permission_cases(world)) == set(PREFERENCE_URLS)
    like = sorted(n for n in patterns if n.endswith(("_rate", "_ratings")) or "prefer" in n)
    assert like == sorted(PREFERENCE_URLS), "a new ratings URL needs its cases here"


def test_every_role_gets_the_expected_status_on_every_preference_url(world, users):
    clients = clients_for({**users, "max": world.max})
    table = preference_permission_cases(world)
    walk = walk_table(clients, table, PREFERENCE_URLS, gets_write_nothing=True)
    assert not walk.mismatches, f"{len(walk.mismatches)} of {walk.requests} requests:\n" + "\n".join(walk.mismatches)
    assert not walk.changed, "\n".join(walk.changed)
    assert walk.requests == 2 * len(ROLES) * sum(len(cases) for cases in table.values())


def test_only_the_reader_who_asked_gets_a_post_through(world):
    for name, cases in preference_permission_cases(world).items():
        if name == "writer:preferences_download":
            continue  # staff only: the admin's login, no POST
        for case in cases:
            assert case.get["anon"] == LOGIN and case.post["anon"] == LOGIN, name
            for role in ROLES:
                if role != "rita":
                    assert case.post[role] in DENIED, (name, case.label, role)


def test_a_rating_needs_the_csrf_token_and_then_is_rita_s(world, users):
    bare = Client(enforce_csrf_checks=True)
    bare.force_login(users["rita"])
    url = reverse("writer:option_rate", args=[world.rita_opt.pk])
    bare.get(reverse("writer:home"))
    token = bare.cookies["csrftoken"].value
    assert bare.post(url, {"stars": "5"}).status_code == 403
    assert not OptionRating.objects.exists()
    assert bare.post(url, {"stars": "5", "csrfmiddlewaretoken": token}).status_code == 302
    rating = OptionRating.objects.get()
    assert (rating.option_id, rating.reader_id, rating.stars) == (world.rita_opt.pk, users["rita"].pk, 5)
    prefer = reverse("writer:option_prefer", args=[world.rita_opt.pk])
    assert bare.post(prefer).status_code == 403
    assert not OptionPreference.objects.exists()


def test_the_dataset_download_is_staff_only_and_holds_only_pairs(world, users):
    clients = clients_for({**users, "max": world.max})
    for role in ROLES[:-1]:
        response = clients[role].get(reverse("writer:preferences_download"))
        assert outcome_of(response) == ADMIN_LOGIN, role
        assert not response.get("Content-Disposition"), role
    response = clients["root"].get(reverse("writer:preferences_download"))
    assert response.status_code == 200 and "attachment" in response["Content-Disposition"]
    body = b"".join(response.streaming_content).decode()
    assert all(set(json.loads(line)) == {"prompt", "chosen", "rejected", "source", "writer"}
               for line in body.splitlines())
