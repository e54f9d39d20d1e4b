"""Exporting a LoRA: the adapter alone, merged bfloat16, merged 4-bit (CUDA) and GGUF, on the real SmolLM2.

One export of the random test LoRA (r=8 on q_proj, v_proj, non-zero A and B) into every format is
shared by the slow tests (about 30 s on 2 cores); each GGUF is then read back with PyPI's gguf and
loaded with transformers, which generates a few tokens from it. The GGUF converter is the one
scripts/setup_gguf_converter.sh installs (./dev runs it): without it these tests fail and say so.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from django.core.management import CommandError, call_command
from safetensors import safe_open

from mesu_web.errors import ApplicationError
from training.export import (
    EXPORT_FORMATS,
    MERGED4_CPU_MESSAGE,
    RESULT_FILE,
    ExportResult,
    export_adapter,
    find_converter,
    find_quantize,
    read_gguf,
)

SMOLLM2_TENSORS = 272  # 30 layers x 9 + embeddings + final norm (the output head is tied)


def _tensor(path: Path, name: str) -> torch.Tensor:
    with safe_open(str(path), framework="pt") as handle:
        return handle.get_tensor(name)


def _generate(model, tokenizer, text: str = "The lighthouse keeper opened the door", n: int = 6) -> str:
    ids = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.fixture(scope="module")
def trained_adapter(lora_adapter_dir: Path, model_dir: Path, tmp_path_factory) -> Path:
    """The test LoRA with the training config a real run writes beside it (base_model included)."""
    folder = tmp_path_factory.mktemp("trained") / "story-writer"
    shutil.copytree(lora_adapter_dir, folder)
    config = {"base_model": str(model_dir), "lora_rank": 8, "target_modules": ["q_proj", "v_proj"]}
    (folder / "mesu_job_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def exported(
    trained_adapter: Path, model_dir: Path, tmp_path_factory
) -> Iterator[tuple[ExportResult, list[dict]]]:
    if find_converter() is None:
        pytest.fail("llama.cpp's converter is not installed: run `bash scripts/setup_gguf_converter.sh`.")
    out = tmp_path_factory.mktemp("export")
    events: list[dict] = []
    result = export_adapter(
        adapter_dir=trained_adapter,
        base_model=model_dir,
        out_dir=out,
        formats=["gguf", "lora", "merged16", "merged4", "gguf"],  # order and repeats do not matter
        gguf_types=("f16", "q8_0", "q4_k_m"),
        on_progress=events.append,
    )
    yield result, events
    shutil.rmtree(out, ignore_errors=True)  # ~800 MB of model files; pytest keeps old tmp folders


# --- bad input: no model is loaded ----------------------------------------------------------------


def test_an_unknown_format_names_the_valid_ones(tmp_path):
    with pytest.raises(ApplicationError) as caught:
        export_adapter(adapter_dir=tmp_path, base_model=tmp_path, out_dir=tmp_path / "o", formats=["gguff"])
    assert "'gguff'" in caught.value.message
    assert "lora, merged16, merged4, gguf" in caught.value.message
    assert caught.value.extra["valid"] == list(EXPORT_FORMATS)
    with pytest.raises(ApplicationError, match="Unknown GGUF type 'q5_1'; choose from: f16, q8_0, q4_k_m"):
        export_adapter(
            adapter_dir=tmp_path,
            base_model=tmp_path,
            out_dir=tmp_path / "o",
            formats="gguf",
            gguf_types="q5_1",
        )
    with pytest.raises(ApplicationError, match="at least one export format"):
        export_adapter(adapter_dir=tmp_path, base_model=tmp_path, out_dir=tmp_path / "o", formats=[])


def test_a_missing_adapter_folder_is_refused(tmp_path):
    with pytest.raises(ApplicationError, match="does not exist"):
        export_adapter(
            adapter_dir=tmp_path / "nope", base_model=tmp_path, out_dir=tmp_path / "o", formats=["lora"]
        )
    assert not (tmp_path / "o").exists()


def test_a_folder_without_adapter_config_is_refused(tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_model.safetensors").write_bytes(b"x")
    with pytest.raises(ApplicationError, match="has no adapter_config.json: it is not a PEFT adapter folder"):
        export_adapter(
            adapter_dir=tmp_path / "adapter", base_model=tmp_path, out_dir=tmp_path / "o", formats=["lora"]
        )


def test_corrupt_safetensors_are_refused(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]})
    )
    (folder / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ApplicationError, match="is not a readable safetensors file"):
        export_adapter(adapter_dir=folder, base_model=tmp_path, out_dir=tmp_path / "o", formats=["lora"])
    (folder / "adapter_config.json").write_text("{broken")
    with pytest.raises(ApplicationError, match="Cannot read the adapter config"):
        export_adapter(adapter_dir=folder, base_model=tmp_path, out_dir=tmp_path / "o", formats=["lora"])


@pytest.mark.slow
def test_an_adapter_for_another_base_model_is_refused_before_loading(model_dir, tmp_path):
    """A LoRA trained on a 64-wide, 2-layer Llama does not fit SmolLM2 (576 wide, 30 layers)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.fixtures_training import make_random_lora

    tiny_dir = tmp_path / "tiny-llama"
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=512,
    )
    LlamaForCausalLM(config).save_pretrained(tiny_dir)
    adapter = make_random_lora(tiny_dir, tmp_path / "tiny-lora", r=4)
    with pytest.raises(ApplicationError) as caught:
        export_adapter(
            adapter_dir=adapter, base_model=model_dir, out_dir=tmp_path / "o", formats=["lora", "merged16"]
        )
    message = caught.value.message
    assert "does not fit the base model" in message
    assert f"it was trained on {tiny_dir}" in message
    assert (
        "model.layers.0.self_attn.q_proj: the LoRA maps 64 -> 64 features, the base weight is 576x576"
        in message
    )
    assert "--base-model" in message
    assert not (tmp_path / "o").exists()  # refused before anything was written


# --- the real export --------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_format_has_an_entry_and_progress(exported):
    result, events = exported
    keys = [e.key for e in result.entries]
    assert keys == ["lora", "merged16", "merged4", "gguf:f16", "gguf:q8_0", "gguf:q4_k_m"]
    assert result.failed == [], [(e.key, e.message) for e in result.failed]
    assert result.ok
    assert result.notes == []  # the job config names this very base model
    written = json.loads((result.out_dir / RESULT_FILE).read_text())
    assert written == json.loads(json.dumps(result.to_dict()))
    finished = {e["key"]: e["status"] for e in events if e["status"] != "running"}
    assert set(finished) == set(keys)
    assert finished["merged16"] == "done"
    assert all(e["total"] == len(keys) for e in events)
    # No scratch folders are left behind; merged4 is there only where CUDA made it.
    expected = {"export.json", "gguf", "lora", "merged16"} | (
        {"merged4"} if result.entry("merged4").ok else set()
    )
    assert {p.name for p in result.out_dir.iterdir()} == expected
    assert {p.name for p in (result.out_dir / "gguf").iterdir()} == {
        e.path.name for e in result.entries if e.format == "gguf" and e.ok
    }


@pytest.mark.slow
def test_lora_is_copied_as_it_is(exported, trained_adapter):
    result, _ = exported
    entry = result.entry("lora")
    assert entry.ok and entry.path == result.out_dir / "lora"
    names = ["adapter_config.json", "adapter_model.safetensors", "mesu_job_config.json"]
    assert sorted(p.name for p in entry.path.iterdir()) == sorted(names)
    for name in names:
        assert (entry.path / name).read_bytes() == (trained_adapter / name).read_bytes()
    assert entry.bytes == sum((trained_adapter / n).stat().st_size for n in names)
    assert entry.checks["lora_modules"] == 60  # q_proj and v_proj in 30 layers
    assert entry.checks["rank"] == 8


@pytest.mark.slow
def test_merged16_changes_the_targeted_weights_only_and_generates(exported, trained_adapter, model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result, _ = exported
    entry = result.entry("merged16")
    assert entry.ok, entry.message
    folder = entry.path
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["dtype"] == "bfloat16"
    assert (folder / "tokenizer.json").is_file() and (folder / "mesu_job_config.json").is_file()
    assert (folder / "model.safetensors").stat().st_mode & 0o777 == 0o644  # a server may run as another user
    assert len(entry.checks["targeted"]) == 3 and all(u["equal"] for u in entry.checks["untouched"])

    # Our own check, on layers the export's sample did not need to pick.
    merged_file, base_file = folder / "model.safetensors", model_dir / "model.safetensors"
    adapter_file = trained_adapter / "adapter_model.safetensors"
    for layer in (5, 29):
        for proj in ("q_proj", "v_proj"):
            name = f"model.layers.{layer}.self_attn.{proj}.weight"
            merged, base = _tensor(merged_file, name), _tensor(base_file, name)
            assert merged.dtype == torch.bfloat16
            assert not torch.equal(merged, base)
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            a = _tensor(adapter_file, f"{prefix}.lora_A.weight").float()
            b = _tensor(adapter_file, f"{prefix}.lora_B.weight").float()
            expected = base.float() + 2.0 * (b @ a)  # lora_alpha 16 / r 8
            assert torch.allclose(merged.float(), expected, rtol=2**-7, atol=1e-4)
        for other in ("self_attn.k_proj", "self_attn.o_proj", "mlp.down_proj", "input_layernorm"):
            name = f"model.layers.{layer}.{other}.weight"
            assert torch.equal(_tensor(merged_file, name), _tensor(base_file, name)), name
    assert torch.equal(
        _tensor(merged_file, "model.embed_tokens.weight"), _tensor(base_file, "model.embed_tokens.weight")
    )

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    base_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = tokenizer("Once upon a time", return_tensors="pt")
    with torch.no_grad():
        merged_logits, base_logits = model(**ids).logits, base_model(**ids).logits
    assert not torch.allclose(merged_logits, base_logits, atol=1e-3)  # the LoRA changes what it says
    text = _generate(model, tokenizer)
    assert text.strip()


@pytest.mark.slow
def test_merged4_on_cpu_says_why_without_importing_bitsandbytes(exported):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: merged4 runs for real")
    result, _ = exported
    entry = result.entry("merged4")
    assert entry.skipped and not entry.ok and entry.path is None
    assert entry.message == MERGED4_CPU_MESSAGE
    assert "needs a CUDA GPU with bitsandbytes" in entry.message
    assert "bitsandbytes" not in sys.modules
    assert not (result.out_dir / "merged4").exists()


@pytest.mark.slow
@pytest.mark.parametrize("gguf_type,file_type", [("f16", "MOSTLY_F16"), ("q8_0", "MOSTLY_Q8_0")])
def test_gguf_reads_back_loads_and_generates(exported, model_dir, gguf_type, file_type):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result, _ = exported
    entry = result.entry(f"gguf:{gguf_type}")
    assert entry.ok, entry.message
    assert entry.path == result.out_dir / "gguf" / f"story-writer-{gguf_type}.gguf"
    assert entry.bytes == entry.path.stat().st_size > 50_000_000

    info = read_gguf(entry.path)  # PyPI's gguf 0.19.0, the reader transformers uses
    assert info["architecture"] == "llama"
    assert info["name"] == "story-writer"  # the adapter's name, not the base model's
    assert info["tensor_count"] == SMOLLM2_TENSORS
    assert info["file_type"] == file_type
    assert info["tensor_types"].get(gguf_type.upper(), 0) > 200  # every 2-D weight in that type

    model = AutoModelForCausalLM.from_pretrained(
        entry.path.parent, gguf_file=entry.path.name, dtype=torch.float32
    )
    # The LoRA made it into the file: its q_proj is the merged one, not the base's.
    name = "model.layers.0.self_attn.q_proj.weight"
    from_gguf = model.state_dict()[name]
    merged = _tensor(result.entry("merged16").path / "model.safetensors", name).float()
    base = _tensor(model_dir / "model.safetensors", name).float()
    assert (from_gguf - merged).abs().mean() < (from_gguf - base).abs().mean() / 4
    tokenizer = AutoTokenizer.from_pretrained(result.entry("merged16").path)
    assert _generate(model, tokenizer).strip()


@pytest.mark.slow
def test_q4_k_m_uses_llama_quantize_when_found_else_says_how(exported):
    result, _ = exported
    entry = result.entry("gguf:q4_k_m")
    if find_quantize() is None:
        assert entry.skipped and not entry.ok
        assert entry.message.startswith("q4_k_m needs llama.cpp's llama-quantize")
        assert "MESU_BUILD_LLAMA_QUANTIZE=1 bash scripts/setup_gguf_converter.sh" in entry.message
        assert not (result.out_dir / "gguf" / "story-writer-q4_k_m.gguf").exists()
    else:
        assert entry.ok, entry.message
        info = read_gguf(entry.path)
        assert info["file_type"] == "MOSTLY_Q4_K_M" and info["tensor_count"] == SMOLLM2_TENSORS
        assert entry.bytes < result.entry("gguf:q8_0").bytes


@pytest.mark.slow
def test_q4_k_m_without_a_quantizer_is_skipped_with_how_to_get_it(
    trained_adapter, model_dir, tmp_path, monkeypatch
):
    converter = find_converter()
    assert converter is not None, "run scripts/setup_gguf_converter.sh"
    monkeypatch.setenv("LLAMA_CPP_CONVERTER", str(converter))
    monkeypatch.delenv("LLAMA_QUANTIZE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no llama-quantize on PATH
    result = export_adapter(
        adapter_dir=trained_adapter,
        base_model=model_dir,
        out_dir=tmp_path / "o",
        formats=["gguf"],
        gguf_types=["q4_k_m"],
        tools_dir=tmp_path / "no-tools",
    )
    (entry,) = result.entries
    assert entry.skipped and result.ok and result.failed == []
    assert "q4_k_m needs llama.cpp's llama-quantize, which was not found" in entry.message
    assert "f16 and q8_0 need only the converter" in entry.message
    assert entry.seconds == 0.0  # decided before any merge


# --- the command ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_command_exports_an_adapter_by_name(lora_adapter_name, model_dir, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "export_adapter",
        "--adapter",
        lora_adapter_name,
        "--format",
        "lora,merged4",
        "--out",
        str(tmp_path),
        stdout=out,
        stderr=err,
    )
    data = json.loads(out.getvalue())
    assert data["ok"] is True
    # The default base model: adapter_config.json's base_model_name_or_path (the SmolLM2 folder).
    assert Path(data["base_model"]) == model_dir.resolve()
    entries = {e["key"]: e for e in data["entries"]}
    assert entries["lora"]["ok"] and (tmp_path / "lora" / "adapter_model.safetensors").is_file()
    if not torch.cuda.is_available():
        assert entries["merged4"]["skipped"] and entries["merged4"]["message"] == MERGED4_CPU_MESSAGE
    assert "[1/2] lora: running" in err.getvalue()


@pytest.mark.slow
def test_command_errors_are_clear(lora_adapter_dir, tmp_path):
    with pytest.raises(CommandError, match="No adapter folder 'no-such-adapter', and no adapter called"):
        call_command(
            "export_adapter", "--adapter", "no-such-adapter", "--format", "lora", "--out", str(tmp_path)
        )
    with pytest.raises(CommandError, match="The adapter folder /no/such/dir does not exist"):
        call_command(
            "export_adapter", "--adapter", "/no/such/dir", "--format", "lora", "--out", str(tmp_path)
        )
    with pytest.raises(
        CommandError, match="Unknown export format 'zip'; choose from: lora, merged16, merged4, gguf"
    ):
        call_command(
            "export_adapter",
            "--adapter",
            str(lora_adapter_dir),
            "--format",
            "lora,zip",
            "--out",
            str(tmp_path),
        )
    with pytest.raises(CommandError, match="The base model folder /no/base does not exist"):
        call_command(
            "export_adapter",
            "--adapter",
            str(lora_adapter_dir),
            "--format",
            "lora",
            "--out",
            str(tmp_path),
            "--base-model",
            "/no/base",
        )
