"""The supervised warm start (run_sft, train_sft) and GRPO continuing from its adapter (init_adapter).

The slow tests train for real on SmolLM2 on CPU (TRL SFTTrainer + PEFT LoRA rank 8, a few steps of
one short row each) and check what the GRPO tests check: LoRA non-zero, base weights unchanged, the
resolved config beside the adapter. The masking test runs TRL's own tokenization and collator and
reads the labels; the init_adapter test compares the SFT adapter's tensors with the GRPO ones.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest

from mesu_web.errors import ApplicationError
from tests.fixtures_training import TOPICS, lora_tensors, write_dataset
from training.config import CONFIG_FILENAME, DEFAULT_TARGET_MODULES, GRPOJobConfig, SFTJobConfig
from training.distill import full_completion, tag_reasoning
from training.sft import STORY_SHORTENED, cut_answer, fit_prompt, make_sft_trainer, run_sft, sft_examples
from writer.parsing import parse_output
from writer.prompting import SYSTEM_PROMPT, ChapterText, StoryMeta, build_prompt


@pytest.fixture(scope="module")
def base_model() -> str:
    from django.conf import settings

    from writer.model_files import prepare_model

    return str(prepare_model(Path(settings.WRITER_MODEL_PATH)))


@pytest.fixture(scope="module")
def tokenizer(base_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_model)


def distilled_rows(*, without_reasoning: int = 0) -> list[dict]:
    """Four rows as `distill` writes them (tagged reasoning); the first `without_reasoning` have none."""
    rows = []
    for i, topic in enumerate(TOPICS):
        reasoning = f"The reader wants {topic}, told plainly."
        rows.append(
            {
                "prompt": [
                    {"role": "system", "content": "You write short, vivid prose."},
                    {"role": "user", "content": f"Write one sentence about {topic}."},
                ],
                "answer": f"The chapter continues with {topic}.",
                "book": f"book-{i % 2}",
                "k": 1,
                "reasoning": "" if i < without_reasoning else tag_reasoning(reasoning),
                "completion": full_completion(reasoning, f"The chapter continues with {topic}."),
            }
        )
    return rows


def tiny_sft(base_model: str, **overrides) -> SFTJobConfig:
    """An SFT job that trains on CPU in seconds: one short row a step, LoRA rank 8."""
    values = {
        "base_model": base_model,
        "lora_rank": 8,
        "max_steps": 4,
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1e-3,  # high, so that 4 steps move the loss clearly
        "warmup_ratio": 0.0,
        "max_length": 256,
        "gradient_checkpointing": False,  # slower on CPU, and nothing to save at this size
        "report_to": "none",
    }
    values.update(overrides)
    return SFTJobConfig(**values)


# ---------------------------------------------------------------------------------------------
# Refused before any model loads


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        (lambda d: None, "does not exist"),
        (lambda d: d.mkdir(), "no train.jsonl"),
        (lambda d: (d.mkdir(), (d / "train.jsonl").write_text("\n")), "empty"),
        (lambda d: write_dataset(d, [{"prompt": [{"role": "user", "content": "hi"}]}]), "'answer'"),
        (lambda d: write_dataset(d), "None of the 4 row\\(s\\) .* has a reasoning"),  # build_dataset's rows
    ],
)
def test_bad_datasets_are_refused(tmp_path, setup, fragment):
    setup(tmp_path / "ds")
    with pytest.raises(ApplicationError, match=fragment):
        run_sft(config=tiny_sft("/nowhere"), dataset_dir=tmp_path / "ds", out_dir=tmp_path / "out")


def test_undistilled_dataset_points_to_its_distilled_folder(tmp_path):
    ds = write_dataset(tmp_path / "ds")
    write_dataset(ds / "distilled", distilled_rows())
    with pytest.raises(ApplicationError, match="distilled has the distilled rows: pass that folder"):
        run_sft(config=tiny_sft("/nowhere"), dataset_dir=ds, out_dir=tmp_path / "out")


def test_missing_base_model_is_refused(tmp_path):
    ds = write_dataset(tmp_path / "ds", distilled_rows())
    with pytest.raises(ApplicationError, match="no config.json"):
        run_sft(config=tiny_sft(str(tmp_path / "nomodel")), dataset_dir=ds, out_dir=tmp_path / "out")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"max_length": 10}, "max_length"),
        ({"without_reasoning": "drop"}, "without_reasoning"),
        ({"lora_rank": 0}, "lora_rank"),
        ({"max_steps": 0}, "max_steps"),
        ({"num_train_epochs": 0}, "num_train_epochs"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"device": "tpu"}, "device must be one of"),
    ],
)
def test_sft_config_rejects_bad_values(overrides, fragment):
    with pytest.raises(ApplicationError, match=fragment):
        tiny_sft("/models/base", **overrides)


def test_sft_config_round_trips_and_resolves_for_cpu(tmp_path):
    config = tiny_sft("/models/base", lora_alpha=None)
    resolved = config.resolved(cuda=False)
    assert (resolved.device, resolved.optim, resolved.lora_alpha) == ("cpu", "adamw_torch", 8)
    path = resolved.save(tmp_path / CONFIG_FILENAME, meta={"stage": "sft"})
    assert SFTJobConfig.load(path) == resolved
    assert all(text.strip() for text in SFTJobConfig.help_texts().values())


def test_grpo_init_adapter_must_have_the_jobs_lora_shape(tmp_path):
    adapter = tmp_path / "sft"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"r": 8, "lora_alpha": 16, "target_modules": ["v_proj", "q_proj"]})
    )
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    base = {"base_model": "/models/base", "reward_names": ["rouge1"], "reward_weights": [1.0]}
    same = GRPOJobConfig(
        **base, init_adapter=str(adapter), lora_rank=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]
    )
    assert same.init_adapter_problems() == []
    with pytest.raises(ApplicationError, match="another shape: lora_rank 8 \\(the job's 64\\)"):
        GRPOJobConfig(**base, init_adapter=str(adapter), lora_alpha=16, target_modules=["q_proj", "v_proj"])
    with pytest.raises(ApplicationError, match="no adapter_config.json"):
        GRPOJobConfig(**base, init_adapter=str(tmp_path / "missing"))
    # A saved config read back on another machine is not checked against this machine's files.
    GRPOJobConfig(**base, init_adapter=str(tmp_path / "missing"), check_device=False)


# ---------------------------------------------------------------------------------------------
# Rows -> examples (the tokenizer only)


def test_rows_without_reasoning_are_skipped_or_get_an_empty_block(tokenizer):
    rows = distilled_rows(without_reasoning=1)
    skipped = sft_examples(rows, tokenizer, max_length=256, without_reasoning="skip")
    assert len(skipped.examples) == 3 and skipped.without_reasoning == 1
    target = skipped.examples[0]["completion"][0]["content"]
    # The distilled reasoning is tagged once, not twice, and the writer's parser reads the target back.
    assert target == full_completion("The reader wants a red bicycle, told plainly.", rows[1]["answer"])
    assert target == rows[1]["completion"]
    parsed = parse_output(target)
    assert parsed.format_ok and parsed.text == rows[1]["answer"]

    emptied = sft_examples(rows, tokenizer, max_length=256, without_reasoning="empty")
    assert len(emptied.examples) == 4 and emptied.without_reasoning == 1
    empty_target = emptied.examples[0]["completion"][0]["content"]
    assert empty_target == full_completion("", rows[0]["answer"])
    parsed = parse_output(empty_target)
    assert parsed.format_ok and parsed.reasoning == "" and parsed.text == rows[0]["answer"]


def test_a_long_chapter_is_cut_at_a_sentence_end_within_the_writers_budget(tokenizer):
    chapter = " ".join(f"Sentence {i} tells how the boats came home under a grey sky." for i in range(200))
    cut = cut_answer(tokenizer, chapter, 64)
    assert len(tokenizer(cut, add_special_tokens=False)["input_ids"]) <= 64
    assert chapter.startswith(cut) and cut.endswith("sky.") and cut.count("sky.") >= 3  # ~15 tokens a sentence
    assert cut_answer(tokenizer, chapter, 0) == chapter and cut_answer(tokenizer, "Short.", 64) == "Short."
    no_end = "and the sea went on " * 50
    assert no_end.startswith(cut_answer(tokenizer, no_end, 16)) and cut_answer(tokenizer, no_end, 16)
    rows = [dict(distilled_rows()[0], answer=chapter, reasoning=chapter)]
    made = sft_examples(
        rows, tokenizer, max_length=4096, without_reasoning="skip", max_answer_tokens=64, max_reasoning_tokens=16
    )
    parsed = parse_output(made.examples[0]["completion"][0]["content"])
    assert parsed.format_ok and parsed.text == cut  # the cut chapter still closes its tags
    assert parsed.reasoning == cut_answer(tokenizer, chapter, 16) and parsed.reasoning.endswith("sky.")


def _count(tokenizer, messages, **kwargs) -> int:
    text = tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_a_long_prompt_loses_its_oldest_story_text(tokenizer):
    """A writer prompt (writer.prompting.build_prompt) over max_length keeps the system prompt, chapter 0,
    the newest text and the task; the cut is marked. A completion too long for any prompt drops the row."""
    chapters = [
        ChapterText(number=n, title="", text=f"Opening line of chapter {n}. " + "The tide came in again. " * 60 + f"Last words of chapter {n}.")
        for n in (1, 2, 3)
    ]  # fmt: skip
    meta = StoryMeta(title="The Lighthouse", summary="A keeper and his daughter.")
    prompt = build_prompt(
        meta=meta,
        chapters=chapters,
        count_tokens=lambda t: len(tokenizer(t, add_special_tokens=False)["input_ids"]),
        budget_tokens=4000,
    ).messages
    completion = [{"role": "assistant", "content": full_completion("Keep the tide.", "The lamp went out.")}]
    whole = _count(tokenizer, prompt + completion)
    limit = whole - 300

    fitted = fit_prompt(tokenizer, prompt, completion, limit)
    assert fitted is not None and fitted is not prompt
    assert _count(tokenizer, fitted + completion) <= limit
    assert _count(tokenizer, fitted + completion) > limit - 40  # as much story as fits, not less
    assert fitted[0] == {"role": "system", "content": SYSTEM_PROMPT}
    user = fitted[1]["content"]
    assert user.startswith("## Chapter 0: About the story") and "A keeper and his daughter." in user
    assert STORY_SHORTENED in user and "Opening line of chapter 1." not in user
    assert "Last words of chapter 3." in user and user.endswith(prompt[1]["content"][-200:])
    assert user.index("A keeper and his daughter.") < user.index(STORY_SHORTENED) < user.index("## Your task")

    assert fit_prompt(tokenizer, prompt, completion, whole) is prompt  # fits: untouched
    rows = [{"prompt": prompt, "answer": "The lamp went out. " * 200, "reasoning": "Keep the tide."}]
    made = sft_examples(rows, tokenizer, max_length=limit, without_reasoning="skip")
    assert made.examples == [] and made.too_long == 1


# ---------------------------------------------------------------------------------------------
# Real runs


@pytest.mark.slow
def test_prompt_tokens_are_masked_from_the_loss(base_model, tokenizer, tmp_path):
    """TRL's own tokenization and collator: labels are -100 on every prompt token and the input ids on
    every completion token (the target, then the chat template's end of turn)."""
    from training.trainer import load_model

    job = tiny_sft(base_model).resolved(cuda=False)
    tok, model, peft_config = load_model(job, Path(base_model), False)
    made = sft_examples(distilled_rows()[:1], tok, max_length=job.max_length, without_reasoning="skip")
    trainer = make_sft_trainer(
        job=job,
        model=model,
        tokenizer=tok,
        peft_config=peft_config,
        examples=made.examples,
        ckpt_root=tmp_path,
    )
    example = trainer.train_dataset[0]
    # TRL 1.16 builds labels while preparing the dataset; 1.15 keeps a completion_mask for the collator.
    keep = ("input_ids", "labels", "completion_mask", "attention_mask")
    batch = trainer.data_collator([{k: example[k] for k in keep if k in example}])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()

    prompt_len = _count(tokenizer, made.examples[0]["prompt"], add_generation_prompt=True)
    assert 0 < prompt_len < len(ids)
    assert all(label == -100 for label in labels[:prompt_len])
    assert labels[prompt_len:] == ids[prompt_len:]
    trained = tokenizer.decode(ids[prompt_len:])
    assert trained.startswith(made.examples[0]["completion"][0]["content"])
    assert trained[len(made.examples[0]["completion"][0]["content"]) :].strip() == "<|im_end|>"


@pytest.mark.slow
def test_sft_trains_the_lora_and_leaves_the_base(base_model, tmp_path):
    ds = write_dataset(tmp_path / "ds", distilled_rows(without_reasoning=1))
    base_file = Path(base_model) / "model.safetensors"
    base_stat = (base_file.stat().st_size, base_file.stat().st_mtime_ns)
    calls: list[dict] = []

    result = run_sft(
        config=tiny_sft(base_model), dataset_dir=ds, out_dir=tmp_path / "out", on_step=calls.append
    )

    assert result.device == "cpu" and not result.cancelled and result.steps == 4
    assert (result.rows_used, result.rows_without_reasoning, result.rows_skipped) == (3, 1, 1)
    assert (result.rows_trimmed, result.rows_too_long) == (0, 0)
    losses = [c["loss"] for c in calls]
    assert [c["step"] for c in calls] == [1, 2, 3, 4] and result.step_logs == calls
    assert all(isinstance(x, float) and math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]  # lr 1e-3 on three short rows: the loss drops within 4 steps
    assert result.final_loss == losses[-1]

    assert result.lora_nonzero and result.lora_zero_tensors == []
    tensors = lora_tensors(result.adapter_path)
    assert len([k for k in tensors if "lora_B" in k]) == 30 * 7  # 30 layers x q/k/v/o/gate/up/down
    assert result.base_unchanged
    assert (base_file.stat().st_size, base_file.stat().st_mtime_ns) == base_stat

    # The resolved config beside the adapter (what the registry reads), and the per-step log.
    saved = SFTJobConfig.load(result.config_path)
    assert (saved.device, saved.optim, saved.lora_alpha, saved.base_model) == (
        "cpu",
        "adamw_torch",
        8,
        base_model,
    )
    meta = json.loads(result.config_path.read_text())["_meta"]
    assert (
        meta["stage"] == "sft" and meta["rows_used"] == 3 and meta["steps"] == 4 and meta["versions"]["trl"]
    )
    log = json.loads((tmp_path / "out" / "sft_log.json").read_text())
    assert [e["loss"] for e in log["steps"]] == losses and log["result"]["steps"] == 4

    # PEFT loads it onto the base, and it changes the model's output.
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        before = model(ids).logits
        after = PeftModel.from_pretrained(model, str(result.adapter_path))(ids).logits
    assert not torch.allclose(before, after)


@pytest.mark.slow
def test_train_sft_then_grpo_continues_from_its_adapter(db, base_model, tmp_path, settings):
    """train_sft (registered like a GRPO adapter), then train_grpo --init-adapter: GRPO starts from the
    SFT weights. With a learning rate of 1e-9 one GRPO step moves no weight by more than ~1e-9, so the
    GRPO adapter must equal the SFT one; a fresh LoRA would have B at ~1e-9 instead of the SFT's B."""
    from django.core.management import call_command

    from training.models import WriterAdapter
    from writer.engines import vllm

    settings.WRITER_ADAPTER_DIR = tmp_path / "adapters"
    settings.WRITER_ENGINE, settings.WRITER_BASE_URL = "vllm", "http://127.0.0.1:9/v1"  # nothing listens
    settings.WRITER_MAX_RETRIES = 0
    vllm.reset_caches()
    ds = write_dataset(tmp_path / "ds", distilled_rows())
    sft_out, grpo_out = tmp_path / "sft", tmp_path / "grpo"
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        call_command(
            "train_sft", "--dataset", str(ds), "--out", str(sft_out), "--base-model", base_model,
            "--max-steps", "2", "--lr", "1e-3", "--lora-rank", "8", "--max-length", "256", "--batch-size", "1",
            "--gradient-accumulation-steps", "1", "--warmup-ratio", "0", "--device", "cpu", "--register", "sft-warm",
            stdout=stdout, stderr=stderr,
        )  # fmt: skip
        printed = json.loads(stdout.getvalue())
        assert printed["steps"] == 2 and printed["adapter_path"] == str(sft_out.resolve() / "adapter")
        assert printed["rows_used"] == 4 and printed["rows_skipped"] == 0
        assert math.isfinite(printed["final_loss"]) and printed["lora_nonzero"] and printed["base_unchanged"]
        assert "step 2:" in stderr.getvalue()
        registered = WriterAdapter.objects.get(name="sft-warm")
        assert printed["adapter_name"] == "sft-warm" and registered.base_model == base_model
        assert (
            registered.lora_rank == 8
            and registered.lora_nonzero
            and registered.config["_meta"]["stage"] == "sft"
        )
        sft = lora_tensors(sft_out / "adapter")

        stdout = io.StringIO()
        call_command(
            "train_grpo", "--dataset", str(ds), "--out", str(grpo_out), "--base-model", base_model,
            "--init-adapter", str(sft_out / "adapter"), "--max-steps", "1", "--num-generations", "2",
            "--max-completion-length", "8", "--gradient-accumulation-steps", "1", "--rewards", "rouge1,format_partial",
            "--learning-rate", "1e-9", "--warmup-ratio", "0",
            stdout=stdout, stderr=io.StringIO(),
        )  # fmt: skip
    finally:
        vllm.reset_caches()
    printed = json.loads(stdout.getvalue())
    assert printed["steps"] == 1 and printed["base_unchanged"]
    saved = GRPOJobConfig.load(Path(printed["config_path"]))
    assert saved.init_adapter == str((sft_out / "adapter").resolve()) and saved.lora_rank == 8
    assert saved.lora_alpha == 8 and sorted(saved.target_modules) == sorted(DEFAULT_TARGET_MODULES)
    grpo = lora_tensors(Path(printed["adapter_path"]))
    assert set(grpo) == set(sft)
    b_max = max(float(t.abs().max()) for k, t in sft.items() if "lora_B" in k)
    assert b_max > 1e-4  # the SFT's B moved far from a fresh LoRA's zeros
    worst = max(float((grpo[k] - sft[k]).abs().max()) for k in sft)
    assert worst < 1e-6, worst
