"""Model-based rewards: BERTScore and embedding cosine (the packaged MiniLM), perplexity (SmolLM2).

Each model loads on first use (seconds and hundreds of MB) and stays cached per process;
`clear_caches` (through `reset_caches`) forgets them."""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from typing import Any

from training.rewards.completions import reference_for, references, solution_pairs, solution_text
from training.rewards.settings import get_settings

_model_lock = threading.Lock()


def _embedding_model_path() -> str:
    path = get_settings().embedding_model_path
    if path:
        return path
    from brands.embedder import packaged_model_path

    return packaged_model_path()


def _torch_threads() -> None:
    import torch

    torch.set_num_threads(get_settings().threads)


@functools.cache
def _bert_scorer():  # -> bert_score.BERTScorer
    with _model_lock:
        from brands.embedder import bert_scorer

        s = get_settings()
        # No baseline rescaling: bert-score publishes none for this model, and GRPO normalises rewards per group.
        return bert_scorer(
            model_path=_embedding_model_path(),
            num_layers=s.bertscore_layers,
            device=s.device,
            batch_size=s.bertscore_batch_size,
            threads=s.threads,
        )


def bertscore(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """BERTScore F1 with the packaged MiniLM (layer 6, no idf, no baseline rescaling), clipped to
    [0, 1]. Raw F1 is compressed: 1.0 for identical texts, ~0.5-0.6 for two unrelated passages of
    prose (shared function words and style), ~0.1-0.2 for unrelated short sentences or word salad.
    MiniLM reads 512 word pieces of each text (~380 words); the rest is not compared."""
    pairs = solution_pairs(completions, kwargs, "bertscore")
    scores: list[float | None] = [None if p is None else 0.0 for p in pairs]
    todo = [i for i, p in enumerate(pairs) if p is not None and p[0].strip() and p[1].strip()]
    if todo:
        scorer = _bert_scorer()
        cands = [pairs[i][0] for i in todo]  # type: ignore[index]
        refs = [pairs[i][1] for i in todo]  # type: ignore[index]
        _, _, f1 = scorer.score(cands, refs, batch_size=get_settings().bertscore_batch_size)
        for i, value in zip(todo, f1.tolist(), strict=True):
            scores[i] = min(1.0, max(0.0, float(value)))
    return scores


@functools.cache
def _sentence_model():  # -> sentence_transformers.SentenceTransformer
    with _model_lock:
        _torch_threads()
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(_embedding_model_path(), device=get_settings().device)


def _chunks(text: str) -> list[str]:
    s = get_settings()
    words = text.split()
    size = s.embedding_chunk_words
    return [" ".join(words[i : i + size]) for i in range(0, len(words), size)][: s.embedding_max_chunks]


def embed_texts(texts: Sequence[str]):  # -> numpy array (len(texts), 384), unit rows
    """One unit vector per text: the normalised mean of its chunks' MiniLM embeddings (MiniLM reads
    256 word pieces, so a chapter is embedded in chunks of `embedding_chunk_words` words)."""
    import numpy as np

    chunked = [_chunks(t) for t in texts]
    flat = [c for chunks in chunked for c in chunks]
    model = _sentence_model()
    vectors = model.encode(
        flat,
        batch_size=get_settings().embedding_batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    out = np.zeros((len(texts), vectors.shape[1] if len(flat) else 384), dtype=np.float32)
    pos = 0
    for i, chunks in enumerate(chunked):
        if chunks:
            mean = vectors[pos : pos + len(chunks)].mean(axis=0)
            norm = float(np.linalg.norm(mean))
            out[i] = mean / norm if norm else mean
            pos += len(chunks)
    return out


def embedding_cosine(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """Cosine similarity of MiniLM embeddings (sentence-transformers) of the solution and the real
    chapter, negative values clipped to 0, in [0, 1]. Measured: 1.0 identical; ~0.3-0.5 another
    passage or story of the same kind; ~0.0-0.1 an unrelated topic or word salad."""
    pairs = solution_pairs(completions, kwargs, "embedding_cosine")
    scores: list[float | None] = [None if p is None else 0.0 for p in pairs]
    todo = [i for i, p in enumerate(pairs) if p is not None and p[0].strip() and p[1].strip()]
    if todo:
        # The G completions of a prompt share one reference: embed each distinct text once.
        texts = sorted({t for i in todo for t in pairs[i]})  # type: ignore[union-attr]
        index = {t: j for j, t in enumerate(texts)}
        vectors = embed_texts(texts)
        for i in todo:
            cand, ref = pairs[i]  # type: ignore[misc]
            cosine = float(vectors[index[cand]] @ vectors[index[ref]])
            scores[i] = min(1.0, max(0.0, cosine))
    return scores


@functools.cache
def _perplexity_model():  # -> (model, tokenizer)
    with _model_lock:
        _torch_threads()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from writer.model_files import is_model_folder, prepare_model

        s = get_settings()
        folder = s.perplexity_model_path
        if not is_model_folder(folder):
            # The packaged SmolLM2 GGUF, converted once (~30 s) into the folder the writer uses too.
            folder = prepare_model(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, s.perplexity_dtype))
        model = model.to(s.device)
        model.eval()
        return model, tokenizer


def reference_model():  # -> (model, tokenizer)
    """The frozen reference LM (`perplexity_model_path`, SmolLM2 by default) and its tokenizer, loaded
    once per process: the perplexity and VR-CLI rewards share it."""
    return _perplexity_model()


def solution_perplexity(texts: Sequence[str]) -> list[float | None]:
    """Per-word perplexity of each text under the reference model: exp(total negative log-likelihood
    of its tokens / its words), over its first `perplexity_max_tokens` tokens; None for a text of
    fewer than 2 tokens. Per word, not per token: made-up words are shredded into many short tokens
    that are each easy to predict, and per token they measured LESS perplexing than real prose."""
    import torch

    model, tokenizer = _perplexity_model()
    s = get_settings()
    ids = [
        tokenizer(t, add_special_tokens=False, truncation=True, max_length=s.perplexity_max_tokens)[
            "input_ids"
        ]
        if t.strip()
        else []
        for t in texts
    ]
    out: list[float | None] = [None] * len(texts)
    todo = sorted((i for i, seq in enumerate(ids) if len(seq) >= 2), key=lambda i: len(ids[i]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # Sorted by length, so each batch pads little.
    for start in range(0, len(todo), s.perplexity_batch_size):
        batch = todo[start : start + s.perplexity_batch_size]
        width = max(len(ids[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
            mask[row, : len(ids[i])] = 1
        input_ids, mask = input_ids.to(s.device), mask.to(s.device)
        with torch.inference_mode():
            logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1].float()
        targets = input_ids[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        total_nll = (nll * mask[:, 1:].float()).sum(dim=1)
        for row, i in enumerate(batch):
            words = max(1, len(tokenizer.decode(ids[i]).split()))
            # Capped so a text of pure noise gives a huge, finite number rather than an overflow.
            out[i] = math.exp(min(float(total_nll[row]) / words, 50.0))
    return out


def perplexity(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """Fluency under the reference model (SmolLM2), in [0, 1]:

    Perplexity is per word (`solution_perplexity`) over the first `perplexity_max_tokens` tokens.
    - with a reference: min(ppl_solution, ppl_reference) / max(...) = exp(-|ln ppl_s - ln ppl_r|):
      1.0 when the solution is as predictable as the real chapter; both word salad (ppl far above)
      and loops of repeated text (ppl far below: the raw-perplexity trap, which a reward of low
      perplexity alone would pay for) score low;
    - without one: 1 / (1 + ln ppl), which favours predictable text (use with care).
    An empty solution (or one token) scores 0.0."""
    n = len(completions)
    sols = [solution_text(c) for c in completions]
    refs = [None] * n if kwargs.get("answer") is None else references(kwargs, n, "perplexity")
    cut = [None if r is None else reference_for(s, r) for s, r in zip(sols, refs, strict=True)]
    texts = sorted({t for t in [*sols, *cut] if t})
    ppl = dict(zip(texts, solution_perplexity(texts), strict=True))
    scores: list[float | None] = []
    for sol, ref in zip(sols, cut, strict=True):
        p = ppl.get(sol) if sol else None
        if p is None:
            scores.append(0.0)
        elif ref is not None and ppl.get(ref) is not None:
            r = ppl[ref]
            scores.append(min(p, r) / max(p, r))
        else:
            scores.append(1.0 / (1.0 + math.log(max(p, 1.0))))
    return scores


def clear_caches() -> None:
    """Forget the loaded models (see `reset_caches`)."""
    from brands.embedder import bert_scorer

    for cached in (_bert_scorer, _sentence_model, _perplexity_model, bert_scorer):
        cached.cache_clear()
