"""run_grpo and the train_grpo command: real GRPO runs on SmolLM2 on CPU, with tiny settings.

The slow tests train for real (TRL GRPOTrainer + PEFT LoRA, 2 completions x 16 tokens a step) and
check what the seed checks: the LoRA A and B matrices are non-zero, the base weights did not change,
and the resolved config sits beside the adapter. Rewards are the registry's cheap ones (ROUGE-1 against
the real next chapter, partial format credit): ROUGE-1 is continuous, so a group of completions
practically never ties (a tie means zero advantages, hence no gradient and an unmoved LoRA).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from mesu_web.errors import ApplicationError
from tests.fixtures_training import TOPICS, lora_tensors, tiny_config, write_dataset
from training.config import CONFIG_FILENAME, GRPOJobConfig, cuda_available
from training.trainer import run_grpo


@pytest.fixture(scope="module")
def base_model() -> str:
    from django.conf import settings

    from writer.model_files import prepare_model

    return str(prepare_model(Path(settings.WRITER_MODEL_PATH)))


# ---------------------------------------------------------------------------------------------
# Refused before any model loads


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        (lambda d: None, "does not exist"),
        (lambda d: d.mkdir(), "no train.jsonl"),
        (lambda d: (d.mkdir(), (d / "train.jsonl").write_text("\n")), "empty"),
        (lambda d: (d.mkdir(), (d / "train.jsonl").write_text("{not json\n")), "not valid JSON"),
        (lambda d: write_dataset(d, [{"prompt": "plain text", "answer": "x"}]), "chat messages"),
        (lambda d: write_dataset(d, [{"prompt": [{"role": "user", "content": "hi"}]}]), "'answer'"),
    ],
)
def test_bad_datasets_are_refused(tmp_path, setup, fragment):
    setup(tmp_path / "ds")
    with pytest.raises(ApplicationError, match=fragment):
        run_grpo(config=tiny_config("/nowhere"), dataset_dir=tmp_path / "ds", out_dir=tmp_path / "out")


def test_too_few_pairs_for_one_step_are_refused(tmp_path):
    ds = write_dataset(tmp_path / "ds")  # 4 pairs
    config = tiny_config(
        "/nowhere", num_generations=2, per_device_train_batch_size=2, gradient_accumulation_steps=5
    )
    with pytest.raises(ApplicationError, match="one step needs 5 prompt"):
        run_grpo(config=config, dataset_dir=ds, out_dir=tmp_path / "out")


def test_missing_base_model_is_refused(tmp_path):
    ds = write_dataset(tmp_path / "ds")
    with pytest.raises(ApplicationError, match="no config.json"):
        run_grpo(config=tiny_config(str(tmp_path / "nomodel")), dataset_dir=ds, out_dir=tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# Real runs


@pytest.mark.slow
def test_two_grpo_steps_train_the_lora_and_leave_the_base(base_model, tmp_path):
    ds = write_dataset(tmp_path / "ds")
    base_file = Path(base_model) / "model.safetensors"
    base_stat = (base_file.stat().st_size, base_file.stat().st_mtime_ns)
    calls: list[dict] = []

    result = run_grpo(
        config=tiny_config(base_model), dataset_dir=ds, out_dir=tmp_path / "out", on_step=calls.append
    )

    assert result.backend == "trl" and result.device == "cpu" and not result.cancelled
    assert result.steps == 2
    # on_step once per step, with every reward function's mean as TRL logged it
    assert [c["step"] for c in calls] == [1, 2]
    for entry in calls:
        assert set(entry["rewards"]) == {"rouge1", "format_partial"}
        assert all(isinstance(v, float) for v in entry["rewards"].values())
        assert isinstance(entry["reward"], float) and isinstance(entry["loss"], float)
        assert entry["seconds"] > 0 and entry["completion_length"] > 0
    assert result.step_logs == calls

    # The seed's check: every LoRA A and B matrix non-zero (B starts at zero, so B moved).
    assert result.lora_nonzero and result.lora_zero_tensors == []
    tensors = lora_tensors(result.adapter_path)
    b_mats = [t for k, t in tensors.items() if "lora_B" in k]
    assert len(b_mats) == 30 * 7  # 30 layers x q/k/v/o/gate/up/down
    assert all(bool((t != 0).any()) for t in tensors.values())
    # Base weights: exactly equal in memory before/after, and the model file untouched.
    assert result.base_unchanged
    assert (base_file.stat().st_size, base_file.stat().st_mtime_ns) == base_stat

    # The resolved config beside the adapter, not clashing with PEFT's adapter_config.json.
    assert result.config_path == result.adapter_path / CONFIG_FILENAME
    saved = GRPOJobConfig.load(result.config_path)
    assert (saved.backend, saved.device, saved.optim, saved.lora_alpha) == ("trl", "cpu", "adamw_torch", 8)
    assert saved.per_device_train_batch_size == 2 and saved.max_steps == 2
    meta = json.loads(result.config_path.read_text())["_meta"]
    assert meta["steps"] == 2 and meta["versions"]["trl"]
    peft_config = json.loads((result.adapter_path / "adapter_config.json").read_text())
    assert peft_config["r"] == 8 and set(peft_config["target_modules"]) == set(saved.target_modules)


@pytest.mark.slow
def test_resumes_from_the_last_checkpoint(base_model, tmp_path):
    ds, out = write_dataset(tmp_path / "ds"), tmp_path / "out"
    first = run_grpo(config=tiny_config(base_model, max_steps=1, save_steps=1), dataset_dir=ds, out_dir=out)
    assert first.steps == 1 and (out / "checkpoints" / "checkpoint-1").is_dir()

    calls: list[dict] = []
    second = run_grpo(
        config=tiny_config(base_model, max_steps=2, save_steps=1),
        dataset_dir=ds,
        out_dir=out,
        on_step=calls.append,
    )
    assert second.resumed_from == str(out.resolve() / "checkpoints" / "checkpoint-1")
    assert second.steps == 2 and [c["step"] for c in calls] == [2]  # step 1 was not run again
    assert second.lora_nonzero and second.base_unchanged


@pytest.mark.slow
def test_cancel_stops_with_a_checkpoint_and_no_adapter(base_model, tmp_path):
    ds, out = write_dataset(tmp_path / "ds"), tmp_path / "out"
    calls: list[dict] = []
    asked: list[int] = []

    def should_stop() -> bool:
        asked.append(len(calls))
        return len(asked) > 1  # asked once before training starts, then at the end of each step

    result = run_grpo(
        config=tiny_config(base_model, max_steps=3),
        dataset_dir=ds,
        out_dir=out,
        on_step=calls.append,
        should_stop=should_stop,
    )
    assert result.cancelled and result.steps == 1 and len(calls) == 1
    assert result.adapter_path is None and not (out / "adapter").exists()
    assert (out / "checkpoints" / "checkpoint-1").is_dir()  # what a rerun resumes from
    assert result.base_unchanged


@pytest.mark.slow
def test_cancel_before_the_first_step_trains_nothing(base_model, tmp_path):
    ds, out = write_dataset(tmp_path / "ds"), tmp_path / "out"
    calls: list[dict] = []
    result = run_grpo(
        config=tiny_config(base_model),
        dataset_dir=ds,
        out_dir=out,
        on_step=calls.append,
        should_stop=lambda: True,
    )
    assert result.cancelled and result.steps == 0 and calls == []
    assert result.adapter_path is None and not result.lora_nonzero  # LoRA B is still all zeros


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_of_another_shape(base_model, tmp_path):
    ds, out = write_dataset(tmp_path / "ds"), tmp_path / "out"
    (out / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    tiny_config(base_model, lora_rank=4).resolved(cuda=False).save(out / "checkpoints" / CONFIG_FILENAME)
    with pytest.raises(ApplicationError, match="lora_rank changed"):
        run_grpo(config=tiny_config(base_model), dataset_dir=ds, out_dir=out)


@pytest.mark.slow
def test_train_grpo_command_prints_the_result(db, base_model, tmp_path, capsys):
    from django.core.management import call_command

    ds, out = write_dataset(tmp_path / "ds"), tmp_path / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command(
        "train_grpo",
        "--dataset", str(ds), "--out", str(out), "--base-model", base_model,
        "--max-steps", "1", "--num-generations", "2", "--max-completion-length", "16",
        "--gradient-accumulation-steps", "1", "--lora-rank", "8", "--rewards", "rouge1,format_partial",
        "--learning-rate", "1e-4", "--warmup-ratio", "0",
        stdout=stdout, stderr=stderr,
    )  # fmt: skip
    printed = json.loads(stdout.getvalue())
    assert printed["adapter_path"] == str(out.resolve() / "adapter")
    assert printed["steps"] == 1 and printed["backend"] == "trl"
    assert set(printed["step_logs"][0]["rewards"]) == {"rouge1", "format_partial"}
    assert printed["lora_nonzero"] is True and printed["base_unchanged"] is True
    assert "step 1/1" in stderr.getvalue()
    assert "'loss'" not in capsys.readouterr().out  # transformers' log printing is off: stdout is the JSON


def test_command_rejects_a_bad_config_before_training(tmp_path):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="divisible by num_generations"):
        call_command(
            "train_grpo", "--dataset", str(tmp_path), "--out", str(tmp_path / "out"), "--base-model", str(tmp_path),
            "--num-generations", "4", "--per-device-train-batch-size", "3", "--gradient-accumulation-steps", "1",
            "--rewards", "rouge1",
        )  # fmt: skip
    with pytest.raises(CommandError, match="Unknown reward"):
        call_command(
            "train_grpo", "--dataset", str(tmp_path), "--out", str(tmp_path / "out"), "--base-model", str(tmp_path),
            "--rewards", "rouge11",
        )  # fmt: skip


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not cuda_available(), reason="needs CUDA")
def test_two_grpo_steps_on_cuda(base_model, tmp_path):
    ds = write_dataset(tmp_path / "ds")
    result = run_grpo(config=tiny_config(base_model), dataset_dir=ds, out_dir=tmp_path / "out")
    assert result.device == "cuda" and result.steps == 2
    assert result.lora_nonzero and result.base_unchanged
    saved = GRPOJobConfig.load(result.config_path, check_device=False)
    assert saved.optim == "adamw_torch_fused" and saved.backend == result.backend


@pytest.mark.slow
def test_a_distilled_dataset_trains_with_its_extra_columns(base_model, tmp_path):
    """`distill` adds existing_chapters, output_chapter, reasoning and completion to each row; GRPO
    takes such a dataset as it is (TRL would read a `completion` column as a training target)."""
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Write one sentence about {topic}."}],
            "answer": f"The chapter continues with {topic}.",
            "book": "b",
            "k": 1,
            "existing_chapters": "Chapter 1 ...",
            "output_chapter": f"The chapter continues with {topic}.",
            "reasoning": "<start_working_out>Because the sea calls.<end_working_out>",
            "completion": f"<start_working_out>x<end_working_out><SOLUTION>{topic}</SOLUTION>",
        }
        for topic in TOPICS
    ]
    result = run_grpo(
        config=tiny_config(base_model, max_steps=1), dataset_dir=write_dataset(tmp_path / "ds", rows), out_dir=tmp_path / "out"
    )
    assert result.steps == 1 and result.adapter_path is not None
