"""Generation quotas and fair scheduling (issue 18, item 1; writer/quotas.py): each limit refuses with its
message and the wait, per user and per address, staff-set rows raise and lower them, two requests at the
same instant are counted one after the other, the partner API answers 429, the queue serves everyone's
first request before anyone's second (read from Redis and run by a real worker), and staff see and set it
all on their page and in the admin."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
import redis
from django.conf import settings as django_settings
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from mesu_web.jobs.broker import _PRIORITY_SEP, _PRIORITY_STEPS, message_row
from tests.factories import UserFactory, story_with_chapters
from writer import quotas, services
from writer.models import GenerationQuota, GenerationRequest
from writer.quotas import QuotaExceeded
from writer.tasks import generation_request_run_task

ADDRESS = "203.0.113.7"
OTHER_ADDRESS = "198.51.100.9"
DONE = GenerationRequest.Status.SUCCEEDED
QUEUED = GenerationRequest.Status.QUEUED


@pytest.fixture
def story(users):
    return story_with_chapters(owner=users["alice"], chapters=2, slug="quota-story", is_published=True)


def ask(story, user, *, address: str | None = None, kind: str | None = None) -> GenerationRequest:  # noqa: ANN001
    """A request through the service the pages use (nothing is sent to a broker)."""
    if kind is None:
        kind = GenerationRequest.Kind.AUTHOR if story.owner_id == user.pk else GenerationRequest.Kind.READER
    return services.generation_request_create(
        story=story, user=user, kind=kind, n=1, enqueue=False, client_address=address
    )


def past(story, user, count: int, *, ago: timedelta, status: str = DONE, address: str | None = None) -> None:  # noqa: ANN001
    """`count` requests of `user` made `ago` (created_at is auto_now_add: set after)."""
    rows = GenerationRequest.objects.bulk_create(
        GenerationRequest(
            story=story, requested_by=user, kind=GenerationRequest.Kind.READER, n=1, engine="vllm",
            max_new_tokens=24, next_number=3, status=status, client_address=address,
        )
        for _ in range(count)
    )
    GenerationRequest.objects.filter(pk__in=[r.pk for r in rows]).update(created_at=timezone.now() - ago)


def refused(story, user, **kwargs) -> QuotaExceeded:  # noqa: ANN001, ANN003
    before = GenerationRequest.objects.count()
    with pytest.raises(QuotaExceeded) as caught:
        ask(story, user, **kwargs)
    assert GenerationRequest.objects.count() == before, "a refused request made a row"
    return caught.value


# --- Each limit, its message and its wait ---------------------------------------------------------------


def test_a_reader_may_have_two_requests_waiting_and_the_third_is_refused_until_one_is_done(users, story):
    rita = users["rita"]
    first = ask(story, rita)
    ask(story, rita)
    error = refused(story, rita)
    assert error.message == (
        "You have 2 chapters being written or waiting for the writer; ask again when one is done "
        "(2 at a time is the limit)."
    )
    assert (error.limit, error.scope, error.retry_after) == ("concurrent", "user", quotas.CONCURRENT_RETRY_SECONDS)
    GenerationRequest.objects.filter(pk=first.pk).update(status=DONE)
    assert ask(story, rita).status == QUEUED


def test_the_hourly_limit_names_itself_and_the_minutes_to_wait(users, story):
    rita = users["rita"]
    past(story, rita, 12, ago=timedelta(minutes=46))
    past(story, rita, 30, ago=timedelta(minutes=61))  # outside the hour, inside the day
    error = refused(story, rita)
    assert error.message == "You can ask for another chapter in 14 minutes: 12 chapters an hour is the limit."
    assert error.limit == "per_hour" and 13 * 60 < error.retry_after <= 14 * 60


def test_the_wait_is_until_enough_requests_leave_the_window(users, story):
    """Over the limit by more than one (a lowered limit): the wait is for the oldest that must leave."""
    rita = users["rita"]
    past(story, rita, 1, ago=timedelta(minutes=55))  # leaves in 5 minutes
    past(story, rita, 2, ago=timedelta(minutes=40))  # leave in 20
    GenerationQuota.objects.create(user=rita, per_hour=2)
    assert "in 20 minutes: 2 chapters an hour is the limit" in refused(story, rita).message


def test_the_daily_limit_names_itself_and_the_hours_to_wait(users, story):
    rita = users["rita"]
    past(story, rita, 60, ago=timedelta(hours=20, minutes=30))
    error = refused(story, rita)
    assert error.message == (
        "You can ask for another chapter in 3 hours 30 minutes: 60 chapters a day is the limit."
    )
    assert error.limit == "per_day" and abs(error.retry_after - 3.5 * 3600) < 60
    past(story, rita, 1, ago=timedelta(hours=25))  # older than a day: counts nowhere
    assert refused(story, rita).limit == "per_day"


def test_failed_requests_count_and_trying_one_again_counts_only_as_waiting(users, story):
    rita = users["rita"]
    past(story, rita, 2, ago=timedelta(minutes=5), status=GenerationRequest.Status.FAILED)
    past(story, rita, 2, ago=timedelta(minutes=4), status=QUEUED)
    assert refused(story, rita).limit == "concurrent"
    failed = GenerationRequest.objects.filter(requested_by=rita, status=GenerationRequest.Status.FAILED).first()
    with pytest.raises(QuotaExceeded, match="2 at a time"):
        services.generation_request_retry(request=failed, user=rita)
    failed.refresh_from_db()
    assert failed.status == GenerationRequest.Status.FAILED
    GenerationRequest.objects.filter(requested_by=rita, status=QUEUED).update(status=DONE)
    assert services.generation_request_retry(request=failed, user=rita).status == QUEUED


# --- Roles, staff-set rows ------------------------------------------------------------------------------


def test_the_author_on_their_own_story_and_staff_have_larger_limits(users, story):
    alice, root = users["alice"], users["root"]
    for _ in range(4):
        ask(story, alice)
    assert "(4 at a time is the limit)" in refused(story, alice).message
    # Usage is the person's, the limit the story's: on another's story alice is a reader (2 at a time).
    other = story_with_chapters(owner=users["bob"], chapters=1, is_published=True)
    GenerationRequest.objects.filter(requested_by=alice).update(status=DONE)
    ask(other, alice)
    ask(other, alice)
    assert "(2 at a time is the limit)" in refused(other, alice).message
    for _ in range(10):
        ask(story, root, kind=GenerationRequest.Kind.READER)
    assert "(10 at a time is the limit)" in refused(story, root, kind=GenerationRequest.Kind.READER).message
    assert quotas.user_limits(user=root, own_story=False) == quotas.Limits(10, 120, 1000)
    assert quotas.user_limits(user=alice, own_story=True) == quotas.Limits(4, 30, 200)
    assert quotas.user_limits(user=users["rita"], own_story=False) == quotas.Limits(2, 12, 60)


def test_a_staff_set_row_raises_and_lowers_a_users_limits_field_by_field(users, story):
    rita = users["rita"]
    past(story, rita, 12, ago=timedelta(minutes=10))
    assert refused(story, rita).limit == "per_hour"
    quota = GenerationQuota.objects.create(user=rita, per_hour=20, note="beta tester")
    ask(story, rita)  # raised
    ask(story, rita)
    # concurrent is empty on the row: the reader's default (2) still holds
    assert refused(story, rita).limit == "concurrent"
    GenerationRequest.objects.filter(requested_by=rita).update(status=DONE)
    quota.per_hour = 14
    quota.save()
    assert "14 chapters an hour is the limit" in refused(story, rita).message  # lowered
    quota.per_hour, quota.concurrent = None, 0
    quota.save()
    error = refused(story, rita)
    assert error.message == "Asking for chapters is turned off for your account; staff can tell you why."


# --- The address ---------------------------------------------------------------------------------------


def test_the_address_limit_holds_every_user_behind_one_address_together(users, story):
    rita, ross, bob = users["rita"], users["ross"], users["bob"]
    past(story, rita, 10, ago=timedelta(minutes=30), address=ADDRESS)
    past(story, ross, 10, ago=timedelta(minutes=20), address=ADDRESS)
    past(story, UserFactory(roles=["reader"]), 20, ago=timedelta(minutes=15), address=ADDRESS)
    # bob has asked for nothing, but his address has asked for 40 this hour
    error = refused(story, bob, address=ADDRESS)
    assert error.message == (
        "You can ask for another chapter in 30 minutes: 40 chapters an hour from one address is the limit."
    )
    assert (error.limit, error.scope) == ("per_hour", "address")
    assert ask(story, bob, address=OTHER_ADDRESS).client_address == OTHER_ADDRESS
    assert ask(story, bob).client_address is None  # no address (the partner API's): the user's limits only
    # staff are not held by their address
    assert ask(story, users["root"], address=ADDRESS, kind=GenerationRequest.Kind.READER).pk


def test_the_address_concurrent_limit_counts_requests_of_several_users(users, story):
    for _ in range(3):
        reader = UserFactory(roles=["reader"])
        ask(story, reader, address=ADDRESS)
        ask(story, reader, address=ADDRESS)
    error = refused(story, users["ross"], address=ADDRESS)
    assert error.message == (
        "6 chapters asked from your network are being written or waiting for the writer; ask again when one "
        "is done (6 at a time from one address is the limit)."
    )
    assert error.scope == "address"


@pytest.mark.parametrize(
    ("given", "kept"),
    [("203.0.113.7", "203.0.113.7"), ("2001:db8::1", "2001:db8::1"), ("unknown", None), ("", None),
     ("1.2.3.4, 5.6.7.8", None), (" 10.0.0.1 ", "10.0.0.1")],
)
def test_only_a_valid_address_is_kept(users, story, given, kept):
    assert ask(story, users["rita"], address=given).client_address == kept


def test_the_pages_pass_the_client_address_and_show_the_refusal(users, story, client_for):
    rita = client_for("rita")
    url = reverse("writer:personalise", args=[story.slug])
    for _ in range(2):
        assert rita.post(url, {"preference": "rain"}, REMOTE_ADDR=ADDRESS).status_code == 302
    assert set(GenerationRequest.objects.values_list("client_address", flat=True)) == {ADDRESS}
    response = rita.post(url, {"preference": "rain"}, REMOTE_ADDR=ADDRESS, follow=True)
    assert "You have 2 chapters being written or waiting" in response.content.decode()
    assert GenerationRequest.objects.count() == 2
    alice = client_for("alice")
    generate = reverse("writer:generate", args=[story.slug])
    assert alice.post(generate, {"n": "1"}, REMOTE_ADDR=OTHER_ADDRESS).status_code == 302
    assert GenerationRequest.objects.filter(requested_by=users["alice"]).get().client_address == OTHER_ADDRESS


def test_the_story_page_shows_what_is_left_beside_the_button(users, story, client_for):
    url = reverse("writer:story_detail", args=[story.slug])
    assert "12 of 12 this hour left" in client_for("rita").get(url).content.decode()
    ask(story, users["rita"])
    assert "11 of 12 this hour left" in client_for("rita").get(url).content.decode()
    assert "30 of 30 this hour left" in client_for("alice").get(url).content.decode()
    past(story, users["ross"], 57, ago=timedelta(hours=3))
    assert "3 of 60 today left" in client_for("ross").get(url).content.decode()  # the tighter one
    ask(story, users["rita"])
    page = client_for("rita").get(url).content.decode()
    assert "2 chapters being written or waiting: ask again when one is done." in page
    assert "this hour left" not in Client().get(url).content.decode()  # logged out: no form, no allowance
    GenerationQuota.objects.create(user=users["rita"], concurrent=3, per_hour=20)  # her own limits
    assert "18 of 20 this hour left" in client_for("rita").get(url).content.decode()


# --- Two at the same instant -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_requests_at_the_same_instant_are_counted_one_after_the_other(users, story, monkeypatch):
    """rita has one request waiting (2 allowed) and sends two at once. Counting is slowed down so that
    both would count 1 and pass without the lock; with it, exactly one passes."""
    rita = users["rita"]
    ask(story, rita)
    count = quotas._usage_of

    def slow_count(rows, now):  # noqa: ANN001, ANN202
        usage = count(rows, now)
        time.sleep(0.5)
        return usage

    monkeypatch.setattr(quotas, "_usage_of", slow_count)
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def send() -> None:
        try:
            start.wait()
            ask(story, rita)
            outcomes.append("made")
        except QuotaExceeded as exc:
            outcomes.append(exc.limit)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["concurrent", "made"]
    assert GenerationRequest.objects.filter(requested_by=rita).count() == 2


# --- The partner API -------------------------------------------------------------------------------------


def test_the_partner_api_answers_429_with_retry_after_over_the_contacts_quota(users):
    from tests.brands.test_api import build_api_world, call

    w = build_api_world(users)
    url = f"/api/v1/stories/{w.open.slug}/requests"
    past(w.open, w.shopbot, 2, ago=timedelta(minutes=1), status=QUEUED)
    response = call("POST", url, w.keys1["requests:write"], {"brand": w.a.slug})
    assert response.status_code == 429, response.content
    assert response["Retry-After"] == str(quotas.CONCURRENT_RETRY_SECONDS)
    assert "(2 at a time is the limit)" in response.json()["detail"]
    # Staff give the partner's contact its own limits: it goes through, without an address.
    GenerationQuota.objects.create(user=w.shopbot, concurrent=50, per_hour=500, per_day=5000, note="Shop app")
    response = call("POST", url, w.keys1["requests:write"], {"brand": w.a.slug})
    assert response.status_code == 202, response.content
    assert GenerationRequest.objects.get(pk=response.json()["id"]).client_address is None
    GenerationQuota.objects.filter(user=w.shopbot).update(per_hour=3)
    response = call("POST", url, w.keys1["requests:write"], {"brand": w.a.slug})
    assert response.status_code == 429
    assert 3500 < int(response["Retry-After"]) <= 3600


# --- Fair scheduling ---------------------------------------------------------------------------------------


def test_the_priority_grows_with_the_requests_a_user_already_has_waiting(users, story):
    alice = users["alice"]
    assert [quotas.queue_priority(user_id=alice.pk)] == [0]
    priorities = []
    for _ in range(4):
        request = ask(story, alice)
        priorities.append(quotas.queue_priority(user_id=alice.pk, exclude_pk=request.pk))
    assert priorities == [0, 3, 6, 9]
    past(story, alice, 3, ago=timedelta(minutes=1), status=QUEUED)
    assert quotas.queue_priority(user_id=alice.pk) == 9  # never past the lowest step


def test_the_broker_reads_the_priority_lists_the_settings_make():
    """mesu_web/jobs/broker.py (the recovery sweep) reads the lists kombu writes with these settings."""
    options = django_settings.CELERY_BROKER_TRANSPORT_OPTIONS
    assert options["sep"] == _PRIORITY_SEP
    assert [step for step in options["priority_steps"] if step] == list(_PRIORITY_STEPS)
    assert quotas.PRIORITY_LOWEST == max(options["priority_steps"])
    assert options["visibility_timeout"] > django_settings.CELERY_TASK_TIME_LIMIT


def _queued_lists(url: str) -> dict[int, list[int]]:
    """{priority: [request ids in the order a worker pops them]} of the generation queue in Redis."""
    client = redis.Redis.from_url(url)
    try:
        found = {}
        for step in (0, *_PRIORITY_STEPS):
            key = "generation" if step == 0 else f"generation{_PRIORITY_SEP}{step}"
            raws = client.lrange(key, 0, -1)  # kombu LPUSHes and a worker BRPOPs: the oldest is last
            found[step] = [message_row(json.loads(raw))[1] for raw in reversed(raws)]
        return found
    finally:
        client.close()


def _flood(story, users) -> dict[str, int]:  # noqa: ANN001
    """alice asks three times, then rita once: enqueued on commit (transactional tests commit at once)."""
    alice, rita = users["alice"], users["rita"]
    ids = {}
    for name in ("alice 1", "alice 2", "alice 3"):
        ids[name] = services.generation_request_create(story=story, user=alice, n=1).pk
    ids["rita 1"] = services.generation_request_create(
        story=story, user=rita, kind=GenerationRequest.Kind.READER, n=1
    ).pk
    return ids


@pytest.mark.django_db(transaction=True)
def test_a_flooding_users_third_request_waits_behind_another_users_first_in_redis(users, story, broker):
    ids = _flood(story, users)
    lists = _queued_lists(broker)
    assert lists == {0: [ids["alice 1"], ids["rita 1"]], 3: [ids["alice 2"]], 6: [ids["alice 3"]], 9: []}
    # What a worker does: BRPOP over the lists in step order, one message at a time.
    client = redis.Redis.from_url(broker)
    keys = ["generation", *(f"generation{_PRIORITY_SEP}{step}" for step in _PRIORITY_STEPS)]
    order = []
    while (popped := client.brpop(keys, timeout=1)) is not None:
        order.append(message_row(json.loads(popped[1]))[1])
    client.close()
    assert order == [ids["alice 1"], ids["rita 1"], ids["alice 2"], ids["alice 3"]]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_serves_everyones_first_request_before_anyones_third(users, story, broker, settings, tmp_path):
    from tests.fixtures_worker import launch_worker, worker_env
    from writer.engines.vllm_server import stop_process_group

    settings.WRITER_BASE_URL = "http://127.0.0.1:9/v1"  # nothing listens: each run fails at once, after it starts
    settings.WRITER_MAX_RETRIES = 0
    ids = _flood(story, users)  # all four wait in Redis before the worker starts
    log = tmp_path / "worker.log"
    proc = launch_worker(
        ["celery", "-A", "mesu_web", "worker"], name=f"quota-{time.monotonic_ns()}@localhost", queues="generation",
        env=worker_env(broker_url=broker), log_path=log, ready_within=90,
    )
    try:
        deadline = time.monotonic() + 120
        while GenerationRequest.objects.filter(pk__in=ids.values(), started_at__isnull=True).exists():
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.3)
    finally:
        stop_process_group(proc, timeout=20)
    started = dict(GenerationRequest.objects.filter(pk__in=ids.values()).values_list("pk", "started_at"))
    order = sorted(ids, key=lambda name: started[ids[name]])
    assert order == ["alice 1", "rita 1", "alice 2", "alice 3"], log.read_text(errors="replace")[-3000:]
    assert generation_request_run_task.name in log.read_text(errors="replace")


# --- Staff: the page and the admin -------------------------------------------------------------------------


def test_staff_see_the_heaviest_users_with_usage_and_limits_and_set_a_users_quota(users, story, client_for):
    rita, alice = users["rita"], users["alice"]
    past(story, rita, 9, ago=timedelta(minutes=20), address=ADDRESS)
    past(story, rita, 1, ago=timedelta(minutes=1), status=QUEUED, address=ADDRESS)
    past(story, alice, 2, ago=timedelta(hours=3))
    root = client_for("root")
    page = root.get(reverse("writer:quota_list"))
    assert page.status_code == 200
    lines = [(line.username, line.usage) for line, _ in page.context["rows"]]
    assert lines == [("rita", quotas.Usage(1, 10, 10)), ("alice", quotas.Usage(0, 0, 2))]
    html = page.content.decode()
    assert ADDRESS in html and "others' stories 2 · 12 · 60" in html and "own stories 4 · 30 · 200" in html

    response = root.post(
        reverse("writer:quota_set"), {"username": "rita", "per_hour": "20", "per_day": "", "note": "beta  tester"}
    )
    assert response.status_code == 302
    quota = GenerationQuota.objects.get(user=rita)
    assert (quota.concurrent, quota.per_hour, quota.per_day, quota.note) == (None, 20, None, "beta tester")
    assert quota.updated_by == users["root"]
    line = next(line for line, _ in root.get(reverse("writer:quota_list")).context["rows"] if line.username == "rita")
    assert line.reader == quotas.Limits(2, 20, 60)
    # Everything empty: back to the defaults (the row goes).
    assert root.post(reverse("writer:quota_set"), {"username": "rita"}).status_code == 302
    assert not GenerationQuota.objects.filter(user=rita).exists()
    bad = root.post(reverse("writer:quota_set"), {"username": "nobody", "per_hour": "-1"})
    assert bad.status_code == 400 and "No user named" in bad.content.decode()


def test_only_staff_reach_the_quota_page_and_the_admin(users, story, client_for):
    for name in ("alice", "rita", "mia"):
        client = client_for(name)
        for url in (reverse("writer:quota_list"), reverse("admin:writer_generationquota_changelist")):
            response = client.get(url)
            assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login")), url
        client.post(reverse("writer:quota_set"), {"username": name, "per_hour": "1000"})
        assert not GenerationQuota.objects.exists()
    with pytest.raises(PermissionDenied):  # the service refuses non-staff too
        quotas.quota_set(user=users["rita"], staff_user=users["alice"], concurrent=9, per_hour=9, per_day=9)
    assert not GenerationQuota.objects.exists()


def test_the_admin_lists_quotas_with_usage_and_records_who_set_them(users, story, client_for):
    rita = users["rita"]
    past(story, rita, 3, ago=timedelta(minutes=30))
    past(story, rita, 1, ago=timedelta(minutes=2), status=QUEUED)
    past(story, rita, 2, ago=timedelta(hours=5))
    GenerationQuota.objects.create(user=rita, per_hour=40)
    root = client_for("root")
    listing = root.get(reverse("admin:writer_generationquota_changelist")).content.decode()
    assert "1 / 4 / 6" in listing  # now / last hour / last day
    add = root.post(
        reverse("admin:writer_generationquota_add"),
        {"user": users["ross"].pk, "concurrent": "1", "per_hour": "", "per_day": "", "note": "slow down"},
    )
    assert add.status_code == 302, add.content.decode()[:2000]
    quota = GenerationQuota.objects.get(user=users["ross"])
    assert quota.updated_by == users["root"] and quota.concurrent == 1
    change = root.get(reverse("admin:writer_generationquota_change", args=[quota.pk])).content.decode()
    assert "0 of 1 at once, 0 of 12 in the last hour, 0 of 60 in the last day" in change
