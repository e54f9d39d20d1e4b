"""GRPO reward functions: each pure `(completions, **kwargs) -> list[float | None]`, chosen by name.

Importable without Django: the GRPO trainer (TRL's `GRPOTrainer(reward_funcs=...)`), the evaluation
job and `manage.py score` call the same functions. Heavy libraries (torch, transformers,
sentence-transformers, bert-score, nltk's WordNet) load on first use and stay cached per process.

How TRL calls them: `func(prompts=..., completions=..., completion_ids=..., **columns)`, where
`columns` are the dataset's other fields, one value per completion: `answer` (the real chapter k+1),
`book`, `k`, and for brand prompts `brand_terms` (list[str] | None: the names the brief asked for,
`brands.brief.placement_terms`), `brand_cap` (int: at most this many placements) and
`brand_slogans` (list[str] | None: the brand's slogans). A completion is a string or a chat list
(`[{"role": "assistant", "content": ...}]`); both are handled.

What is scored: the SOLUTION part only (`writer.parsing.parse_output`). When the format fails, the
text parse_output salvages is scored (the text after the reasoning, the raw output with the tags
removed, ...; see its docstring), so a content reward still ranks a badly formatted chapter, and the
format rewards alone carry the format signal. The writer prefills `<start_working_out>`
(WRITER_PREFILL_REASONING), so a completion that closes a reasoning block it never opened is scored
as if the prefill were there, as parse_output treats it.

Ranges: every reward is in [0, 1] except `format_partial` (-1..1: duplicates are penalised). A
reward returns None where it does not apply (brand_subtlety on a prompt with no brand brief, a
reference-based reward on a row with no reference); TRL 1.16 turns None into NaN and leaves that
function out of that completion's weighted sum (`trl/trainer/grpo_trainer.py`, `_calculate_rewards`),
which 0.0 would not: a 0 would pull the group's mean down for prompts that never asked for a brand.

Reference length: with `RewardSettings.reference_words_factor` (default 2.0), the reference is cut
to its first `factor x candidate words` words before a reference-based reward compares them. In GRPO
the completion is capped (often 64-512 tokens) while the reference is a whole chapter: without the
cut, BLEU's brevity penalty and ROUGE/METEOR recall would score the length cap, not the writing. A
whole generated chapter (evaluation, `manage.py score`) is rarely under half the reference, so it is
compared with the whole reference. Set the factor to None to always compare whole texts.

The modules: `settings` (RewardSettings, configure, the caches), `completions` (completion, solution
and reference texts), `format`, `overlap` (BLEU, ROUGE), `meteor_score`, `model_based` (BERTScore,
embedding cosine, perplexity), `vrcli` (the reasoning's VR-CLI), `brand` (brand_subtlety), `quality`
(repetition, length_room), `preference` (human_preference: a scorer learned from people's choices, opt-in, see
`training.preference_reward`) and `registry` (names, default weights, lookup, score_all). Callers import from the
package: the names below are its public API.
"""

from __future__ import annotations

from training.rewards.brand import brand_placements, brand_subtlety
from training.rewards.completions import completion_text, reference_for, solution_text, with_prefill
from training.rewards.format import format_exact, format_partial
from training.rewards.meteor_score import meteor, wordnet_available
from training.rewards.model_based import (
    bertscore,
    embed_texts,
    embedding_cosine,
    perplexity,
    solution_perplexity,
)
from training.rewards.overlap import bleu, rouge1, rouge2, rougeL
from training.rewards.preference import human_preference
from training.rewards.quality import length_room, repetition
from training.rewards.registry import (
    DEFAULT_WEIGHTS,
    MODEL_REWARDS,
    OPT_IN_REWARDS,
    REWARDS,
    RewardFunc,
    get_reward_funcs,
    score_all,
)
from training.rewards.settings import (
    RewardSettings,
    clear_step_caches,
    configure,
    get_settings,
    reset_caches,
)
from training.rewards.vrcli import reasoning_improvements, vrcli

__all__ = [
    "DEFAULT_WEIGHTS",
    "MODEL_REWARDS",
    "OPT_IN_REWARDS",
    "REWARDS",
    "RewardFunc",
    "RewardSettings",
    "bertscore",
    "bleu",
    "brand_placements",
    "brand_subtlety",
    "clear_step_caches",
    "completion_text",
    "configure",
    "embed_texts",
    "embedding_cosine",
    "format_exact",
    "format_partial",
    "get_reward_funcs",
    "get_settings",
    "human_preference",
    "length_room",
    "meteor",
    "perplexity",
    "reasoning_improvements",
    "reference_for",
    "repetition",
    "reset_caches",
    "rouge1",
    "rouge2",
    "rougeL",
    "score_all",
    "solution_perplexity",
    "solution_text",
    "vrcli",
    "wordnet_available",
    "with_prefill",
]
