"""Where the reward models and WordNet come from, and how they run: `RewardSettings`, read from the
environment once per process (`get_settings`), changed with `configure`, caches forgotten with
`reset_caches`."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from mesu_web.errors import ApplicationError

_REPO = Path(__file__).resolve().parents[2]


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name, "").strip()
    return Path(value) if value else default


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ApplicationError(f"{name} must be a whole number of words, not {value!r}.") from None


@dataclass(frozen=True)
class RewardSettings:
    nltk_data: Path  # holds corpora/wordnet (made by scripts/setup_wordnet.sh)
    perplexity_model_path: Path  # a causal LM's HF folder (SmolLM2); made from the packaged GGUF if missing
    embedding_model_path: str = ""  # MiniLM folder for BERTScore and embedding cosine; "" = packaged
    device: str = "cpu"  # where the reward models run ("cuda" on a GPU box that has room)
    threads: int = 1  # torch CPU threads; 1 on the 2-core dev box (2 threads measured 6-10x slower)
    bertscore_layers: int = 6  # MiniLM-L6 has 6 layers; its last one is the scored representation
    bertscore_batch_size: int = 16  # pairs per forward pass (x 512 tokens x 384 floats: small)
    embedding_batch_size: int = 32  # chunks per forward pass
    embedding_chunk_words: int = 150  # MiniLM reads 256 word pieces; 150 English words are ~200
    embedding_max_chunks: int = 16  # = 2400 words: a long chapter's opening is enough to compare
    perplexity_batch_size: int = 4  # texts per forward pass
    # Tokens of a text the perplexity is taken over (~190 words: a stable per-token mean). Cost is
    # linear: 4 texts x 256 tokens took 2.7 s in bfloat16 (5.7 s in float32) on 1 core here.
    perplexity_max_tokens: int = 256
    # bfloat16 was 2.1-2.4x faster than float32 on this CPU (avx512_bf16); the loss is summed in
    # float32, and a reward needs no more precision than that. "float32" for CPUs without bf16.
    perplexity_dtype: str = "bfloat16"
    reference_words_factor: float | None = 2.0  # see the package docstring; None = whole reference
    # VR-CLI (training.rewards.vrcli): the real chapter's first `vrcli_max_tokens` tokens are scored,
    # after at most `vrcli_max_context_tokens` of prompt and reasoning (the prompt's start is cut
    # first). Cost is linear in both: (G + 1) sequences of up to 2048 + 256 tokens a prompt.
    vrcli_max_tokens: int = 256
    vrcli_max_context_tokens: int = 2048
    vrcli_batch_size: int = 2  # sequences per forward pass (x up to 2304 tokens each)
    # The human_preference reward's scorer (a folder from `manage.py train_preference_reward`); "" = none,
    # and the reward refuses to run (training.rewards.preference).
    preference_model_path: str = ""
    # length_room (training.rewards.quality): a chapter that closes within `length_target_words` words has
    # room to spare (1.0); the credit falls linearly to 0 at `length_zero_words` (the served 640 tokens hold
    # ~420 words of chapter after the reasoning, and run12/run13's misses ran out at 393-506 words).
    length_target_words: int = 300
    length_zero_words: int = 420

    def __post_init__(self) -> None:
        for name in (
            "threads",
            "bertscore_layers",
            "bertscore_batch_size",
            "embedding_batch_size",
            "embedding_chunk_words",
            "embedding_max_chunks",
            "perplexity_batch_size",
            "vrcli_max_tokens",
            "vrcli_max_context_tokens",
            "vrcli_batch_size",
            "length_target_words",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.perplexity_max_tokens < 2:
            raise ValueError("perplexity_max_tokens must be at least 2 (one token predicts the next)")
        if self.perplexity_dtype not in ("bfloat16", "float16", "float32"):
            raise ValueError("perplexity_dtype must be bfloat16, float16 or float32")
        if self.length_zero_words <= self.length_target_words:
            raise ValueError("length_zero_words must be above length_target_words")
        if self.reference_words_factor is not None and self.reference_words_factor < 1:
            raise ValueError("reference_words_factor must be at least 1, or None for the whole reference")

    @classmethod
    def from_env(cls) -> RewardSettings:
        """The same places the Django settings use (MESU_VAR_DIR, WRITER_MODEL_PATH), from the
        environment only, so a GPU box without Django resolves them the same way."""
        var_dir = _env_path("MESU_VAR_DIR", _REPO / "var")
        return cls(
            nltk_data=_env_path("MESU_NLTK_DATA", var_dir / "nltk_data"),
            perplexity_model_path=_env_path(
                "REWARD_PERPLEXITY_MODEL_PATH",
                _env_path("WRITER_MODEL_PATH", _env_path("MESU_MODEL_DIR", var_dir / "models") / "smollm2"),
            ),
            embedding_model_path=os.environ.get("REWARD_EMBEDDING_MODEL_PATH", "").strip(),
            device=os.environ.get("REWARD_DEVICE", "cpu").strip() or "cpu",
            preference_model_path=os.environ.get("PREFERENCE_REWARD_MODEL", "").strip(),
            length_target_words=_env_int("REWARD_LENGTH_TARGET_WORDS", 300),
            length_zero_words=_env_int("REWARD_LENGTH_ZERO_WORDS", 420),
        )


_settings: RewardSettings | None = None
_settings_lock = threading.Lock()


def get_settings() -> RewardSettings:
    global _settings
    with _settings_lock:
        if _settings is None:
            _settings = RewardSettings.from_env()
        return _settings


def configure(**changes: Any) -> RewardSettings:
    """Change settings (e.g. `configure(device="cuda", nltk_data=path)`) and forget loaded models."""
    global _settings
    valid = {f.name for f in fields(RewardSettings)}
    unknown = sorted(set(changes) - valid)
    if unknown:
        raise ApplicationError(
            f"Unknown reward setting(s): {', '.join(unknown)}. Valid: {', '.join(sorted(valid))}."
        )
    new = replace(get_settings(), **changes)
    with _settings_lock:
        _settings = new
    reset_caches()
    return new


def reset_caches() -> None:
    """Forget loaded models and WordNet (after `configure`, or in tests)."""
    # Imported here: those modules import this one.
    from training.rewards import meteor_score, model_based, overlap, preference

    for module in (meteor_score, model_based, overlap, preference):
        module.clear_caches()


def clear_step_caches() -> None:
    """Forget what one GRPO step's rewards share (each completion's parse, each pair's ROUGE
    scores), as a step with new completions would find them: for timing rewards (bench/)."""
    from training.rewards import completions, overlap

    completions.clear_parse_cache()
    overlap.clear_score_cache()
