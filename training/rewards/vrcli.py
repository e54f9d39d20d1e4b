"""VR-CLI: how much an option's reasoning helps a frozen reference model predict the REAL next chapter.

Gurung & Lapata (2025), "Learning to Reason for Long-Form Story Generation": Verifiable Rewards via
Completion Likelihood Improvement. The reasoning is good when the chapter the author really wrote
next becomes less surprising once the reasoning is read:

    improvement = (PPL(chapter | prompt) - PPL(chapter | prompt + reasoning)) / PPL(chapter | prompt)
                = 1 - exp(mean NLL with the reasoning - mean NLL without)

over the same chapter tokens in both cases (its first `vrcli_max_tokens`), so the unit (per token or
per word) cancels out. The reference model is the perplexity reward's (`model_based.reference_model`,
SmolLM2 by default), frozen, so the policy cannot move the yardstick.

Scale: the reward is the improvement clipped below at 0, in [0, 1) like every other reward (the
package docstring): a reasoning that makes the real chapter MORE surprising is as useless as none,
and an unbounded negative tail (a misleading plan can double the perplexity: -1.0) would dominate the
weighted sum and GRPO's per-group normalisation. The paper itself rewards in steps of the percentage
improvement (0 below 0.05 %, then 0.5, 0.9, 1.0 from 2 %); the continuous form keeps the ranking
within a group, which is all GRPO's advantages use. A completion without reasoning scores 0.0 (it did
not help); a row without a real chapter gets None (the reward does not apply, as for the other
reference-based rewards).

The context is what the writer sees: the prompt (chat messages through the reference tokenizer's chat
template with the generation prompt; a plain string as it is), then the assistant turn in the
writer's format (`training.distill.full_completion`): the tagged reasoning and `<SOLUTION>`, and the
chapter after it. "Without reasoning" is the same turn with an empty reasoning block, so the two
contexts differ in the reasoning's words only. At most `vrcli_max_context_tokens` tokens precede the
chapter: the prompt's start is cut first (the latest chapters matter most for the next one).

Batched: the G completions of a prompt share one baseline, each distinct context is scored once,
sequences are left-padded and sorted by length, and only the chapter's logits are computed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from training.distill import tag_reasoning
from training.rewards.completions import per_item, reasoning_text, references
from training.rewards.model_based import reference_model
from training.rewards.settings import get_settings
from writer.prompting import SOLUTION_START


def assistant_prefix(reasoning: str) -> str:
    """The writer's answer up to its chapter: the tagged reasoning and the opened SOLUTION block, as
    `training.distill.full_completion` writes it ("" reasoning: the empty block of the baseline)."""
    return f"{tag_reasoning(reasoning)}\n{SOLUTION_START}\n"


def prompt_text(prompt: Any, tokenizer: Any) -> str:
    """A prompt as the reference model reads it: chat messages through its chat template (the
    assistant turn opened; a trailing assistant prefill left out), a string as it is, None as ""."""
    if prompt is None:
        return ""
    if isinstance(prompt, str):
        return prompt
    messages = [dict(m) for m in prompt if isinstance(m, dict)]
    while messages and messages[-1].get("role") == "assistant":
        messages.pop()  # a prefill (the reasoning tag): `assistant_prefix` opens the answer itself
    if not messages:
        return ""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def chapter_nll(contexts: Sequence[Sequence[int]], chapters: Sequence[Sequence[int]]) -> list[float]:
    """The mean negative log-likelihood (nats per token) of each chapter's tokens after its context,
    under the reference model. Each chapter needs at least one token, each context at least one."""
    import torch

    model, tokenizer = reference_model()
    s = get_settings()
    seqs = [list(c) + list(ch) for c, ch in zip(contexts, chapters, strict=True)]
    out = [math.nan] * len(seqs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # each batch pads little
    for start in range(0, len(order), s.vrcli_batch_size):
        batch = order[start : start + s.vrcli_batch_size]
        width = max(len(seqs[i]) for i in batch)
        # Left padding: every chapter ends at the last column, so only the last `keep` positions'
        # logits are needed (49,152 floats each for SmolLM2: the whole sequence's would be GBs).
        keep = max(len(chapters[i]) for i in batch) + 1
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            input_ids[row, width - len(seqs[i]) :] = torch.tensor(seqs[i])
            mask[row, width - len(seqs[i]) :] = 1
        # Positions count real tokens only, so a padded row reads exactly as it would alone.
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        input_ids, mask, positions = (t.to(s.device) for t in (input_ids, mask, positions))
        with torch.inference_mode():
            logits = model(
                input_ids=input_ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep
            ).logits
        for row, i in enumerate(batch):
            n = len(chapters[i])
            # The logit at column t predicts token t + 1: the chapter's n tokens are predicted by the
            # n columns before the last one.
            predicted = logits[row, keep - 1 - n : keep - 1].float()
            target = input_ids[row, width - n :]
            out[i] = float(torch.nn.functional.cross_entropy(predicted, target, reduction="mean"))
    return out


def vrcli(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """VR-CLI (see the module docstring): max(0, 1 - PPL(chapter | prompt + reasoning) /
    PPL(chapter | prompt)), in [0, 1); 0.0 for a completion without reasoning, None for a row without
    a real chapter (the `answer` column). Reads the `prompts` column (TRL passes it) when given."""
    return [None if v is None else max(0.0, v) for v in reasoning_improvements(completions, **kwargs)]


def reasoning_improvements(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """The signed improvement of each completion (what `vrcli` clips at 0): negative where the
    reasoning makes the real chapter MORE surprising. 0.0 without reasoning, None without a chapter."""
    n = len(completions)
    refs = references(kwargs, n, "vrcli")
    prompts = per_item(kwargs, "prompts", n)
    reasonings = [reasoning_text(c).strip() for c in completions]
    scores: list[float | None] = [None if r is None or not r.strip() else 0.0 for r in refs]
    todo = [i for i in range(n) if scores[i] is not None and reasonings[i]]
    if not todo:
        return scores  # nothing to score: the model is not even loaded

    _, tokenizer = reference_model()
    s = get_settings()

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    # The G completions of a prompt share its text, its chapter and its baseline: each once.
    prompt_ids: dict[int, list[int]] = {}
    chapter_ids: dict[str, list[int]] = {}
    jobs: dict[tuple[int, str, str], int] = {}  # (prompt key, reasoning, chapter) -> index in the batch
    contexts: list[list[int]] = []
    chapters: list[list[int]] = []
    prompt_keys: dict[str, int] = {}

    def job(prompt_key: int, reasoning: str, chapter: str) -> int:
        key = (prompt_key, reasoning, chapter)
        if key not in jobs:
            tail = ids(assistant_prefix(reasoning))
            room = max(0, s.vrcli_max_context_tokens - len(tail))
            head = prompt_ids[prompt_key][-room:] if room else []
            context = (head + tail)[-s.vrcli_max_context_tokens :]
            jobs[key] = len(contexts)
            contexts.append(context)
            chapters.append(chapter_ids[chapter])
        return jobs[key]

    pairs: dict[int, tuple[int, int]] = {}  # completion -> (its job, its baseline's job)
    for i in todo:
        text = prompt_text(prompts[i], tokenizer)
        key = prompt_keys.setdefault(text, len(prompt_keys))
        if key not in prompt_ids:
            prompt_ids[key] = ids(text)
        chapter = refs[i].strip()  # type: ignore[union-attr]
        if chapter not in chapter_ids:
            chapter_ids[chapter] = tokenizer(
                chapter, add_special_tokens=False, truncation=True, max_length=s.vrcli_max_tokens
            )["input_ids"]
        if not chapter_ids[chapter]:
            scores[i] = None
            continue
        pairs[i] = (job(key, reasonings[i], chapter), job(key, "", chapter))
    nll = chapter_nll(contexts, chapters) if contexts else []
    for i, (with_reasoning, baseline) in pairs.items():
        # 1 - PPL_with / PPL_without; the exponent is capped so a wild ratio stays finite.
        scores[i] = 1.0 - math.exp(min(nll[with_reasoning] - nll[baseline], 50.0))
    return scores
