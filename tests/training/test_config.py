"""GRPOJobConfig: the seed's defaults, every rejected combination, resolution and JSON round trip.

The rewards are the real registry's cheap ones (ROUGE-1 against the answer, partial format credit).
"""

from __future__ import annotations

import json

import pytest

from mesu_web.errors import ApplicationError
from training.config import CONFIG_FILENAME, FALLBACK_REWARD_WEIGHTS, GRPOJobConfig, cuda_available

BASE = "/models/base"


def make(**overrides) -> GRPOJobConfig:
    values = {"base_model": BASE, "reward_names": ["rouge1", "format_partial"], "reward_weights": [1.0, 1.0]}
    values.update(overrides)
    return GRPOJobConfig(**values)


# ---------------------------------------------------------------------------------------------
# Defaults


def test_defaults_are_the_seeds():
    c = make()
    assert c.lora_rank == 64
    assert c.lora_alpha is None and c.effective_lora_alpha == 64  # alpha = rank
    assert c.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert c.learning_rate == 5e-6
    assert c.lr_scheduler_type == "cosine"
    assert c.warmup_ratio == 0.1
    assert c.weight_decay == 0.1
    assert c.optim == "adamw_torch_fused"
    assert c.gradient_accumulation_steps == 4
    assert c.num_generations == 8
    assert c.per_device_train_batch_size is None and c.effective_batch_size == 8  # = num_generations
    assert c.max_grad_norm == 0.1
    assert c.save_steps == 250
    assert c.report_to == "none"
    assert c.backend == "auto" and c.use_vllm is False
    # Not the seed's, but pinned so that TRL (default "dapo") and Unsloth (default "bnpo", beta 0.001) agree.
    assert (c.loss_type, c.beta, c.mask_truncated_completions) == ("bnpo", 0.0, False)


def test_every_field_has_help_text():
    helps = GRPOJobConfig.help_texts()
    assert helps and all(text.strip() for text in helps.values()), [
        k for k, v in helps.items() if not v.strip()
    ]


def test_default_rewards_come_from_the_registry():
    c = GRPOJobConfig(base_model=BASE, check_device=False)
    try:
        from training.rewards import DEFAULT_WEIGHTS
    except ImportError:
        expected = FALLBACK_REWARD_WEIGHTS
    else:
        expected = DEFAULT_WEIGHTS if isinstance(DEFAULT_WEIGHTS, dict) else dict(DEFAULT_WEIGHTS)
    assert dict(zip(c.reward_names, c.reward_weights, strict=True)) == {
        k: float(v) for k, v in expected.items()
    }


# ---------------------------------------------------------------------------------------------
# Rejected combinations (each before any model is loaded)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        # TRL's rule: per_device_train_batch_size x gradient_accumulation_steps % num_generations == 0.
        (
            {"num_generations": 8, "per_device_train_batch_size": 3, "gradient_accumulation_steps": 1},
            "divisible",
        ),
        (
            {"num_generations": 4, "per_device_train_batch_size": 6, "gradient_accumulation_steps": 1},
            "divisible",
        ),
        ({"num_generations": 1}, "at least 2"),
        ({"num_generations": 0}, "at least 2"),
        ({"lora_alpha": 0}, "lora_alpha"),
        ({"lora_alpha": -16}, "lora_alpha"),
        ({"lora_rank": 0}, "lora_rank"),
        ({"lora_dropout": 1.0}, "lora_dropout"),
        ({"target_modules": []}, "target_modules"),
        ({"max_steps": 0}, "max_steps"),
        ({"max_completion_length": 0}, "max_completion_length"),
        ({"max_prompt_length": 0}, "max_prompt_length"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"warmup_ratio": 1.0}, "warmup_ratio"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"max_grad_norm": 0}, "max_grad_norm"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size"),
        ({"save_steps": 0}, "save_steps"),
        ({"save_total_limit": 0}, "save_total_limit"),
        ({"temperature": 0}, "temperature"),
        ({"beta": -1}, "beta"),
        ({"loss_type": "ppo"}, "loss_type"),
        ({"seed": -1}, "seed"),
        ({"lr_scheduler_type": "cosine_wobble"}, "lr_scheduler_type"),
        ({"optim": "adamw_magic"}, "optim"),
        ({"backend": "jax"}, "backend"),
        ({"device": "tpu"}, "device"),
        ({"base_model": ""}, "base_model"),
        ({"backend": "unsloth", "device": "cpu"}, "unsloth"),
        ({"use_vllm": True, "device": "cpu"}, "use_vllm"),
        ({"vllm_gpu_memory_utilization": 0}, "vllm_gpu_memory_utilization"),
        ({"reward_names": []}, "at least one reward"),
        ({"reward_names": ["rouge1", "bleu"], "reward_weights": [1.0]}, "one weight per reward"),
        ({"reward_names": ["rouge1"], "reward_weights": [1.0, 2.0]}, "one weight per reward"),
        ({"reward_names": ["rouge1", "rouge1"], "reward_weights": [1.0, 1.0]}, "more than once"),
        ({"reward_weights": [0.0]}, "all 0"),
        ({"reward_weights": [float("inf")]}, "finite"),
        ({"reward_names": ["blue"], "reward_weights": [1.0]}, "bleu"),  # a typo names the valid choices
    ],
)
def test_rejects_bad_combinations(overrides, fragment):
    with pytest.raises(ApplicationError) as info:
        make(**overrides)
    assert fragment in info.value.message
    assert info.value.extra["errors"]


def test_batch_rule_accepts_multiples():
    # 2 x 4 = 8 completions = 2 prompts x 4 generations
    c = make(num_generations=4, per_device_train_batch_size=2, gradient_accumulation_steps=4)
    assert c.completions_per_step == 8 and c.prompts_per_step == 2


def test_reports_every_problem_at_once():
    with pytest.raises(ApplicationError) as info:
        make(max_steps=0, lora_alpha=0, learning_rate=-1)
    assert len(info.value.extra["errors"]) == 3


@pytest.mark.skipif(cuda_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize(
    "overrides",
    [{"backend": "unsloth"}, {"use_vllm": True}, {"device": "cuda"}, {"optim": "adamw_8bit"}],
)
def test_cuda_only_requests_are_refused_without_cuda(overrides):
    with pytest.raises(ApplicationError) as info:
        make(**overrides)
    assert "CUDA" in info.value.message


def test_a_saved_gpu_config_reads_back_on_cpu():
    data = make().to_dict() | {"backend": "unsloth", "use_vllm": True, "device": "cuda"}
    c = GRPOJobConfig.from_dict(data, check_device=False)
    assert c.backend == "unsloth" and c.use_vllm


# ---------------------------------------------------------------------------------------------
# From the admin page's form


def form_data(**overrides) -> dict:
    """TrainingJobForm's cleaned_data (learning rate and warmup left empty)."""
    data = {
        "name": "try",
        "dataset_dir": "/data/ds",
        "out_dir": "/runs/out",
        "max_steps": 2,
        "num_generations": 2,
        "max_completion_length": 16,
        "lora_rank": 8,
        "gradient_accumulation_steps": 1,
        "rewards": " format_partial, rouge1 ,",
        "learning_rate": None,
        "warmup_ratio": None,
    }
    return data | overrides


def test_from_form_builds_the_config_the_page_always_built():
    c = GRPOJobConfig.from_form(form_data(), base_model=BASE)
    assert c == GRPOJobConfig(
        base_model=BASE,
        max_steps=2,
        num_generations=2,
        per_device_train_batch_size=2,
        max_completion_length=16,
        lora_rank=8,
        gradient_accumulation_steps=1,
        reward_names=["format_partial", "rouge1"],
        reward_weights=[1.0, 1.0],
    )
    # Every chosen reward weighs 1.0; empty learning rate and warmup keep the config's defaults.
    assert (c.learning_rate, c.warmup_ratio) == (5e-6, 0.1)


def test_from_form_passes_learning_rate_and_warmup_through():
    c = GRPOJobConfig.from_form(form_data(learning_rate=2e-4, warmup_ratio=0.0), base_model=BASE)
    assert (c.learning_rate, c.warmup_ratio) == (2e-4, 0.0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"learning_rate": -1e-5}, "learning_rate must be > 0, not -1e-05."),
        ({"learning_rate": 0.0}, "learning_rate must be > 0, not 0.0."),
        ({"warmup_ratio": 1.0}, "warmup_ratio must be in [0, 1), not 1.0."),
        ({"warmup_ratio": -0.1}, "warmup_ratio must be in [0, 1), not -0.1."),
    ],
)
def test_from_form_rejects_bad_values_with_a_clear_message(overrides, message):
    with pytest.raises(ApplicationError) as info:
        GRPOJobConfig.from_form(form_data(**overrides), base_model=BASE)
    # The form puts each problem beside the field its message starts with.
    assert info.value.extra["errors"] == [message]
    assert message in info.value.message


def test_from_form_names_a_reward_typo():
    with pytest.raises(ApplicationError, match="did you mean 'bleu'"):
        GRPOJobConfig.from_form(form_data(rewards="rouge1,blue"), base_model=BASE)


# ---------------------------------------------------------------------------------------------
# Resolution and JSON


def test_resolved_on_cpu_records_what_runs():
    r = make(lora_rank=16, num_generations=4).resolved(cuda=False)
    assert (r.backend, r.device, r.optim) == ("trl", "cpu", "adamw_torch")  # no fused AdamW on CPU here
    assert r.lora_alpha == 16 and r.per_device_train_batch_size == 4


def test_resolved_on_cuda_keeps_fused_adamw():
    r = make().resolved(cuda=True, backend="unsloth")
    assert (r.backend, r.device, r.optim) == ("unsloth", "cuda", "adamw_torch_fused")


def test_json_round_trip(tmp_path):
    c = make(lora_rank=16, lora_alpha=32, reward_names=["rouge1", "bleu"], reward_weights=[1.0, 0.5])
    path = c.save(tmp_path / CONFIG_FILENAME, meta={"steps": 2})
    data = json.loads(path.read_text())
    assert data["_meta"] == {"steps": 2} and data["lora_alpha"] == 32
    assert GRPOJobConfig.load(path) == c
    assert GRPOJobConfig.from_dict(c.to_dict()) == c


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ApplicationError, match="lora_rnak"):
        GRPOJobConfig.from_dict(make().to_dict() | {"lora_rnak": 8})


def test_real_registry_rejects_a_typo():
    rewards = pytest.importorskip("training.rewards")
    name = next(iter(rewards.REWARDS))
    with pytest.raises(ApplicationError, match="Unknown reward"):
        GRPOJobConfig(base_model=BASE, reward_names=[name + "x"], reward_weights=[1.0])
