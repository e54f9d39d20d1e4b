"""Session fixtures for the real models: the SmolLM2 folder, a random LoRA, a real vLLM CPU server.

The server is the expensive one (~60-90 s to start on 2 cores, ~5 GB of RAM), so it is started once
per session, and reused when one already answers (MESU_TEST_VLLM_URL, or port 8011 left running).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from writer.engines.vllm_server import ServerStartError, server_is_up, start_vllm_server, stop_process_group

VLLM_TEST_PORT = 8011
VLLM_START_TIMEOUT = 240  # seconds; a cold start on the 2-core box takes 60-90
TEST_ADAPTER_NAME = "test-lora"


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The base model's Hugging Face folder at settings.WRITER_MODEL_PATH (made from the GGUF once)."""
    from writer.model_files import prepare_model

    return prepare_model(Path(settings.WRITER_MODEL_PATH))


@pytest.fixture(scope="session")
def lora_adapter_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA (r=8 on q_proj, v_proj) with random non-zero weights; also copied to
    settings.WRITER_ADAPTER_DIR/test-lora, where resolve_adapter("test-lora") finds it.

    Seeded, so every session makes the same weights: a server that loaded "test-lora" in an earlier
    session serves the same adapter.
    """
    from tests.fixtures_training import make_random_lora

    folder = make_random_lora(model_dir, tmp_path_factory.mktemp("lora") / TEST_ADAPTER_NAME, r=8, seed=0)
    # A copy, not a symlink: the tmp folder is deleted after a few sessions, a copy stays valid.
    named = Path(settings.WRITER_ADAPTER_DIR) / TEST_ADAPTER_NAME
    named.parent.mkdir(parents=True, exist_ok=True)
    if named.is_symlink() or named.is_file():
        named.unlink()
    shutil.copytree(folder, named, dirs_exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def lora_adapter_name(lora_adapter_dir: Path) -> str:
    """The name of the test LoRA in settings.WRITER_ADAPTER_DIR."""
    return TEST_ADAPTER_NAME


@pytest.fixture(scope="session")
def vllm_server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL (…/v1) of a real vLLM CPU server serving model_dir as "smollm2" with LoRA on."""
    url = os.environ.get("MESU_TEST_VLLM_URL")
    if url:
        yield url.rstrip("/")
        return
    root = f"http://127.0.0.1:{VLLM_TEST_PORT}"
    if server_is_up(root):
        yield f"{root}/v1"
        return
    log_path = tmp_path_factory.mktemp("vllm") / "server.log"
    try:
        proc, _ = start_vllm_server(model_dir, VLLM_TEST_PORT, log_path, timeout=VLLM_START_TIMEOUT)
    except ServerStartError as exc:
        pytest.fail(str(exc))
    try:
        yield f"{root}/v1"
    finally:
        stop_process_group(proc)


@pytest.fixture
def vllm_settings(settings, vllm_server: str, model_dir: Path):
    """Django settings pointing the vllm engine at the test server, with the engine caches cleared."""
    from writer.engines import vllm

    settings.WRITER_ENGINE = "vllm"
    settings.WRITER_BASE_URL = vllm_server
    settings.WRITER_API_KEY = ""
    settings.WRITER_MODEL = os.environ.get("MESU_TEST_VLLM_MODEL", "smollm2")
    settings.WRITER_TOKENIZER_PATH = str(model_dir)
    settings.WRITER_TIMEOUT = 120.0  # seconds: generous for 3 x 24 tokens on a busy 2-core box
    settings.WRITER_MAX_RETRIES = 1
    settings.WRITER_RETRY_BACKOFF = 0.05
    settings.WRITER_STREAM = True
    vllm.reset_caches()
    yield settings
    vllm.reset_caches()
