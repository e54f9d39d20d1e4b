"""Test-only settings and the named users of every role (as healthchecks' alice/bob/charlie)."""

from __future__ import annotations

# The environment (DJANGO_DEBUG, HF_HUB_OFFLINE, and REDIS_URL on Redis database 15, so that a running
# dev worker never takes the suite's tasks) is set in pyproject.toml's pytest `env`.
import pytest
import torch

torch.set_num_threads(1)  # two threads on a busy 2-core machine were measured 6-10x slower

pytest_plugins = ["tests.fixtures_redis", "tests.fixtures_vllm", "tests.fixtures_worker"]


@pytest.fixture(autouse=True)
def _test_settings(settings, tmp_path, tmp_path_factory):
    settings.STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins
    settings.WRITER_MAX_NEW_TOKENS = 24  # small real generations keep the suite quick on 2 cores
    settings.WRITER_REASONING_TOKENS = 16  # the reasoning phase's budget, as short
    settings.WRITER_RETRY_BACKOFF = 0.05
    # Staff forms take folders inside the data roots only (training.paths): the tests' own folders are one.
    settings.TRAINING_DATA_ROOTS = [*settings.TRAINING_DATA_ROOTS, tmp_path_factory.getbasetemp()]


@pytest.fixture
def users(db):
    """alice and bob are authors, rita and ross readers, mia a brand manager, root an admin."""
    from tests.factories import UserFactory

    return {
        "alice": UserFactory(username="alice", roles=["author"]),
        "bob": UserFactory(username="bob", roles=["author"]),
        "rita": UserFactory(username="rita", roles=["reader"]),
        "ross": UserFactory(username="ross", roles=["reader"]),
        "mia": UserFactory(username="mia", roles=["brand_manager"]),
        "root": UserFactory(username="root", roles=[], is_staff=True, is_superuser=True),
    }


@pytest.fixture
def client_for(client, users):
    """client_for("alice") -> a test client logged in as alice."""
    from django.test import Client

    def make(username: str) -> Client:
        c = Client()
        c.force_login(users[username])
        return c

    return make


@pytest.fixture
def local_engine(settings, model_dir):
    """The in-process engine on the real SmolLM2 folder."""
    settings.WRITER_ENGINE = "local"
    settings.WRITER_MODEL_PATH = model_dir
    settings.WRITER_TOKENIZER_PATH = str(model_dir)
