"""The live text's URL in the security matrix: every role, GET and POST, on the world of
test_url_permissions.py (permission_table.py), checked the same way; and who sees a draft as it is
written (writer/live.py).

`writer:request_live` is the request page's poller: who may see the request gets its body (who asked,
the story's author, staff); anyone else 404 (nobody learns it exists); anonymous visitors go to the
login page; POST is 405. A finished request answers 286 (htmx stops polling) with the final body.

`writer:option_swipe_live` is an option's swipe control's poller (one option written again): who may see
the option's request gets it (the same three); anyone else 404; anonymous visitors the login page; POST
405. Where no swipe runs (the world's options): 286 with the request's final body.

While a request is written, its options' text so far goes to those who see every option of the finished
request (the story's author, staff), and to the reader who asked only where no brand is asked for: a
branded option waits for its brand's review before the reader sees it, and the live text is the draft.
A swipe's text so far goes to the same people, by the same rule.

`live_permission_cases(world)` is the table's part for these URLs; permission_table.py takes it in."""

from __future__ import annotations

from django.urls import reverse

from tests.security.permission_table import (
    LOGIN,
    ROLES,
    WRONG_METHOD,
    Case,
    clients_for,
    logged_in,
    outcome_of,
    url_patterns,
    walk_table,
)
from tests.writer.test_live import finished_request, worker_holds
from writer import live
from writer.models import GenerationRequest, OptionSwipe

LIVE_URLS = ("writer:request_live", "writer:option_swipe_live")
SECRET = "Lou waxed the board at dawn"  # the draft's words: who may not see it must not get them


def live_permission_cases(w) -> dict[str, list[Case]]:  # noqa: ANN001
    """{URL name: [Case, ...]} for the live text's URLs, on the world's finished requests."""
    return {
        "writer:request_live": [  # finished requests: 286 with the final body, as request_progress
            Case("alice's", {"pk": w.gen_alice.pk}, logged_in(404, alice=286, root=286), WRONG_METHOD),
            Case("rita's", {"pk": w.gen_rita.pk}, logged_in(404, alice=286, rita=286, root=286), WRONG_METHOD),
            Case("missing request", {"pk": 987654}, logged_in(404), WRONG_METHOD),
        ],
        "writer:option_swipe_live": [  # no swipe runs: 286 with the request's final body
            Case("alice's plain option", {"pk": w.plain.pk}, logged_in(404, alice=286, root=286), WRONG_METHOD),
            # A placement waiting for brand A: its manager reviews it on the review page, never here.
            Case("alice's option waiting for brand A", {"pk": w.opt_a.pk}, logged_in(404, alice=286, root=286),
                 WRONG_METHOD),
            Case("rita's option", {"pk": w.rita_opt.pk}, logged_in(404, alice=286, rita=286, root=286), WRONG_METHOD),
            Case("missing option", {"pk": 987654}, logged_in(404), WRONG_METHOD),
        ],
    }


def test_every_live_url_has_an_entry_in_the_table(world):
    patterns = url_patterns()
    assert set(LIVE_URLS) <= set(patterns)
    assert set(live_permission_cases(world)) == set(LIVE_URLS)
    assert sorted(n for n in patterns if "live" in n) == sorted(LIVE_URLS), "a new live URL needs its cases here"


def test_every_role_gets_the_expected_status_on_the_live_url(world, users):
    clients = clients_for({**users, "max": world.max})
    table = live_permission_cases(world)
    walk = walk_table(clients, table, LIVE_URLS, gets_write_nothing=True)
    assert not walk.mismatches, f"{len(walk.mismatches)} of {walk.requests} requests:\n" + "\n".join(walk.mismatches)
    assert not walk.changed, "\n".join(walk.changed)
    assert walk.requests == 2 * len(ROLES) * sum(len(cases) for cases in table.values())


def _running(world, user, kind, *, use_brands):  # noqa: ANN001, ANN202
    gen = GenerationRequest.objects.create(
        story=world.pub, requested_by=user, kind=kind, engine="local", max_new_tokens=24, next_number=4, n=2,
        status=GenerationRequest.Status.RUNNING, attempts=1, use_brands=use_brands,
    )
    assert live.publish(request_id=gen.pk, attempt=1, texts={0: f"<SOLUTION>{SECRET}.", 1: "<SOLUTION>Pip"})
    return gen


def test_a_draft_goes_only_to_who_may_see_it_while_it_is_written(world, users):
    live.reset()
    alice, rita = users["alice"], users["rita"]
    authors = _running(world, alice, GenerationRequest.Kind.AUTHOR, use_brands=True)
    branded = _running(world, rita, GenerationRequest.Kind.READER, use_brands=True)
    plain = _running(world, rita, GenerationRequest.Kind.READER, use_brands=False)
    # role -> (status, sees the draft) per running request; None: the status alone (a redirect or a 404).
    sees = {
        authors: logged_in(404, alice=True, root=True),
        branded: logged_in(404, alice=True, rita=False, root=True),  # the reader waits for the brand's review
        plain: logged_in(404, alice=True, rita=True, root=True),
    }
    clients = clients_for({**users, "max": world.max})
    for gen, table in sees.items():
        url = reverse("writer:request_live", args=[gen.pk])
        page = reverse("writer:request_detail", args=[gen.pk])
        for role in ROLES:
            expected = table[role]
            for address in (url, page):
                response = clients[role].get(address)
                body = response.content.decode()
                if expected in (LOGIN, 404):
                    assert outcome_of(response) == expected, (gen.pk, role, address)
                    assert SECRET not in body, (role, address)
                    continue
                assert response.status_code == 200, (gen.pk, role, address)
                assert (SECRET in body) is expected, (gen.pk, role, address)
                assert ('id="live-options"' in body) is expected, (gen.pk, role, address)
                assert "progress-card" in body  # everyone who sees the request sees its progress


def test_the_live_text_is_escaped(world, users, client_for):
    live.reset()
    gen = GenerationRequest.objects.create(
        story=world.pub, requested_by=users["alice"], kind=GenerationRequest.Kind.AUTHOR, engine="local",
        max_new_tokens=24, next_number=4, n=1, status=GenerationRequest.Status.RUNNING, attempts=1,
    )
    hostile = '<start_working_out>Plan <img src=x onerror="alert(1)">'
    live.publish(request_id=gen.pk, attempt=1, texts={0: hostile})
    body = client_for("alice").get(reverse("writer:request_live", args=[gen.pk])).content.decode()
    assert "<img src=x" not in body and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in body
    live.reset()
    live.publish(request_id=gen.pk, attempt=1, texts={0: hostile + "<end_working_out>\n<SOLUTION>Hi <script>alert(2)</script>"})
    body = client_for("alice").get(reverse("writer:request_live", args=[gen.pk])).content.decode()
    assert "<script>alert(2)" not in body and "&lt;script&gt;alert(2)&lt;/script&gt;" in body
    assert "onerror" not in body  # the reasoning is no longer shown once the chapter has begun


def test_a_swipe_s_draft_goes_only_to_who_may_see_it_while_it_is_written(world, users):
    live.reset()
    alice, rita = users["alice"], users["rita"]

    def swiping(user, kind, *, use_brands):  # noqa: ANN001, ANN202
        gen = finished_request(world.pub, user, kind=kind, use_brands=use_brands, next_number=4)
        option = gen.options.get(index=0)
        swipe = OptionSwipe.objects.create(option=option, requested_by=user, engine="local",
                                           status=OptionSwipe.Status.RUNNING)
        assert live.publish_swipe(swipe_id=swipe.pk, text=f"<SOLUTION>{SECRET}.")
        return option, swipe

    authors = swiping(alice, GenerationRequest.Kind.AUTHOR, use_brands=True)
    branded = swiping(rita, GenerationRequest.Kind.READER, use_brands=True)
    plain = swiping(rita, GenerationRequest.Kind.READER, use_brands=False)
    # role -> sees the draft, per running swipe; LOGIN or 404: the status alone.
    sees = {
        authors: logged_in(404, alice=True, root=True),
        branded: logged_in(404, alice=True, rita=False, root=True),  # the reader waits for the brand's review
        plain: logged_in(404, alice=True, rita=True, root=True),
    }
    clients = clients_for({**users, "max": world.max})
    with worker_holds(*(swipe for _, swipe in sees)):
        for (option, _), table in sees.items():
            url = reverse("writer:option_swipe_live", args=[option.pk])
            for role in ROLES:
                expected = table[role]
                response = clients[role].get(url)
                body = response.content.decode()
                assert SECRET not in body or expected is True, (option.pk, role)
                if expected in (LOGIN, 404):
                    assert outcome_of(response) == expected, (option.pk, role)
                    continue
                assert response.status_code == 200, (option.pk, role)  # still running: polled on
                assert (SECRET in body) is expected, (option.pk, role)
                assert (f'id="swipe-live-{option.pk}"' in body) is expected, (option.pk, role)
                assert "Writing Option 1 again" in body  # everyone who sees the request sees its progress
