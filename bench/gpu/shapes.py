"""Model folders of a realistic size for the GPU benchmarks, without downloading any weights.

    python3 bench/gpu/shapes.py config  --out /tmp/models/llama3b-shape [--tokenizer /tmp/models/smollm2]
    python3 bench/gpu/shapes.py loras   --base /tmp/models/llama3b-shape --out /tmp/models/llama3b-loras [--count 4 --rank 16]
    python3 bench/gpu/shapes.py weights --base /tmp/models/llama3b-shape --out /tmp/models/llama3b-random   (CUDA)
    python3 bench/gpu/shapes.py minilm  --assets DIR --out DIR                                            (random MiniLM)

Weights do not change speed, so the writer is measured at the shape of Llama-3.2-3B: hidden 3072,
28 layers, 24 attention heads, 8 KV heads (head dim 128), MLP 8192, tied embeddings, with the
vocabulary of the tokenizer used (SmolLM2's, 49,152 tokens, so prompts are tokenized the same way
as the writer's). vLLM serves the `config` folder with `--load-format dummy`; `weights` saves
random bf16 weights for what must load a folder (Unsloth, TRL + vLLM); `loras` writes random rank-r
LoRAs on q/k/v/o/gate/up/down (B non-zero, so the LoRA path really computes).

Parameter count and bytes per decode step (for the roofline) come from `shape_numbers`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "chat_template.jinja", "generation_config.json")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

LLAMA_3B_SHAPE = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_hidden_layers": 28,
    "num_attention_heads": 24,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "attention_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": True,
    "initializer_range": 0.02,
    "torch_dtype": "bfloat16",
    "use_cache": True,
}


def shape_numbers(config: dict) -> dict:
    """Parameters, bf16 weight bytes and KV-cache bytes per token of a Llama-style config."""
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    d = config.get("head_dim") or h // heads
    vocab = config["vocab_size"]
    per_layer = h * heads * d + 2 * h * kv * d + heads * d * h + 3 * h * i + 2 * h  # q, k+v, o, MLP, 2 norms
    embed = vocab * h
    head = 0 if config.get("tie_word_embeddings") else vocab * h
    params = layers * per_layer + embed + head + h
    return {
        "params": params,
        # A decode step reads every weight once except the embedding rows (a lookup); the tied lm_head
        # reads the whole embedding matrix, so with tied embeddings that is all parameters.
        "weight_bytes_per_step": 2 * (params - (0 if config.get("tie_word_embeddings") else embed)),
        "kv_bytes_per_token": 2 * layers * kv * d * 2,  # K and V, every layer, bf16
    }


def write_config(out: Path, tokenizer: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    tok_config = json.loads((tokenizer / "config.json").read_text())
    config = dict(LLAMA_3B_SHAPE)
    config["vocab_size"] = tok_config["vocab_size"]
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if tok_config.get(key) is not None:
            config[key] = tok_config[key]
    (out / "config.json").write_text(json.dumps(config, indent=1))
    for name in TOKENIZER_FILES:
        if (tokenizer / name).is_file():
            shutil.copy2(tokenizer / name, out / name)
    return config


def write_loras(base: Path, out: Path, count: int, rank: int, seed: int = 0) -> list[Path]:
    import torch
    from safetensors.torch import save_file

    config = json.loads((base / "config.json").read_text())
    h, i = config["hidden_size"], config["intermediate_size"]
    d = config.get("head_dim") or h // config["num_attention_heads"]
    q, kv = config["num_attention_heads"] * d, config["num_key_value_heads"] * d
    dims = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    paths = []
    for n in range(count):
        g = torch.Generator().manual_seed(seed + n)
        tensors = {}
        for layer in range(config["num_hidden_layers"]):
            for module in LORA_TARGETS:
                fan_in, fan_out = dims[module]
                part = "self_attn" if module in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
                prefix = f"base_model.model.model.layers.{layer}.{part}.{module}"
                tensors[f"{prefix}.lora_A.weight"] = (torch.randn(rank, fan_in, generator=g) / fan_in**0.5).bfloat16()
                tensors[f"{prefix}.lora_B.weight"] = (torch.randn(fan_out, rank, generator=g) * 0.01).bfloat16()
        folder = out / f"lora{n + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(folder / "adapter_model.safetensors"))
        (folder / "adapter_config.json").write_text(json.dumps({
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(base),
            "r": rank, "lora_alpha": rank, "lora_dropout": 0.0, "target_modules": list(LORA_TARGETS),
            "bias": "none", "fan_in_fan_out": False, "modules_to_save": None, "use_rslora": False,
            "use_dora": False, "inference_mode": True, "rank_pattern": {}, "alpha_pattern": {},
        }, indent=1))
        paths.append(folder)
    return paths


def write_weights(base: Path, out: Path, seed: int = 0) -> Path:
    """Random bf16 weights of `base`'s config, initialised on the GPU (seconds), saved as safetensors."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    config = AutoConfig.from_pretrained(base)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (base / name).is_file() and not (out / name).exists():
            shutil.copy2(base / name, out / name)
    return out


def write_minilm(assets: Path, out: Path, seed: int = 0) -> Path:
    """MiniLM-L6's architecture with random weights and its real tokenizer (BERTScore timing)."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    BertModel(BertConfig.from_pretrained(assets)).save_pretrained(out)
    for f in assets.iterdir():
        if f.name != "config.json":
            shutil.copy2(f, out / f.name)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["config", "loras", "weights", "minilm"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tokenizer", type=Path, default=Path("/tmp/models/smollm2"))
    ap.add_argument("--base", type=Path, default=Path("/tmp/models/llama3b-shape"))
    ap.add_argument("--assets", type=Path, default=Path("/tmp/mesu/assets/minilm"))
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--rank", type=int, default=16)
    args = ap.parse_args()
    if args.what == "config":
        config = write_config(args.out, args.tokenizer)
        print(json.dumps({"config": str(args.out), **shape_numbers(config)}))
    elif args.what == "loras":
        print(json.dumps({"loras": [str(p) for p in write_loras(args.base, args.out, args.count, args.rank)]}))
    elif args.what == "weights":
        print(json.dumps({"weights": str(write_weights(args.base, args.out))}))
    else:
        print(json.dumps({"minilm": str(write_minilm(args.assets, args.out))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
