"""Shared training helpers for the tests (and the CPU benchmark's random LoRA): a tiny dataset as
build_dataset writes it, a tiny GRPO config, and a LoRA with random non-zero weights."""

from __future__ import annotations

import json
from pathlib import Path

from training.config import GRPOJobConfig

TOPICS = ["the sea", "a red bicycle", "winter mornings", "a lost key"]


def write_dataset(folder: Path, rows: list[dict] | None = None, *, split: str = "train") -> Path:
    """`rows` (or four short chat prompts with a reference answer) as `folder`/<split>.jsonl, as
    build_dataset writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    if rows is None:
        rows = [
            {
                "prompt": [
                    {"role": "system", "content": "You write short, vivid prose."},
                    {"role": "user", "content": f"Write one sentence about {topic}."},
                ],
                "answer": f"The chapter continues with {topic}.",
                "book": f"book-{i % 2}",
                "k": i + 1,
            }
            for i, topic in enumerate(TOPICS)
        ]
        rows[1]["brand_terms"] = ["Acme"]  # a column only some rows have reaches the rewards too
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def tiny_config(base_model: str, **overrides) -> GRPOJobConfig:
    """A GRPO job that trains on CPU in seconds: 2 steps of 2 completions x 16 tokens, LoRA rank 8."""
    values = {
        "base_model": base_model,
        "lora_rank": 8,
        "num_generations": 2,
        "gradient_accumulation_steps": 1,  # 2 completions = 1 prompt x 2 generations a step
        "max_completion_length": 16,
        "max_steps": 2,
        "learning_rate": 1e-4,
        "warmup_ratio": 0.0,  # a warmup step runs at learning rate 0: the LoRA would not move
        "reward_names": ["rouge1", "format_partial"],
        "reward_weights": [1.0, 0.5],
        "report_to": "none",
    }
    values.update(overrides)
    return GRPOJobConfig(**values)


def make_random_lora(base_dir: Path, out_dir: Path, *, r: int = 8, seed: int = 0) -> Path:
    """Save a LoRA (q_proj, v_proj) with random non-zero weights for `base_dir` into `out_dir`.

    `init_lora_weights=False` makes B non-zero too, so unlike a freshly initialised LoRA it really
    changes the model's output.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out_dir = Path(out_dir)
    if (out_dir / "adapter_config.json").is_file() and (out_dir / "adapter_model.safetensors").is_file():
        return out_dir
    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=r,
        lora_alpha=2 * r,
        target_modules=["q_proj", "v_proj"],
        lora_dropout=0.0,
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(base, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(out_dir)
    return out_dir


def lora_tensors(adapter: Path) -> dict:
    """Every tensor of a saved LoRA folder, by name."""
    from safetensors import safe_open

    with safe_open(str(adapter / "adapter_model.safetensors"), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}
