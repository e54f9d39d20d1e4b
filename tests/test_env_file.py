"""The local run's .env (mesu_web/env.py `load_env_file`): `manage.py` works from a plain shell after
`./dev setup`, the real environment always wins, and the file never reaches the image."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from mesu_web.env import load_env_file

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def clean_environ(monkeypatch):
    for name in ("MESU_A", "MESU_B", "MESU_C", "MESU_D", "MESU_SET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MESU_SET", "from the environment")


def test_a_file_sets_what_the_environment_lacks_and_never_overrides_it(tmp_path, clean_environ):
    env = tmp_path / ".env"
    env.write_text(
        "# a comment\n\nMESU_A=1\nexport MESU_B = 'two words'\nMESU_C=\"x=y # not a comment\"\nMESU_D=\n"
        "MESU_SET=from the file\n",
        encoding="utf-8",
    )
    loaded = load_env_file(env)
    assert loaded == {"MESU_A": "1", "MESU_B": "two words", "MESU_C": "x=y # not a comment", "MESU_D": ""}
    assert os.environ["MESU_SET"] == "from the environment"
    for name in loaded:
        os.environ.pop(name)


def test_no_file_sets_nothing_and_a_bad_line_says_where(tmp_path, clean_environ):
    assert load_env_file(tmp_path / "missing") == {}
    bad = tmp_path / ".env"
    bad.write_text("MESU_A=1\nnot a setting\n", encoding="utf-8")
    with pytest.raises(ImproperlyConfigured, match="line 2: expected NAME=value"):
        load_env_file(bad)


def _manage_check(env_file: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))}
    env["MESU_ENV_FILE"] = str(env_file)
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_manage_py_works_from_a_plain_shell_with_the_file_dev_writes(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("# Written by ./dev\nDJANGO_DEBUG=1\n", encoding="utf-8")
    result = _manage_check(env_file)
    assert result.returncode == 0, result.stderr
    without = _manage_check(tmp_path / "none")
    assert without.returncode != 0
    assert "The environment variable DJANGO_SECRET_KEY must be set." in without.stderr


def test_dev_writes_the_file_and_the_image_never_carries_it():
    dev = (ROOT / "dev").read_text(encoding="utf-8")
    assert "DJANGO_DEBUG=1" in dev and '"$ROOT/.env"' in dev
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert ".env" in ignored and ".venv" in ignored and "var" in ignored
