"""Writer engines: pick one by name, and resolve an adapter name to its folder.

The engine modules are imported on first use: `local` pulls in torch (seconds, ~500 MB), which a web
process on the vLLM engine never needs.
"""

from __future__ import annotations

import importlib
import re

from django.conf import settings

from mesu_web.errors import ApplicationError
from writer.engines.base import Adapter, Sampling, WriterEngine
from writer.prompting import REASONING_START

# name -> "module:cached getter" of the process's engine
ENGINES: dict[str, str] = {
    "vllm": "writer.engines.vllm:get_vllm_engine",
    "local": "writer.engines.local:get_local_engine",
}
# Adapter names are vLLM model names and folder names: no slashes, no leading dot, 64 characters at most.
ADAPTER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def get_engine(name: str | None = None) -> WriterEngine:
    """The engine called `name` (default: settings.WRITER_ENGINE); one instance per process."""
    name = name or settings.WRITER_ENGINE
    if name not in ENGINES:
        raise ApplicationError(
            f"Unknown writer engine {name!r}; choose one of: {', '.join(sorted(ENGINES))}.",
            extra={"valid": sorted(ENGINES)},
        )
    # The engines read the Django settings at each call: one instance per process keeps the loaded
    # model and adapters without freezing the configuration.
    module_name, getter = ENGINES[name].split(":")
    return getattr(importlib.import_module(module_name), getter)()


def resolve_adapter(name: str) -> Adapter | None:
    """The adapter called `name` in settings.WRITER_ADAPTER_DIR; None for "" or the base model's name."""
    name = (name or "").strip()
    if not name or name == settings.WRITER_MODEL:
        return None
    if not ADAPTER_NAME_RE.match(name):
        raise ApplicationError(
            f"{name!r} is not a valid adapter name: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return Adapter(name=name, path=settings.WRITER_ADAPTER_DIR / name)


def sampling_from_settings(*, max_tokens: int | None = None, seed: int | None = None) -> Sampling:
    """The writer's decoding as the WRITER_* settings give it: what a generation request and an
    evaluation use. `max_tokens` is the chapter's (default WRITER_MAX_NEW_TOKENS)."""
    return Sampling(
        max_tokens=max_tokens or settings.WRITER_MAX_NEW_TOKENS,
        temperature=settings.WRITER_TEMPERATURE,
        top_p=settings.WRITER_TOP_P,
        seed=seed,
        prefill=REASONING_START if settings.WRITER_PREFILL_REASONING else "",
        repetition_penalty=settings.WRITER_REPETITION_PENALTY,
        frequency_penalty=settings.WRITER_FREQUENCY_PENALTY,
        presence_penalty=settings.WRITER_PRESENCE_PENALTY,
        no_repeat_ngram_size=settings.WRITER_NO_REPEAT_NGRAM_SIZE,
        reasoning_tokens=settings.WRITER_REASONING_TOKENS,
    )


def reset_caches() -> None:
    """Forget the engines, their clients and loaded models (for tests)."""
    import sys

    for module_name in ("writer.engines.vllm", "writer.engines.local"):
        module = sys.modules.get(module_name)  # only those already imported: no torch import here
        if module is not None:
            module.reset_caches()
