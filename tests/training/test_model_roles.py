"""Which model plays each role: the JUDGE_* settings, the judge built from them, the "Models in use"
panel of the training pages (no key, no URL credentials), and judge_pairs judging with them."""

from __future__ import annotations

import io
import json
import os
import runpy
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.urls import reverse

from mesu_web.errors import ApplicationError
from tests.fixtures_training import write_dataset
from tests.training.test_judge import CLOSE, FAR, pair
from training import selectors
from training.judge import judge_engine
from training.models import WriterAdapter
from training.teacher import url_without_credentials
from writer.engines import get_engine
from writer.engines.local import LocalEngine
from writer.engines.vllm import VLLMEngine

SETTINGS_FILE = Path(__file__).resolve().parents[2] / "mesu_web" / "settings.py"
WRITER_KEY = "sk-writer-ROLES-5e1d7a"
TEACHER_KEY = "sk-teacher-ROLES-0b9c3f"
JUDGE_KEY = "sk-judge-ROLES-8a4e2d"


def settings_from(monkeypatch, tmp_path, **env: str) -> dict:
    """The settings module run afresh in an environment with only `env` among the WRITER_*, TEACHER_* and
    JUDGE_* variables (and no .env file)."""
    for name in list(os.environ):
        if name.startswith(("WRITER_", "TEACHER_", "JUDGE_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MESU_ENV_FILE", str(tmp_path / "no.env"))
    monkeypatch.setenv("DJANGO_DEBUG", "1")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(SETTINGS_FILE))


WRITER_ENV = {
    "WRITER_ENGINE": "local",
    "WRITER_BASE_URL": "http://writer.example:8001/v1",
    "WRITER_API_KEY": WRITER_KEY,
    "WRITER_MODEL": "qwen2.5-coder-0.5b",
    "WRITER_MODEL_PATH": "/models/qwen2.5-coder-0.5b",
}


def test_judge_settings_default_to_the_writers(monkeypatch, tmp_path):
    s = settings_from(monkeypatch, tmp_path, **WRITER_ENV)
    assert s["JUDGE_ENGINE"] == "local"
    assert s["JUDGE_BASE_URL"] == "http://writer.example:8001/v1"
    assert s["JUDGE_MODEL"] == "qwen2.5-coder-0.5b"
    assert s["JUDGE_MODEL_PATH"] == Path("/models/qwen2.5-coder-0.5b")
    assert s["JUDGE_API_KEY"] == ""  # secrets have no default (the judge engine borrows the writer's key)


def test_judge_settings_are_read_from_the_environment(monkeypatch, tmp_path):
    s = settings_from(
        monkeypatch, tmp_path, **WRITER_ENV, JUDGE_ENGINE="vllm", JUDGE_BASE_URL="https://judge.example/v1",
        JUDGE_API_KEY=JUDGE_KEY, JUDGE_MODEL="qwen2.5-coder-1.5b", JUDGE_MODEL_PATH="/models/judge",
    )  # fmt: skip
    assert (s["JUDGE_ENGINE"], s["JUDGE_BASE_URL"], s["JUDGE_API_KEY"]) == ("vllm", "https://judge.example/v1", JUDGE_KEY)
    assert (s["JUDGE_MODEL"], s["JUDGE_MODEL_PATH"]) == ("qwen2.5-coder-1.5b", Path("/models/judge"))
    assert s["WRITER_ENGINE"] == "local" and s["WRITER_MODEL"] == "qwen2.5-coder-0.5b"  # the writer keeps its own
    with pytest.raises(ImproperlyConfigured, match="JUDGE_ENGINE='openai' is not one of vllm, local"):
        settings_from(monkeypatch, tmp_path, JUDGE_ENGINE="openai")


# --- The judge engine ----------------------------------------------------------------------------


def test_the_judge_engine_is_built_from_the_judge_settings_without_touching_the_writers(settings, tmp_path):
    settings.WRITER_ENGINE = "local"
    settings.WRITER_BASE_URL = "http://127.0.0.1:8001/v1"
    settings.WRITER_API_KEY = WRITER_KEY
    settings.WRITER_MODEL = "smollm2"
    settings.JUDGE_ENGINE = "vllm"
    settings.JUDGE_BASE_URL = "https://judge.example/v1/"
    settings.JUDGE_API_KEY = ""
    settings.JUDGE_MODEL = "qwen2.5-coder-1.5b"
    judge = judge_engine()
    assert isinstance(judge, VLLMEngine)
    assert (judge.settings.base_url, judge.settings.model) == ("https://judge.example/v1", "qwen2.5-coder-1.5b")
    assert judge.settings.api_key == ""  # the writer's key never goes to another host
    assert judge.settings.timeout == settings.WRITER_TIMEOUT  # what the judge does not name is the writer's
    settings.JUDGE_API_KEY = JUDGE_KEY
    assert judge_engine().settings.api_key == JUDGE_KEY
    # On the writer's own server, with no key of its own, the judge sends the writer's.
    settings.JUDGE_BASE_URL, settings.JUDGE_API_KEY = "http://127.0.0.1:8001/v1", ""
    assert judge_engine().settings.api_key == WRITER_KEY
    # The flags override: a served name for vllm, a folder for local.
    assert judge_engine(model="other").settings.model == "other"
    folder = tmp_path / "qwen2.5-coder-0.5b"
    local = judge_engine(engine="local", model=str(folder))
    assert isinstance(local, LocalEngine)
    assert (local.settings.model_path, local.settings.model_name) == (str(folder), "qwen2.5-coder-0.5b")
    settings.JUDGE_ENGINE, settings.JUDGE_MODEL_PATH, settings.JUDGE_MODEL = "local", folder, "judge"
    assert (judge_engine().settings.model_path, judge_engine().settings.model_name) == (str(folder), "judge")
    # Nothing of the writer changed: its settings, and the engine the writer gets.
    assert (settings.WRITER_MODEL, settings.WRITER_BASE_URL) == ("smollm2", "http://127.0.0.1:8001/v1")
    assert get_engine("vllm").settings.model == "smollm2"
    assert get_engine("local").settings.model_path == str(settings.WRITER_MODEL_PATH)
    with pytest.raises(ApplicationError, match="choose one of: local, vllm"):
        judge_engine(engine="gpt")


# --- The selector and the panel ------------------------------------------------------------------


@pytest.fixture
def roles_settings(settings, tmp_path):
    settings.WRITER_ENGINE = "vllm"
    settings.WRITER_BASE_URL = "https://writer:pa55word@writer.example:8443/v1?api_key=querysecret"
    settings.WRITER_API_KEY = WRITER_KEY
    settings.WRITER_MODEL = "smollm2"
    settings.WRITER_MODEL_PATH = tmp_path / "models" / "smollm2"
    settings.WRITER_ADAPTER_DIR = tmp_path / "adapters"
    settings.WRITER_DEFAULT_ADAPTER = ""
    settings.TEACHER_ENGINE = "openai"
    settings.TEACHER_BASE_URL = "https://bob:s3cret@api.venice.ai/api/v1"
    settings.TEACHER_API_KEY = TEACHER_KEY
    settings.TEACHER_MODEL = "deepseek-r1-671b"
    settings.JUDGE_ENGINE = "local"
    settings.JUDGE_BASE_URL = "https://judge:hunter2@judge.example/v1"
    settings.JUDGE_API_KEY = JUDGE_KEY
    settings.JUDGE_MODEL = "the-judge"
    settings.JUDGE_MODEL_PATH = tmp_path / "models" / "qwen2.5-coder-1.5b"
    return settings


@pytest.mark.django_db
def test_model_roles_names_each_role_without_credentials(roles_settings, tmp_path):
    models = tmp_path / "models"
    roles = selectors.model_roles()
    assert roles == [
        {"role": "Writer (base model)", "engine": "vllm", "model": "smollm2",
         "where": "https://writer.example:8443/v1", "packaged": "smollm2", "note": ""},
        {"role": "Distillation teacher", "engine": "openai", "model": "deepseek-r1-671b",
         "where": "https://api.venice.ai/api/v1", "packaged": "", "note": ""},
        {"role": "Pairwise judge", "engine": "local", "model": "the-judge",
         "where": str(models / "qwen2.5-coder-1.5b"), "packaged": "qwen2.5-coder-1.5b", "note": ""},
    ]  # fmt: skip
    # An active adapter is a role of its own, with the packaged base it was trained on; the local
    # teacher is the writer's in-process model.
    WriterAdapter.objects.create(
        name="nightly", base_model=str(models / "qwen2.5-coder-0.5b"), path=str(tmp_path / "adapters" / "nightly"),
        is_active=True,
    )  # fmt: skip
    roles_settings.TEACHER_ENGINE = "local"
    roles = selectors.model_roles()
    assert [r["role"] for r in roles] == ["Writer (base model)", "Active adapter", "Distillation teacher", "Pairwise judge"]
    assert roles[1] == {
        "role": "Active adapter", "engine": "vllm", "model": "nightly", "where": str(tmp_path / "adapters" / "nightly"),
        "packaged": "qwen2.5-coder-0.5b", "note": "LoRA on the writer's base",
    }  # fmt: skip
    assert roles[2] == {
        "role": "Distillation teacher", "engine": "local", "model": "smollm2", "where": str(models / "smollm2"),
        "packaged": "smollm2", "note": "",
    }  # fmt: skip
    # A judge on a server is known by its served name, with the URL's credentials cut.
    roles_settings.JUDGE_ENGINE = "vllm"
    roles_settings.JUDGE_MODEL = "Qwen2.5-Coder-0.5B"
    judge = selectors.model_roles()[-1]
    assert (judge["where"], judge["packaged"]) == ("https://judge.example/v1", "qwen2.5-coder-0.5b")
    text = json.dumps(selectors.model_roles())
    for secret in (WRITER_KEY, TEACHER_KEY, JUDGE_KEY, "pa55word", "querysecret", "s3cret", "hunter2"):
        assert secret not in text


def test_url_without_credentials_and_packaged_keys():
    assert url_without_credentials("https://u:p@host:8000/v1?key=x#f") == "https://host:8000/v1"
    assert url_without_credentials("http://127.0.0.1:8001/v1") == "http://127.0.0.1:8001/v1"
    assert selectors.packaged_model_key("/srv/models/SmolLM2/") == "smollm2"
    assert selectors.packaged_model_key("qwen2.5-coder-1.5b.gguf") == "qwen2.5-coder-1.5b"
    assert selectors.packaged_model_key("smollm2-360m") == ""  # a near name is another model
    assert selectors.packaged_model_key("") == ""


@pytest.mark.django_db
def test_the_training_pages_show_the_models_in_use_and_no_secret(roles_settings, client_for):
    roles_settings.JUDGE_MODEL = "<script>alert('judge')</script>"
    for name in ("training:job_list", "training:leaderboard", "training:adapter_list"):
        response = client_for("root").get(reverse(name))
        assert response.status_code == 200
        page = response.content.decode()
        assert "Models in use" in page
        assert "https://writer.example:8443/v1" in page and "https://api.venice.ai/api/v1" in page
        assert "deepseek-r1-671b" in page and "qwen2.5-coder-1.5b" in page
        assert "&lt;script&gt;alert(&#x27;judge&#x27;)&lt;/script&gt;" in page  # escaped, not run
        assert "<script>alert(" not in page
        for secret in (WRITER_KEY, TEACHER_KEY, JUDGE_KEY, "pa55word", "querysecret", "s3cret", "hunter2"):
            assert secret not in page, (name, secret)


# --- judge_pairs judges with the JUDGE_* settings ------------------------------------------------


@pytest.mark.slow
def test_judge_pairs_uses_the_judge_settings(settings, model_dir, tmp_path):
    # The writer points at a server nobody runs: judging through the writer's settings would fail.
    settings.WRITER_ENGINE = "vllm"
    settings.WRITER_BASE_URL = "http://127.0.0.1:9/v1"
    settings.JUDGE_ENGINE = "local"
    settings.JUDGE_MODEL_PATH = model_dir
    settings.JUDGE_MODEL = "judge-smollm2"
    rows = [pair("lighthouse", 1).to_json()]
    dataset = write_dataset(tmp_path / "ds", rows, split="test")
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps({"book": "lighthouse", "k": 1, "text": CLOSE}) + "\n")
    b.write_text(json.dumps({"book": "lighthouse", "k": 1, "text": FAR}) + "\n")
    args = ["judge_pairs", "--dataset", str(dataset), "--a", str(a), "--b", str(b), "--chapter-tokens", "60"]
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    summary = json.loads(out.getvalue())
    assert summary["model"] == "judge-smollm2" and summary["pairs"] == 1
    assert summary["wins"] + summary["losses"] + summary["ties"] + summary["no_verdict"] == 1
    # The flags still win: a folder for the local engine, reported by its name.
    out = io.StringIO()
    call_command(*args, "--engine", "local", "--model", str(model_dir), stdout=out, stderr=io.StringIO())
    assert json.loads(out.getvalue())["model"] == model_dir.name
    assert settings.WRITER_ENGINE == "vllm" and settings.WRITER_BASE_URL == "http://127.0.0.1:9/v1"
