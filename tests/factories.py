from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from writer import services
from writer.models import Chapter, Story

PASSWORD = "correct-horse-battery"
CHAPTER_TEXT = "Lou opened the stall at dusk. Pip was late again, as always. The rain smelled of salt."


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda i: f"user{i}")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def roles(self, create: bool, extracted: list[str] | None, **kwargs) -> None:
        self.save()
        if create and extracted is not None:
            services.user_set_roles(user=self, role_names=extracted)


class StoryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Story

    owner = factory.SubFactory(UserFactory, roles=["author"])
    title = factory.Sequence(lambda i: f"Story {i}")
    slug = factory.Sequence(lambda i: f"story-{i}")
    author_name = "Test Author"
    summary = "Two friends run a night market stall in a rainy seaside town."
    genre = "slice of life"
    tags = factory.LazyFunction(lambda: ["seaside", "friendship"])
    characters = "Lou (baker, shy); Pip (her loud best friend)."
    setting = "Porthwen, a rainy seaside town."
    intent_notes = "Cosy and funny; no villains."
    is_published = True


class ChapterFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Chapter

    story = factory.SubFactory(StoryFactory)
    number = factory.Sequence(lambda i: i + 1)
    title = factory.LazyAttribute(lambda o: f"Chapter {o.number}")
    text = factory.LazyFunction(lambda: CHAPTER_TEXT)


def story_with_chapters(*, owner=None, chapters: int = 3, **kwargs) -> Story:  # noqa: ANN001
    story = StoryFactory(owner=owner, **kwargs) if owner else StoryFactory(**kwargs)
    for number in range(1, chapters + 1):
        ChapterFactory(story=story, number=number, text=f"Chapter {number} begins. {CHAPTER_TEXT}")
    return story


def run_generation(story, user, **kwargs):  # noqa: ANN001, ANN201
    """A generation request run synchronously through the task's service; returns the request."""
    request = services.generation_request_create(story=story, user=user, enqueue=False, **kwargs)
    return services.generation_request_run(request_id=request.pk)


def live_campaign(brand, *, assets=None, **fields):  # noqa: ANN001, ANN201
    """An active campaign of `brand` running from yesterday for 30 days with `assets` in play (default: all
    its assets): matching offers only assets of live campaigns with budget left (issue 17). `fields`
    override the defaults (CPM 5.00, total budget 1,000, no daily limit, spread as fast as possible)."""
    from datetime import timedelta
    from decimal import Decimal

    from django.utils import timezone

    from brands.models import Campaign

    today = timezone.localdate()
    values = {
        "name": f"{brand.name} campaign {Campaign.objects.filter(brand=brand).count() + 1}",
        "status": Campaign.Status.ACTIVE,
        "starts_on": today - timedelta(days=1),
        "ends_on": today + timedelta(days=30),
        "budget_total": Decimal("1000"),
        "pricing": Campaign.Pricing.CPM,
        "price": Decimal("5"),
        "pacing": Campaign.Pacing.ASAP,
    }
    values.update(fields)
    campaign = Campaign.objects.create(brand=brand, **values)
    campaign.assets.set(brand.assets.all() if assets is None else assets)
    return campaign


def staff_user():  # noqa: ANN201
    """A staff user to decide brands in tests: `root` of the `users` fixture when it exists, else one made."""
    User = get_user_model()
    found = User.objects.filter(username="root", is_staff=True).first() or User.objects.filter(is_staff=True).first()
    return found or UserFactory(username="brand-staff", roles=[], is_staff=True)


def approved_brand(**fields):  # noqa: ANN003, ANN201
    """A brand made by `brands.services.brand_create` (same keywords) and approved by staff (issue 18: a new
    brand waits for staff and is never matched until then). For a test of the pending state, call
    `brand_create` itself."""
    from brands.approval import brand_approve
    from brands.services import brand_create

    brand = brand_create(**fields)
    return brand_approve(brand=brand, staff_user=staff_user())
