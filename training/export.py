"""Export a trained LoRA writer: the adapter alone, merged 16-bit, merged 4-bit, or GGUF files.

Importable without Django (the `export_adapter` command, the pages and a GPU box call the same
`export_adapter`); torch, transformers, peft and gguf are imported inside the functions that use them.

Formats (`EXPORT_FORMATS`; a typo names the valid ones):
- `lora`: the adapter folder as it is (adapter_config.json, adapter_model.safetensors and the
  training config mesu_job_config.json), checked first and compared byte for byte after the copy.
- `merged16`: base + LoRA merged (`merge_and_unload`, computed in float32) and saved as bfloat16
  safetensors with the tokenizer. bfloat16 rather than float16: it is what the base folder stores
  (prepare_model) and what vLLM serves, so every weight the LoRA does not touch round-trips bit for
  bit (float32 -> bfloat16 of a bfloat16 value is exact), and it has float32's range, so no weight can
  overflow as it could in float16 (max 65504). A sampled check compares the saved weights with the base
  and with base + scale x B @ A.
- `merged4`: the merged model loaded with bitsandbytes NF4 and saved. bitsandbytes 4-bit needs CUDA:
  on a CPU machine the entry says so (and bitsandbytes is never imported).
- `gguf`: llama.cpp's convert_hf_to_gguf.py run on the merged16 folder, for f16 and q8_0 (the
  converter's --outtype); q4_k_m is llama.cpp's `llama-quantize` run on the f16 file, used when found
  (LLAMA_QUANTIZE, <tools>/bin/llama-quantize, PATH), else that type's entry says how to get it. The
  converter comes from the llama-cpp-python sdist on PyPI, unpacked at setup time by
  scripts/setup_gguf_converter.sh into <MESU_VAR_DIR>/tools/llama.cpp (or LLAMA_CPP_CONVERTER names
  the script): nothing is downloaded at run time. It runs with the gguf-py it ships (the one that
  matches it; PyPI's gguf 0.19.0 lacks what it writes with), while every file it writes is read back
  here with PyPI's gguf (what transformers uses): architecture, tensor count and file type.

Bad input (a missing folder, no adapter_config.json, unreadable safetensors, an unknown format or
GGUF type, an adapter whose shapes do not fit the base model) raises ApplicationError before any
model is loaded. A format that cannot run here (merged4 without CUDA, q4_k_m without llama-quantize)
or that fails is recorded in its entry (`ok`, `skipped`, `message`) and the other formats go on.

Layout of `out_dir`: lora/, merged16/, merged4/, gguf/<adapter>-<type>.gguf and export.json (the
result). Each is written under a temporary name and renamed into place, so a reader never sees half
an export; an earlier export of the same format is replaced.
"""

from __future__ import annotations

import dataclasses
import filecmp
import importlib.util
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesu_web.errors import ApplicationError

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
JOB_CONFIG = "mesu_job_config.json"  # training.config.CONFIG_FILENAME (not imported: no dataclass needed)
LORA_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS, JOB_CONFIG)  # the last one only when present
RESULT_FILE = "export.json"

# Where scripts/setup_gguf_converter.sh puts llama.cpp's converter (and, opt-in, llama-quantize).
CONVERTER_SOURCE = "llama-cpp-python==0.3.36"  # the PyPI sdist the converter is taken from
CONVERTER_ENV = "LLAMA_CPP_CONVERTER"  # path of convert_hf_to_gguf.py, overriding the tools folder
QUANTIZE_ENV = "LLAMA_QUANTIZE"  # path of llama-quantize
_REPO_ROOT = Path(__file__).resolve().parent.parent

MERGED4_CPU_MESSAGE = (
    "merged 4-bit needs a CUDA GPU with bitsandbytes; on this CPU machine use merged16 or GGUF q4_k_m/q8_0"
)


@dataclass(frozen=True)
class ExportFormat:
    name: str
    help: str
    needs_merge: bool  # built from the merged16 folder


EXPORT_FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat("lora", "The LoRA adapter folder alone (needs the base model to run).", False),
        ExportFormat("merged16", "Base + LoRA merged, bfloat16 safetensors with the tokenizer.", True),
        ExportFormat("merged4", "Merged, then bitsandbytes NF4 4-bit (CUDA only).", True),
        ExportFormat("gguf", "llama.cpp GGUF files of the merged model (f16, q8_0, q4_k_m).", True),
    )
}


@dataclass(frozen=True)
class GGUFType:
    name: str
    outtype: str | None  # convert_hf_to_gguf.py --outtype; None = made by llama-quantize from f16
    quantize_type: str | None  # llama-quantize's type name
    file_type: str  # gguf.LlamaFileType member the file must declare


GGUF_TYPES: dict[str, GGUFType] = {
    t.name: t
    for t in (
        GGUFType("f16", "f16", None, "MOSTLY_F16"),
        GGUFType("q8_0", "q8_0", None, "MOSTLY_Q8_0"),
        GGUFType("q4_k_m", None, "Q4_K_M", "MOSTLY_Q4_K_M"),
    )
}
DEFAULT_GGUF_TYPES = ("f16", "q8_0", "q4_k_m")


@dataclass
class ExportEntry:
    format: str  # a key of EXPORT_FORMATS
    gguf_type: str | None = None  # a key of GGUF_TYPES for "gguf" entries
    path: Path | None = None  # the folder (lora, merged16, merged4) or file (gguf) written
    bytes: int = 0  # on disk, all files of a folder together
    seconds: float = 0.0  # wall time; the merge counts in merged16's, or in the first entry that needed it
    ok: bool = False
    message: str = ""
    skipped: bool = False  # could not run on this machine (no CUDA, no llama-quantize): not a failure
    checks: dict[str, Any] = field(default_factory=dict)  # what the verification looked at

    @property
    def key(self) -> str:
        return f"{self.format}:{self.gguf_type}" if self.gguf_type else self.format

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["key"] = self.key
        data["path"] = str(self.path) if self.path is not None else None
        return data


@dataclass
class ExportResult:
    adapter_dir: Path
    base_model: Path
    out_dir: Path
    entries: list[ExportEntry]
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # e.g. the adapter names another base model

    @property
    def ok(self) -> bool:
        """True when every entry succeeded or was skipped for want of hardware or tools."""
        return all(e.ok or e.skipped for e in self.entries)

    @property
    def failed(self) -> list[ExportEntry]:
        return [e for e in self.entries if not e.ok and not e.skipped]

    def entry(self, key: str) -> ExportEntry:
        """The entry called `key`: "lora", "merged16", "merged4" or "gguf:<type>"."""
        for e in self.entries:
            if e.key == key:
                return e
        raise KeyError(key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "adapter_dir": str(self.adapter_dir),
            "base_model": str(self.base_model),
            "out_dir": str(self.out_dir),
            "ok": self.ok,
            "seconds": self.seconds,
            "notes": list(self.notes),
            "entries": [e.to_dict() for e in self.entries],
        }


# ---------------------------------------------------------------------------------------------
# Choices


def parse_formats(formats: Sequence[str] | str) -> list[str]:
    """The requested formats in registry order, without duplicates; a typo names the valid ones."""
    names = _split(formats)
    if not names:
        raise ApplicationError(
            f"Choose at least one export format: {', '.join(EXPORT_FORMATS)}.",
            {"valid": list(EXPORT_FORMATS)},
        )
    unknown = [n for n in names if n not in EXPORT_FORMATS]
    if unknown:
        raise ApplicationError(
            f"Unknown export format {', '.join(map(repr, unknown))}; choose from: {', '.join(EXPORT_FORMATS)}.",
            {"valid": list(EXPORT_FORMATS), "unknown": unknown},
        )
    return [n for n in EXPORT_FORMATS if n in names]


def parse_gguf_types(types: Sequence[str] | str) -> list[str]:
    names = _split(types)
    if not names:
        raise ApplicationError(
            f"Choose at least one GGUF type: {', '.join(GGUF_TYPES)}.", {"valid": list(GGUF_TYPES)}
        )
    unknown = [n for n in names if n not in GGUF_TYPES]
    if unknown:
        raise ApplicationError(
            f"Unknown GGUF type {', '.join(map(repr, unknown))}; choose from: {', '.join(GGUF_TYPES)}.",
            {"valid": list(GGUF_TYPES), "unknown": unknown},
        )
    return [n for n in GGUF_TYPES if n in names]


def _split(values: Sequence[str] | str) -> list[str]:
    if isinstance(values, str):
        values = values.split(",")
    return [v.strip().lower() for v in values if v and v.strip()]


# ---------------------------------------------------------------------------------------------
# Tools: llama.cpp's converter and quantizer


def default_tools_dir() -> Path:
    """<MESU_VAR_DIR or <repo>/var>/tools/llama.cpp, where scripts/setup_gguf_converter.sh installs."""
    var_dir = os.environ.get("MESU_VAR_DIR") or str(_REPO_ROOT / "var")
    return Path(var_dir) / "tools" / "llama.cpp"


def find_converter(tools_dir: Path | None = None) -> Path | None:
    """convert_hf_to_gguf.py from LLAMA_CPP_CONVERTER, else the tools folder; None when missing."""
    named = os.environ.get(CONVERTER_ENV, "").strip()
    path = Path(named) if named else Path(tools_dir or default_tools_dir()) / "convert_hf_to_gguf.py"
    return path if path.is_file() else None


def find_quantize(tools_dir: Path | None = None) -> Path | None:
    """llama-quantize from LLAMA_QUANTIZE, the tools folder's bin/, or PATH; None when missing."""
    named = os.environ.get(QUANTIZE_ENV, "").strip()
    candidates = [Path(named)] if named else []
    candidates.append(Path(tools_dir or default_tools_dir()) / "bin" / "llama-quantize")
    on_path = shutil.which("llama-quantize")
    if on_path:
        candidates.append(Path(on_path))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def converter_missing_message(tools_dir: Path | None = None) -> str:
    where = Path(tools_dir or default_tools_dir()) / "convert_hf_to_gguf.py"
    return (
        f"GGUF export needs llama.cpp's convert_hf_to_gguf.py, which is not at {where}: run "
        f"`bash scripts/setup_gguf_converter.sh` (it unpacks it from the {CONVERTER_SOURCE} sdist on PyPI), "
        f"or set {CONVERTER_ENV} to the script."
    )


def quantize_missing_message(tools_dir: Path | None = None) -> str:
    where = Path(tools_dir or default_tools_dir()) / "bin" / "llama-quantize"
    return (
        f"q4_k_m needs llama.cpp's llama-quantize, which was not found ({QUANTIZE_ENV}, {where}, PATH): "
        "build it once with `MESU_BUILD_LLAMA_QUANTIZE=1 bash scripts/setup_gguf_converter.sh` (cmake and a "
        f"C++ compiler; about 5 minutes on 2 cores), or set {QUANTIZE_ENV} to a llama.cpp build's "
        "llama-quantize. f16 and q8_0 need only the converter."
    )


# ---------------------------------------------------------------------------------------------
# The adapter and the base model


@dataclass
class AdapterInfo:
    path: Path
    config: dict[str, Any]  # adapter_config.json
    job_config: dict[str, Any] | None  # mesu_job_config.json, when there
    shapes: dict[str, list[int]]  # tensor name -> shape, from the safetensors header
    modules: list[str]  # base-model module names that carry a LoRA (e.g. model.layers.0.self_attn.q_proj)

    @property
    def trained_base(self) -> str:
        """The base model the adapter names (the job config's, else PEFT's base_model_name_or_path)."""
        job = (self.job_config or {}).get("base_model")
        return str(job or self.config.get("base_model_name_or_path") or "")


_PEFT_PREFIX = "base_model.model."
_LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".lora_embedding_A", ".lora_embedding_B")


def inspect_adapter(adapter_dir: Path) -> AdapterInfo:
    """Check a LoRA adapter folder (config readable, LoRA tensors present) without loading a model."""
    folder = Path(adapter_dir)
    if not folder.is_dir():
        raise ApplicationError(f"The adapter folder {folder} does not exist.")
    config_path = folder / ADAPTER_CONFIG
    if not config_path.is_file():
        raise ApplicationError(
            f"{folder} has no {ADAPTER_CONFIG}: it is not a PEFT adapter folder (train one, or point at "
            "the adapter/ folder a training run wrote)."
        )
    config = _read_json(config_path, "adapter config")
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise ApplicationError(
            f"{config_path} describes a {peft_type or 'unknown'} adapter; only LoRA adapters can be exported."
        )
    job_config = (
        _read_json(folder / JOB_CONFIG, "training config") if (folder / JOB_CONFIG).is_file() else None
    )
    weights = folder / ADAPTER_WEIGHTS
    if not weights.is_file():
        hint = (
            " (only the legacy adapter_model.bin is there)"
            if (folder / "adapter_model.bin").is_file()
            else ""
        )
        raise ApplicationError(f"{folder} has no {ADAPTER_WEIGHTS}{hint}.")
    shapes = _safetensors_shapes(weights)
    modules = sorted({_module_of(name) for name in shapes if any(name.endswith(s) for s in _LORA_SUFFIXES)})
    if not modules:
        raise ApplicationError(f"{weights} holds no LoRA tensors (lora_A / lora_B).")
    return AdapterInfo(folder, config, job_config, shapes, modules)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApplicationError(f"Cannot read the {what} {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ApplicationError(f"The {what} {path} is not a JSON object.")
    return data


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors file's header (no tensor is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: list(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except Exception as exc:  # SafetensorError, OSError: a truncated or foreign file
        raise ApplicationError(f"{path} is not a readable safetensors file: {exc}") from exc


def _module_of(tensor_name: str) -> str:
    """base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight -> model.layers.0.self_attn.q_proj"""
    name = tensor_name.removeprefix(_PEFT_PREFIX)
    for suffix in _LORA_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _base_weight_files(base_dir: Path) -> dict[str, Path]:
    """Weight name -> safetensors file of a Hugging Face folder (one file or an index); {} if none."""
    index = base_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index, "weight index").get("weight_map", {})
        return {name: base_dir / file for name, file in weight_map.items()}
    single = base_dir / "model.safetensors"
    if single.is_file():
        return {name: single for name in _safetensors_shapes(single)}
    return {}


def _base_shapes(files: dict[str, Path]) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    for file in sorted(set(files.values())):
        shapes.update(_safetensors_shapes(file))
    return shapes


def check_fits_base(adapter: AdapterInfo, base_dir: Path) -> list[str]:
    """Raise when the adapter's shapes do not fit the base model; return notes (e.g. another base named)."""
    base_dir = Path(base_dir)
    if not base_dir.is_dir() or not (base_dir / "config.json").is_file():
        raise ApplicationError(
            f"The base model folder {base_dir} has no config.json (a Hugging Face model folder)."
        )
    notes: list[str] = []
    trained = adapter.trained_base
    files = _base_weight_files(base_dir)
    if trained and _same_model(trained, base_dir) is not True:
        shapes = "whose shapes match" if files else "shapes unchecked"
        notes.append(f"The adapter names {trained} as its base; exporting it onto {base_dir} ({shapes}).")
    if not files:
        notes.append(f"{base_dir} has no safetensors weights: the shapes were not checked before loading.")
        return notes
    base = _base_shapes(files)
    problems: list[str] = []
    for module in adapter.modules:
        weight = base.get(f"{module}.weight")
        if weight is None:
            problems.append(f"the base model has no {module}")
            continue
        a = adapter.shapes.get(f"{_PEFT_PREFIX}{module}.lora_A.weight")
        b = adapter.shapes.get(f"{_PEFT_PREFIX}{module}.lora_B.weight")
        if a is None or b is None or len(weight) != 2:
            continue  # an embedding LoRA or a layout we do not model: PEFT checks it when loading
        if a[1] != weight[1] or b[0] != weight[0]:
            problems.append(
                f"{module}: the LoRA maps {a[1]} -> {b[0]} features, the base weight is {weight[0]}x{weight[1]}"
            )
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise ApplicationError(
            f"The adapter {adapter.path} does not fit the base model {base_dir}"
            + (f" (it was trained on {trained})" if trained else "")
            + f": {shown}. Export it with the base model it was trained on (--base-model).",
            {"problems": problems},
        )
    return notes


def _same_model(named: str, base_dir: Path) -> bool | None:
    """Whether the adapter's base names `base_dir`: None when it names no folder here (a hub id)."""
    path = Path(named)
    if not path.exists():
        return None
    return path.resolve() == Path(base_dir).resolve()


def default_base_model(adapter_dir: Path, fallback: Path) -> Path:
    """The base model an adapter was trained on: its job config's base_model if that folder exists,
    else adapter_config.json's base_model_name_or_path if that exists, else `fallback`."""
    folder = Path(adapter_dir)
    for file, key in ((JOB_CONFIG, "base_model"), (ADAPTER_CONFIG, "base_model_name_or_path")):
        try:
            value = json.loads((folder / file).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, str) and value and Path(value).is_dir():
            return Path(value)
    return Path(fallback)


# ---------------------------------------------------------------------------------------------
# The export


def export_adapter(
    *,
    adapter_dir: Path,
    base_model: Path,
    out_dir: Path,
    formats: Sequence[str],
    gguf_types: Sequence[str] = DEFAULT_GGUF_TYPES,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    tools_dir: Path | None = None,
) -> ExportResult:
    """Export the LoRA in `adapter_dir` (trained on `base_model`) into `out_dir`; see the module docstring.

    `on_progress` receives {"key", "status" (running, done, failed, skipped), "index", "total",
    "message"} as each entry starts and ends. `tools_dir` holds llama.cpp's converter (default
    `default_tools_dir()`).
    """
    started = time.perf_counter()
    names = parse_formats(formats)
    types = parse_gguf_types(gguf_types) if "gguf" in names else []
    adapter = inspect_adapter(Path(adapter_dir))
    base_dir = Path(base_model).resolve()
    notes = check_fits_base(adapter, base_dir)
    out = Path(out_dir).resolve()
    if out == adapter.path.resolve() or adapter.path.resolve() in out.parents:
        raise ApplicationError(f"The output folder {out} must not be inside the adapter folder.")
    out.mkdir(parents=True, exist_ok=True)

    entries = [ExportEntry(n) for n in names if n != "gguf"] + [ExportEntry("gguf", t) for t in types]
    progress = _Progress(on_progress, len(entries))
    # Decide what cannot run here before any model is loaded: a request that only asks for those
    # answers in milliseconds, and the merge is skipped when nothing needs it.
    cuda = _cuda_available()
    converter = find_converter(tools_dir) if types else None
    quantize = find_quantize(tools_dir) if "q4_k_m" in types else None
    for entry in entries:
        if entry.format == "merged4" and not cuda:
            entry.skipped, entry.message = True, MERGED4_CPU_MESSAGE
        elif entry.format == "merged4" and not _module_installed("bitsandbytes"):
            entry.skipped = True
            entry.message = "merged 4-bit needs bitsandbytes on this CUDA machine: pip install bitsandbytes."
        elif entry.format == "gguf" and converter is None:
            entry.message = converter_missing_message(tools_dir)
        elif entry.format == "gguf" and not _module_installed("sentencepiece"):
            entry.message = (
                "llama.cpp's converter imports sentencepiece, which is not installed: "
                "pip install sentencepiece==0.2.3 (it is in pyproject.toml)."
            )
        elif entry.gguf_type == "q4_k_m" and quantize is None:
            entry.skipped, entry.message = True, quantize_missing_message(tools_dir)

    merged_dir: Path | None = None
    merge_error = ""  # why the merge failed, so that the entries needing it do not try again
    temporary: list[Path] = []
    try:
        for index, entry in enumerate(entries):
            if entry.message:  # decided above
                progress(entry, index, "skipped" if entry.skipped else "failed", entry.message)
                continue
            progress(entry, index, "running", "")
            t0 = time.perf_counter()
            try:
                if entry.format == "lora":
                    _export_lora(adapter, out / "lora", entry)
                elif entry.format == "merged16":
                    try:
                        merged_dir = _export_merged16(adapter, base_dir, out / "merged16", entry)
                    except Exception:
                        merge_error = "the merged16 export failed (see its entry)"
                        raise
                else:
                    if merged_dir is None and not merge_error:  # merged16 not asked for: merge into scratch
                        scratch = Path(tempfile.mkdtemp(prefix=".merged16-scratch-", dir=out))
                        temporary.append(scratch)
                        inner = ExportEntry("merged16")
                        try:
                            merged_dir = _export_merged16(adapter, base_dir, scratch / "merged16", inner)
                        except Exception as exc:  # recorded once; every entry that needs it says why
                            why = (
                                exc.message
                                if isinstance(exc, ApplicationError)
                                else f"{type(exc).__name__}: {exc}"
                            )
                            merge_error = f"merging the LoRA failed: {why}"
                    if merged_dir is None:
                        raise ApplicationError(f"It needs the merged model, but {merge_error}")
                    if entry.format == "merged4":
                        _export_merged4(merged_dir, out / "merged4", entry)
                    else:
                        f16 = _f16_source(entries, out, temporary) if entry.gguf_type == "q4_k_m" else None
                        _export_gguf(
                            merged_dir, out / "gguf", adapter.path.name, entry, converter, quantize, f16
                        )
            except ApplicationError as exc:
                entry.ok, entry.message = False, exc.message
            except Exception as exc:  # a library failing mid-way: recorded, the other formats go on
                logger.exception("Export %s of %s failed", entry.key, adapter.path)
                entry.ok, entry.message = False, f"{type(exc).__name__}: {exc}"
            entry.seconds = round(time.perf_counter() - t0, 3)
            progress(entry, index, "done" if entry.ok else "failed", entry.message)
    finally:
        for path in temporary:
            shutil.rmtree(path, ignore_errors=True)

    result = ExportResult(
        adapter_dir=adapter.path.resolve(),
        base_model=base_dir,
        out_dir=out,
        entries=entries,
        seconds=round(time.perf_counter() - started, 3),
        notes=notes,
    )
    _write_json(out / RESULT_FILE, result.to_dict())
    return result


class _Progress:
    def __init__(self, callback: Callable[[dict[str, Any]], None] | None, total: int) -> None:
        self.callback, self.total = callback, total

    def __call__(self, entry: ExportEntry, index: int, status: str, message: str) -> None:
        if self.callback is None:
            return
        event = {"key": entry.key, "status": status, "index": index, "total": self.total, "message": message}
        try:
            self.callback(event)
        except Exception:
            logger.exception("on_progress failed for %s; the export goes on", entry.key)


def _f16_source(entries: list[ExportEntry], out: Path, temporary: list[Path]) -> Path:
    """The f16 GGUF that q4_k_m is quantized from: the f16 entry's file when it was made, else a path
    in a scratch folder (removed at the end) where _export_gguf converts one."""
    for e in entries:
        if e.gguf_type == "f16" and e.ok and e.path is not None:
            return e.path
    scratch = Path(tempfile.mkdtemp(prefix=".gguf-scratch-", dir=out))
    temporary.append(scratch)
    return scratch / "f16.gguf"  # not there yet: made on demand


# --- lora ------------------------------------------------------------------------------------


def _export_lora(adapter: AdapterInfo, target: Path, entry: ExportEntry) -> None:
    files = [name for name in LORA_FILES if (adapter.path / name).is_file()]
    with _staging(target) as tmp:
        for name in files:
            shutil.copy2(adapter.path / name, tmp / name)
        different = [n for n in files if not filecmp.cmp(adapter.path / n, tmp / n, shallow=False)]
        if different:
            raise ApplicationError(f"The copy of {', '.join(different)} differs from the adapter's.")
    entry.path, entry.bytes, entry.ok = target, _size(target), True
    entry.checks = {
        "files": files,
        "lora_modules": len(adapter.modules),
        "rank": adapter.config.get("r"),
        "target_modules": adapter.config.get("target_modules"),
        "trained_base": adapter.trained_base or None,
    }
    entry.message = (
        f"Copied {len(files)} file(s); {len(adapter.modules)} LoRA module(s), rank {adapter.config.get('r')}."
    )


# --- merged16 --------------------------------------------------------------------------------


def _export_merged16(adapter: AdapterInfo, base_dir: Path, target: Path, entry: ExportEntry) -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not _cuda_available():
        torch.set_num_threads(1)  # measured on the 2-core box: two threads were 6-10x slower under load
    # float32 for the merge: W + scale x B @ A is rounded once, to bfloat16, when saved.
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    try:
        model = PeftModel.from_pretrained(base, str(adapter.path))
    except Exception as exc:  # shapes we could not check before (no safetensors in the base), bad keys
        raise ApplicationError(f"PEFT could not load {adapter.path} onto {base_dir}: {exc}") from exc
    merged = model.merge_and_unload()
    merged = merged.to(torch.bfloat16)
    merged.config.dtype = torch.bfloat16
    # A quantized base (or one made from a GGUF) carries a quantization_config; the merged weights are
    # plain bfloat16, and a folder claiming otherwise would not load.
    if getattr(merged.config, "quantization_config", None) is not None:
        del merged.config.quantization_config
    merged.hf_quantizer = None
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    with _staging(target) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if adapter.job_config is not None:  # provenance: what the merged model was trained with
            shutil.copy2(adapter.path / JOB_CONFIG, tmp / JOB_CONFIG)
        saved = _read_json(tmp / "config.json", "merged config")
        if "quantization_config" in saved:
            raise ApplicationError("The merged config.json still has a quantization_config.")
        entry.checks = check_merged(adapter, base_dir, tmp)
    del merged, model, base
    entry.path, entry.bytes, entry.ok = target, _size(target), True
    c = entry.checks
    entry.message = (
        f"Merged into bfloat16; {len(c['targeted'])} LoRA weight(s) sampled changed as base + scale x B @ A, "
        f"{len(c['untouched'])} other weight(s) equal to the base."
    )
    return target


def check_merged(adapter: AdapterInfo, base_dir: Path, merged_dir: Path, samples: int = 3) -> dict[str, Any]:
    """A cheap sampled check of a merged folder against its base: up to `samples` LoRA-targeted
    weights (first, middle, last) differ from the base and equal base + scale x B @ A to bfloat16's
    rounding; the other weights of those layers, and the embeddings, are exactly the base's.
    Raises ApplicationError on a mismatch; returns what it looked at."""
    import torch
    from safetensors import safe_open

    base_files = _base_weight_files(Path(base_dir))
    merged_files = _base_weight_files(Path(merged_dir))
    if not base_files or not merged_files:
        return {"targeted": [], "untouched": [], "skipped": "no safetensors to compare"}
    targeted_names = {f"{m}.weight" for m in adapter.modules}
    candidates = sorted(n for n in targeted_names if n in base_files)
    picks: list[str] = []
    if candidates:  # first, middle and last (for samples=3), in name order
        step = (len(candidates) - 1) / max(1, samples - 1)
        picks = sorted({candidates[round(i * step)] for i in range(samples)})
    layers = {
        ".".join(p.split(".")[:3]) + "." for p in picks
    }  # model.layers.0.self_attn.q_proj.weight -> model.layers.0.
    untouched = sorted(
        n for n in base_files if n not in targeted_names and any(n.startswith(p) for p in layers)
    )[: 4 * max(1, len(picks))]
    untouched += [n for n in base_files if "embed_tokens" in n and n not in targeted_names][:1]

    def load(files: dict[str, Path], name: str):
        with safe_open(str(files[name]), framework="pt") as handle:
            return handle.get_tensor(name)

    lora = _lora_tensors(adapter)
    scale = _lora_scale(adapter.config)
    report: dict[str, Any] = {"targeted": [], "untouched": [], "scale": scale}
    problems: list[str] = []
    for name in picks:
        if name not in merged_files:
            problems.append(f"{name} is missing from the merged model")
            continue
        merged, base = load(merged_files, name), load(base_files, name)
        base_cast = base.to(merged.dtype)
        changed = float((merged != base_cast).float().mean())
        item: dict[str, Any] = {"name": name, "changed_fraction": round(changed, 6)}
        module = name.removesuffix(".weight")
        a, b = lora.get(f"{module}.lora_A"), lora.get(f"{module}.lora_B")
        if changed == 0.0:
            why = (
                "the adapter's lora_B there is all zero (an untrained LoRA)"
                if b is not None and not bool(b.any())
                else f"the LoRA's change is below {merged.dtype}'s resolution there"
            )
            problems.append(f"{name} equals the base: {why}")
        if scale is not None and a is not None and b is not None:
            expected = base.float() + scale * (b.float() @ a.float())
            error = (merged.float() - expected).abs()
            # bfloat16 keeps 8 significant bits: rounding moves a value by at most 2^-8 of itself.
            allowed = expected.abs() * 2.0**-8 + 1e-6 * float(expected.abs().max())
            item["max_error"] = float(error.max())
            if bool((error > allowed).any()):
                problems.append(
                    f"{name} is not base + {scale:g} x B @ A (max error {float(error.max()):.3g})"
                )
        report["targeted"].append(item)
    for name in untouched:
        if name not in merged_files:
            continue  # e.g. a tied lm_head saved once
        merged, base = load(merged_files, name), load(base_files, name)
        equal = bool(torch.equal(merged, base.to(merged.dtype)))
        report["untouched"].append({"name": name, "equal": equal})
        if not equal:
            problems.append(f"{name} changed although the LoRA does not target it")
    if problems:
        raise ApplicationError(
            "The merged weights failed the check: " + "; ".join(problems[:4]) + ".", report
        )
    return report


def _lora_tensors(adapter: AdapterInfo) -> dict[str, Any]:
    """module.lora_A / module.lora_B -> tensor, for the adapter's linear LoRAs."""
    from safetensors import safe_open

    out: dict[str, Any] = {}
    with safe_open(str(adapter.path / ADAPTER_WEIGHTS), framework="pt") as handle:
        for name in handle.keys():
            for part in ("lora_A", "lora_B"):
                if name.endswith(f".{part}.weight"):
                    out[f"{_module_of(name)}.{part}"] = handle.get_tensor(name)
    return out


def _lora_scale(config: dict[str, Any]) -> float | None:
    """PEFT's scaling (alpha / r, or alpha / sqrt(r) with rsLoRA); None where it varies per module or
    the merge is not W + scale x B @ A (DoRA, fan_in_fan_out)."""
    if config.get("rank_pattern") or config.get("alpha_pattern") or config.get("use_dora"):
        return None
    if config.get("fan_in_fan_out"):
        return None
    r, alpha = config.get("r"), config.get("lora_alpha")
    if not isinstance(r, int | float) or not isinstance(alpha, int | float) or r <= 0:
        return None
    return float(alpha) / (math.sqrt(r) if config.get("use_rslora") else float(r))


# --- merged4 ---------------------------------------------------------------------------------


def _export_merged4(merged_dir: Path, target: Path, entry: ExportEntry) -> None:
    """bitsandbytes NF4 (double quantization, bfloat16 compute) of the merged model; CUDA only."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    model = AutoModelForCausalLM.from_pretrained(
        merged_dir, quantization_config=config, device_map={"": 0}, dtype=torch.bfloat16
    )
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    quantized = sum(1 for m in model.modules() if type(m).__name__ == "Linear4bit")
    if not quantized:
        raise ApplicationError("bitsandbytes quantized no layer of the merged model.")
    with _staging(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        saved = _read_json(tmp / "config.json", "4-bit config").get("quantization_config") or {}
        if not saved.get("load_in_4bit"):
            raise ApplicationError("The saved 4-bit config.json has no 4-bit quantization_config.")
    del model
    torch.cuda.empty_cache()
    entry.path, entry.bytes, entry.ok = target, _size(target), True
    entry.checks = {"linear4bit_layers": quantized, "quant_type": "nf4"}
    entry.message = f"NF4 4-bit: {quantized} linear layer(s) quantized."


# --- gguf ------------------------------------------------------------------------------------


def _export_gguf(
    merged_dir: Path,
    folder: Path,
    stem: str,
    entry: ExportEntry,
    converter: Path | None,
    quantize: Path | None,
    f16: Path | None,
) -> None:
    kind = GGUF_TYPES[entry.gguf_type or ""]
    if converter is None:
        raise ApplicationError(converter_missing_message())
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{stem}-{kind.name}.gguf"
    tmp = folder / f".{target.name}.tmp-{os.getpid()}"
    try:
        if kind.outtype is not None:
            _run_converter(converter, merged_dir, kind.outtype, tmp, stem)
            note = f"convert_hf_to_gguf.py --outtype {kind.outtype}"
        else:
            if quantize is None:
                raise ApplicationError(quantize_missing_message())
            if f16 is None:
                raise ApplicationError("No f16 GGUF to quantize from.")
            if not f16.is_file():  # no f16 entry: convert one for the quantizer
                _run_converter(converter, merged_dir, "f16", f16, stem)
            fallbacks = _run_quantize(quantize, f16, tmp, kind.quantize_type or "")
            note = f"llama-quantize {kind.quantize_type} from f16"
            if fallbacks:
                # K-quants need rows of 256: SmolLM2's 576-wide rows fall back to q5_0/q8_0 (llama.cpp's rule).
                note += f" ({fallbacks} tensor(s) in a fallback type: rows not divisible by 256)"
        entry.checks = read_gguf(tmp)
        expected = entry.checks["expected_file_type"] = kind.file_type
        if entry.checks["file_type"] != expected:
            raise ApplicationError(
                f"The GGUF declares file type {entry.checks['file_type']}, expected {expected}."
            )
        if entry.checks["tensor_count"] == 0 or not entry.checks["architecture"]:
            raise ApplicationError("The GGUF has no tensors or no architecture.")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    entry.path, entry.bytes, entry.ok = target, target.stat().st_size, True
    entry.message = (
        f"{note}; read back: {entry.checks['architecture']}, {entry.checks['tensor_count']} tensors, "
        f"{entry.checks['file_type']}."
    )


def _converter_env() -> dict[str, str]:
    env = dict(os.environ)
    # The converter must use the gguf-py it ships (it needs newer classes than PyPI's gguf 0.19.0).
    env.pop("NO_LOCAL_GGUF", None)
    env.update(
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false"
    )
    return env


def _run_converter(converter: Path, merged_dir: Path, outtype: str, outfile: Path, name: str) -> None:
    cmd = [sys.executable, str(converter), str(merged_dir), "--outtype", outtype, "--outfile", str(outfile)]
    cmd += ["--model-name", name]  # general.name: the fine-tune, not the base model's card name
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_converter_env(), check=False)
    if proc.returncode != 0 or not outfile.is_file():
        raise ApplicationError(
            f"convert_hf_to_gguf.py --outtype {outtype} failed (exit {proc.returncode}): {_tail(proc)}"
        )


def _run_quantize(quantize: Path, source: Path, outfile: Path, qtype: str) -> int:
    """Run llama-quantize; the number of tensors it wrote in a fallback type."""
    proc = subprocess.run(
        [str(quantize), str(source), str(outfile), qtype], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0 or not outfile.is_file():
        raise ApplicationError(f"llama-quantize {qtype} failed (exit {proc.returncode}): {_tail(proc)}")
    return (proc.stdout + proc.stderr).count("falling back to")


def _tail(proc: subprocess.CompletedProcess, lines: int = 8) -> str:
    text = "\n".join(part for part in (proc.stdout, proc.stderr) if part)
    # Progress bars redraw with \r: keep the last state of each line.
    kept = [line.rsplit("\r", 1)[-1] for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:]) or "no output"


def read_gguf(path: Path) -> dict[str, Any]:
    """Architecture, tensor count, file type and tensor types of a GGUF, read with PyPI's gguf."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:
        raise ApplicationError(f"{path} is not a readable GGUF file: {exc}") from exc

    def field_value(key: str) -> Any:
        found = reader.get_field(key)
        return found.contents() if found is not None else None

    file_type = field_value("general.file_type")
    try:
        file_type_name = gguf.LlamaFileType(int(file_type)).name if file_type is not None else None
    except ValueError:
        file_type_name = str(file_type)
    tensor_types: dict[str, int] = {}
    for tensor in reader.tensors:
        name = tensor.tensor_type.name
        tensor_types[name] = tensor_types.get(name, 0) + 1
    return {
        "architecture": field_value("general.architecture"),
        "name": field_value("general.name"),
        "tensor_count": len(reader.tensors),
        "file_type": file_type_name,
        "tensor_types": tensor_types,
    }


# ---------------------------------------------------------------------------------------------
# Files


class _staging:
    """Write a folder under a temporary name beside `target` and move it into place on success."""

    def __init__(self, target: Path) -> None:
        self.target = Path(target)

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        # mkdtemp makes 0700 and safetensors writes 0600; a server may read the export as another user.
        os.chmod(self.tmp, 0o755)
        for path in self.tmp.rglob("*"):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        old = None
        if self.target.exists():
            old = self.target.parent / f".{self.target.name}.old-{os.getpid()}"
            self.target.rename(old)
        self.tmp.rename(self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _module_installed(name: str) -> bool:
    """Whether `name` can be imported, without importing it (bitsandbytes probes CUDA on import)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
