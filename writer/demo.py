"""Demo data: one user per role and two published sample stories. Safe to run again and again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from brands.demo import seed_brands
from writer import roles, services
from writer.models import Story
from writer.text_input import decode_text_file

SAMPLES_DIR = Path(settings.BASE_DIR) / "samples"


@dataclass(frozen=True)
class DemoUser:
    username: str
    password: str
    role: str  # a group name, or "admin"


# Demo credentials are printed by seed_demo; they exist only in demo databases.
DEMO_USERS = (
    DemoUser("ava", "ava-writes-stories", roles.AUTHOR),
    DemoUser("remy", "remy-reads-stories", roles.READER),
    DemoUser("bree", "bree-minds-brands", roles.BRAND_MANAGER),
    DemoUser("admin", "admin-runs-mesu", "admin"),
)

DEMO_STORIES = (
    {
        "file": "the_lighthouse_keepers_daughter.md",
        "title": "The Lighthouse Keeper's Daughter",
        "author_name": "Ava Demo",
        "genre": "coming-of-age",
        "tags": ["seaside", "found family", "slow burn"],
        "summary": "Wren Calloway, sixteen, lives in Gull Point lighthouse with her caretaker dad. When the council "
        "puts it up for sale, she, her best friend Jas and summer visitor Ravi fight to keep it, and a storm and "
        "her grandmother's green logbook turn up a secret: 'The second light is not for ships.'",
        "characters": "Wren Calloway (16, films sunrises, quietly stubborn, secretly applying to art school); "
        "Dad (the caretaker, keeps his worries folded in his shirt pocket); Jas Okafor (best friend, runs a "
        "vintage stall and everyone's life); Ravi (16, summer visitor, surveys rock-pool crabs, earnest); "
        "Mum (in the city for four years, knows about the second light); Mrs Hale (council leader); "
        "Dilys (retired engineer).",
        "setting": "Gull Point: a lighthouse (91 steps) and keeper's cottage above a small harbour town with "
        "Quay Street, a caravan park and a rock pool under the tower wall; today.",
        "intent_notes": "Warm, funny, GenZ voice without cringe; bittersweet, never tragic. Wren solves things "
        "herself. The sea is a character. Open threads: Mum arrives Saturday; the cross on the cliff to the "
        "north; what the second light is for.",
    },
    {
        "file": "neon_rain.txt",
        "title": "Neon Rain",
        "author_name": "Ava Demo",
        "genre": "cyberpunk",
        "tags": ["cyberpunk", "found family", "AI"],
        "summary": "In Meridian Stack, where Halcyon Dynamics has made it rain for 612 days, courier Juno Vale "
        "learns the shard she carries is the last piece of an uploaded woman, and that Static, the cheap "
        "assistant joking in her ear, is another piece of her.",
        "characters": "Juno Vale (courier, keeps her file short, loyal, dry); Static (earpiece assistant, jokes, "
        "always says goodnight; a fragment of Dr Mireille Statham, Halcyon's Subject 01); Oki / Okonkwo "
        "Adeyemi (62, hardware mechanic in the Glass Market, never asks questions); Corin Vance (Halcyon's "
        "head of security); Haskell (the client, found dead).",
        "setting": "Meridian Stack: neon levels, hanging bridges, the Glass Market inside a dead aquarium on "
        "Level Two, and the flooded Undertow at the bottom. Halcyon owns the lifts, the water and the rain towers.",
        "intent_notes": "Fast, warm, never cynical; friendship over romance; the city is never fully evil. "
        "Open threads: what Static became in the network, how Halcyon answers, whether Juno hears him again.",
    },
)


@transaction.atomic
def seed_demo() -> list[DemoUser]:
    User = get_user_model()
    users = {}
    for demo in DEMO_USERS:
        user, _ = User.objects.get_or_create(username=demo.username)
        user.set_password(demo.password)
        user.is_staff = user.is_superuser = demo.role == "admin"
        user.save()
        services.user_set_roles(user=user, role_names=[] if demo.role == "admin" else [demo.role])
        users[demo.username] = user
    author = users["ava"]
    for spec in DEMO_STORIES:
        if Story.objects.filter(owner=author, title=spec["title"]).exists():
            continue
        path = SAMPLES_DIR / spec["file"]
        text = decode_text_file(path.read_bytes(), filename=path.name, max_bytes=settings.MESU_UPLOAD_MAX_BYTES)
        metadata = {k: v for k, v in spec.items() if k not in ("file", "title")}
        story = services.book_import(owner=author, text=text, title=spec["title"], **metadata)
        services.story_set_published(story=story, published=True)
    # The seaside story takes brand placements; the other stays plain (authors opt in, out by default).
    lighthouse = Story.objects.get(owner=author, title=DEMO_STORIES[0]["title"])
    seed_brands(users["bree"], opt_in_stories=[lighthouse])
    return list(DEMO_USERS)
