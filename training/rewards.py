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
"""

from __future__ import annotations

import difflib
import functools
import itertools
import logging
import math
import os
import re
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from brands.placements import find_mentions
from mesu_web.errors import ApplicationError
from writer.parsing import MATCH_FORMAT, ParsedOutput, parse_output
from writer.prompting import REASONING_END, REASONING_START, SOLUTION_END, SOLUTION_START

logger = logging.getLogger(__name__)

RewardFunc = Callable[..., list[float | None]]
_REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Settings


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name, "").strip()
    return Path(value) if value else default


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
    reference_words_factor: float | None = 2.0  # see the module docstring; None = whole reference

    def __post_init__(self) -> None:
        for name in (
            "threads",
            "bertscore_layers",
            "bertscore_batch_size",
            "embedding_batch_size",
            "embedding_chunk_words",
            "embedding_max_chunks",
            "perplexity_batch_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.perplexity_max_tokens < 2:
            raise ValueError("perplexity_max_tokens must be at least 2 (one token predicts the next)")
        if self.perplexity_dtype not in ("bfloat16", "float16", "float32"):
            raise ValueError("perplexity_dtype must be bfloat16, float16 or float32")
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
    for cached in (
        _wordnet,
        _synonym_stems,
        _bert_scorer,
        _sentence_model,
        _perplexity_model,
        _bleu_metric,
        _rouge_tokenizer,
        _rouge_word_tokens,
    ):
        cached.cache_clear()
    meteor.wordnet_available = None  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Completions, solutions and references


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks: [{"type": "text", "text": ...}]
        return "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in content)
    return str(content)


def completion_text(completion: Any) -> str:
    """The raw text of a completion: a string, or a chat list whose assistant messages are joined."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    if isinstance(completion, Sequence):
        messages = [m for m in completion if isinstance(m, dict)]
        assistant = [m for m in messages if m.get("role", "assistant") == "assistant"] or messages
        return "".join(_content_text(m.get("content")) for m in assistant)
    return "" if completion is None else str(completion)


def with_prefill(text: str) -> str:
    """The completion as the writer sees it: `<start_working_out>` prepended when the completion
    closes a reasoning block it never opened (the prefill was part of the prompt)."""
    if REASONING_START not in text and REASONING_END in text:
        return REASONING_START + text
    return text


@functools.lru_cache(maxsize=4096)
def _parsed(text: str) -> ParsedOutput:
    # Every reward of a step parses the same 8-ish completions: parse each once.
    return parse_output(with_prefill(text))


def solution_text(completion: Any) -> str:
    """The chapter text of a completion (its SOLUTION part, or what parse_output salvages)."""
    return _parsed(completion_text(completion)).text


def _per_item(kwargs: dict[str, Any], key: str, n: int) -> list[Any]:
    """A per-completion column (TRL passes one value per completion); a non-list value applies to all."""
    value = kwargs.get(key)
    if value is None:
        return [None] * n
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ApplicationError(f"The '{key}' column has {len(value)} values for {n} completions.")
        return list(value)
    return [value] * n


def _strings(value: Any) -> list[str]:
    """A list of non-empty strings from a column value: None, one string, or a list of them."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    return [v for v in value if isinstance(v, str) and v.strip()]


def _references(kwargs: dict[str, Any], n: int, reward: str) -> list[str | None]:
    if kwargs.get("answer") is None:
        raise ApplicationError(
            f"The '{reward}' reward compares with the real next chapter, but no `answer` was given "
            "(the dataset's `answer` column)."
        )
    return [None if a is None else str(a) for a in _per_item(kwargs, "answer", n)]


_WORD_RUN = re.compile(r"\S+")


def reference_for(candidate: str, reference: str) -> str:
    """The part of `reference` a candidate is compared with (see the module docstring)."""
    factor = get_settings().reference_words_factor
    if factor is None:
        return reference
    words = len(candidate.split())
    keep = max(1, math.ceil(words * factor))
    for i, m in enumerate(_WORD_RUN.finditer(reference)):
        if i == keep:
            return reference[: m.start()].rstrip()
    return reference


def _pairs(completions: Sequence[Any], kwargs: dict[str, Any], reward: str) -> list[tuple[str, str] | None]:
    """(solution, reference cut to it) per completion; None where there is no reference."""
    refs = _references(kwargs, len(completions), reward)
    out: list[tuple[str, str] | None] = []
    for completion, ref in zip(completions, refs, strict=True):
        if ref is None:
            out.append(None)
            continue
        sol = solution_text(completion)
        out.append((sol, reference_for(sol, ref)))
    return out


# ---------------------------------------------------------------------------------------------
# Format


def format_exact(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """1.0 when the completion matches the seed's regex (`writer.parsing.MATCH_FORMAT`, applied with
    .search as the writer does), else 0.0. The seed notebook scored a match 3.0; here the scale lives
    in the weight (DEFAULT_WEIGHTS), so every reward stays in [0, 1] and the weights compare."""
    return [1.0 if MATCH_FORMAT.search(with_prefill(completion_text(c))) else 0.0 for c in completions]


_FORMAT_TAGS = (REASONING_START, REASONING_END, SOLUTION_START, SOLUTION_END)


def format_partial(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """Partial credit per tag, as the Unsloth GRPO notebook's `match_format_approximately`: each of
    the 4 tags (exact spelling) present once +0.25, missing 0, present more than once -0.25. In
    -1..1: all four once is 1.0; a model that repeats its tags scores below one that forgets them."""
    scores: list[float | None] = []
    for c in completions:
        text = with_prefill(completion_text(c))
        score = 0.0
        for tag in _FORMAT_TAGS:
            count = text.count(tag)
            score += 0.25 if count == 1 else (-0.25 if count > 1 else 0.0)
        scores.append(score)
    return scores


# ---------------------------------------------------------------------------------------------
# n-gram overlap


@functools.cache
def _bleu_metric():  # -> sacrebleu.metrics.BLEU
    from sacrebleu.metrics import BLEU

    # effective_order: a short candidate with no 4-gram match still gets a score from its 1-3-grams.
    return BLEU(effective_order=True)


def bleu(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """sacrebleu sentence BLEU (13a tokens, exp smoothing, effective order) / 100, in [0, 1]."""
    metric = _bleu_metric()
    scores: list[float | None] = []
    for pair in _pairs(completions, kwargs, "bleu"):
        if pair is None:
            scores.append(None)
        elif not pair[0].strip() or not pair[1].strip():
            scores.append(0.0)
        else:
            # Identical texts come out a hair above 100 (floating point): clamp to [0, 1].
            scores.append(min(1.0, metric.sentence_score(pair[0], [pair[1]]).score / 100.0))
    return scores


_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")

# ROUGE is computed here, not by rouge-score's RougeScorer, with the same numbers (tests/training/
# test_rouge_fast.py checks them against RougeScorer(use_stemmer=True) to 1e-12): on the GPU a GRPO
# step takes ~3 s and the rewards must stay under 10 % of it, but RougeScorer spent 0.15-0.3 s a step
# on rougeL alone: its LCS is an O(words x words) pure-Python table, and it Porter-stems every token
# of every (candidate, reference) pair again, although the G completions of a prompt share one
# reference. Here each distinct word is stemmed once (`_rouge_word_tokens`) and the LCS length is
# bit-parallel (`_lcs_length`: O(words x words / bits per machine word) in Python big ints).


@functools.cache
def _rouge_tokenizer():  # -> rouge_score.tokenizers.DefaultTokenizer
    from rouge_score import tokenizers

    return tokenizers.DefaultTokenizer(use_stemmer=True)


@functools.lru_cache(maxsize=65536)
def _rouge_word_tokens(word: str) -> tuple[str, ...]:
    """rouge-score's tokens of one whitespace-free word (lowercased, split at every character outside
    [a-z0-9], words of more than 3 characters Porter-stemmed), cached per word."""
    return tuple(_rouge_tokenizer().tokenize(word))


def _rouge_tokens(text: str) -> list[str]:
    """rouge-score's DefaultTokenizer(use_stemmer=True).tokenize(text), word by word: whitespace is a
    separator before and after its lowercasing and [^a-z0-9] replacement, so the tokens of the whole
    text are those of its words, in order (the tests check it on arbitrary text)."""
    tokens: list[str] = []
    for word in text.split():
        tokens.extend(_rouge_word_tokens(word))
    return tokens


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences, bit-parallel (Allison & Dix
    1986; Crochemore et al. 2001; Hyyrö 2004): bit i of V stands for position i of the longer
    sequence, and each token of the shorter one updates all of them with a few big-int operations.
    The LCS length is the number of zero bits of V at the end."""
    if len(a) < len(b):
        a, b = b, a  # bit masks over the longer sequence, the Python loop over the shorter one
    if not b:
        return 0
    masks: dict[str, int] = {}
    bit = 1
    for token in a:
        masks[token] = masks.get(token, 0) | bit
        bit <<= 1
    full = bit - 1  # len(a) ones
    v = full
    get = masks.get
    for token in b:
        m = get(token)
        if m:  # a token absent from `a` leaves V as it is
            u = v & m
            v = ((v + u) | (v - u)) & full  # (V + (V & M)) | (V & ~M)
    return len(a) - v.bit_count()


def _fmeasure(precision: float, recall: float) -> float:
    # rouge_score.scoring.fmeasure
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _ngram_fmeasure(
    target: Counter[Any], prediction: Counter[Any], n_target: int, n_prediction: int
) -> float:
    # rouge_score.rouge_scorer._score_ngrams: n_target / n_prediction are the n-gram counts.
    overlap = sum(min(count, prediction[gram]) for gram, count in target.items())
    return _fmeasure(overlap / max(n_prediction, 1), overlap / max(n_target, 1))


def _rouge_scores(candidate: str, reference: str) -> dict[str, float]:
    """rouge1, rouge2 and rougeL F-measures as RougeScorer(use_stemmer=True).score(reference,
    candidate) gives them (rougeL: the LCS of the whole texts, not rougeLsum)."""
    pred = _rouge_tokens(candidate)
    target = _rouge_tokens(reference)
    rouge1_f = _ngram_fmeasure(Counter(target), Counter(pred), len(target), len(pred))
    rouge2_f = _ngram_fmeasure(
        Counter(itertools.pairwise(target)),
        Counter(itertools.pairwise(pred)),
        max(len(target) - 1, 0),
        max(len(pred) - 1, 0),
    )
    if target and pred:
        lcs = _lcs_length(target, pred)
        rouge_l_f = _fmeasure(lcs / len(pred), lcs / len(target))
    else:
        rouge_l_f = 0.0
    return {"rouge1": rouge1_f, "rouge2": rouge2_f, "rougeL": rouge_l_f}


@functools.lru_cache(maxsize=1024)
def _rouge_all(candidate: str, reference: str) -> dict[str, float]:
    # rouge1, rouge2 and rougeL of one pair are computed together and cached: the three rewards of a
    # step ask for the same pairs.
    if not candidate.strip() or not reference.strip():
        return dict.fromkeys(_ROUGE_TYPES, 0.0)
    return _rouge_scores(candidate, reference)


def _rouge(name: str, completions: Sequence[Any], kwargs: dict[str, Any]) -> list[float | None]:
    return [None if p is None else _rouge_all(*p)[name] for p in _pairs(completions, kwargs, name)]


def rouge1(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """ROUGE-1 F1 (rouge-score, Porter stemmer on), in [0, 1]."""
    return _rouge("rouge1", completions, kwargs)


def rouge2(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """ROUGE-2 F1 (rouge-score, Porter stemmer on), in [0, 1]."""
    return _rouge("rouge2", completions, kwargs)


def rougeL(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:  # noqa: N802 (ROUGE-L)
    """ROUGE-L F1 (longest common subsequence; rouge-score, Porter stemmer on), in [0, 1]."""
    return _rouge("rougeL", completions, kwargs)


# ---------------------------------------------------------------------------------------------
# METEOR


class _NoSynonyms:
    """Stands in for WordNet: METEOR then matches exact words and Porter stems only."""

    def synsets(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []


class _Lemma:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def name(self) -> str:
        return self._name


class _Synset:
    __slots__ = ("_lemmas",)

    def __init__(self, names: frozenset[str]) -> None:
        self._lemmas = [_Lemma(n) for n in sorted(names)]

    def lemmas(self) -> list[_Lemma]:
        return self._lemmas


@functools.lru_cache(maxsize=65536)
def _synonym_stems(word: str) -> frozenset[str]:
    """Porter stems of the one-word WordNet synonyms of `word` (cached: WordNet lookups dominate)."""
    wn = _wordnet()
    if wn is None:
        return frozenset()
    stem = _porter().stem
    return frozenset(
        stem(lemma.name())
        for synset in wn.synsets(word)
        for lemma in synset.lemmas()
        if "_" not in lemma.name()
    )


@functools.cache
def _porter():  # -> nltk PorterStemmer
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer()


class _StemmedSynonyms:
    """Stemmer and WordNet for one nltk METEOR call, so that its synonym stage works.

    nltk's meteor_score (3.10) runs the synonym stage on what the stem stage leaves, which are Porter
    STEMS ("automobile" -> "automobil"), and compares synonyms with the reference's stems: WordNet
    knows no "automobil", so almost no synonym ever matched. Used as both the stemmer (it remembers
    which words gave each stem) and the WordNet (it looks those words up and answers with the stems
    of their synonyms), it lets "automobile" meet "car" and "large" meet "big", as METEOR intends.
    """

    def __init__(self) -> None:
        self._words: dict[str, set[str]] = {}

    def stem(self, word: str) -> str:
        stem = _porter().stem(word)
        self._words.setdefault(stem, set()).add(word)
        return stem

    def synsets(self, stem: str) -> list[_Synset]:
        names: set[str] = set()
        for word in self._words.get(stem, {stem}):
            names |= _synonym_stems(word)
        return [_Synset(frozenset(names))] if names else []


@functools.cache
def _wordnet():  # -> nltk WordNetCorpusReader | None
    import nltk

    root = str(get_settings().nltk_data)
    if root not in nltk.data.path:
        nltk.data.path.insert(0, root)
    try:
        with warnings.catch_warnings():
            # "The multilingual functions are not available": we only need English synonyms.
            warnings.simplefilter("ignore", UserWarning)
            from nltk.corpus import wordnet

            wordnet.synsets("dog")  # loads it (~3 s: nltk maps index.sense at load)
        return wordnet
    except (LookupError, OSError) as exc:
        logger.warning(
            "WordNet is not available (%s): METEOR matches exact words and stems only, without "
            "synonyms. Run scripts/setup_wordnet.sh to install it at %s/corpora/wordnet.",
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
            root,
        )
        return None


def wordnet_available() -> bool:
    """Whether METEOR has WordNet synonyms (loads WordNet on first call)."""
    return _wordnet() is not None


_METEOR_TOKENS = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")


def meteor(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """nltk METEOR (exact, stem and WordNet-synonym matches; alpha 0.9, beta 3, gamma 0.5), in [0, 1].
    Synonyms go through `_StemmedSynonyms`, which works around nltk's synonym stage seeing stems.

    Without WordNet (see scripts/setup_wordnet.sh) it falls back to exact and stem matches, logs a
    warning once, and says so: `meteor.wordnet_available` is then False (None before the first call),
    and under TRL the metric `meteor/wordnet` (1 or 0) is logged with every step."""
    from nltk.translate.meteor_score import meteor_score

    wn = _wordnet()
    meteor.wordnet_available = wn is not None  # type: ignore[attr-defined]
    log_metric = kwargs.get("log_metric")
    if callable(log_metric):
        log_metric("meteor/wordnet", 1.0 if wn is not None else 0.0)
    scores: list[float | None] = []
    for pair in _pairs(completions, kwargs, "meteor"):
        if pair is None:
            scores.append(None)
            continue
        hyp = _METEOR_TOKENS.findall(pair[0].lower())
        ref = _METEOR_TOKENS.findall(pair[1].lower())
        if not hyp or not ref:
            scores.append(0.0)
            continue
        if wn is not None:
            adapter = _StemmedSynonyms()
            value = meteor_score([ref], hyp, stemmer=adapter, wordnet=adapter)
        else:
            value = meteor_score([ref], hyp, stemmer=_porter(), wordnet=_NoSynonyms())
        scores.append(min(1.0, float(value)))
    return scores


meteor.wordnet_available = None  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Model-based: BERTScore, embedding cosine, perplexity


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
        _torch_threads()
        from bert_score import BERTScorer

        s = get_settings()
        # model_type is a folder: bert-score loads it with AutoModel/AutoTokenizer. No baseline
        # rescaling: bert-score publishes none for this model, and GRPO normalises rewards per group.
        return BERTScorer(
            model_type=_embedding_model_path(),
            num_layers=s.bertscore_layers,
            device=s.device,
            batch_size=s.bertscore_batch_size,
        )


def bertscore(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """BERTScore F1 with the packaged MiniLM (layer 6, no idf, no baseline rescaling), clipped to
    [0, 1]. Raw F1 is compressed: 1.0 for identical texts, ~0.5-0.6 for two unrelated passages of
    prose (shared function words and style), ~0.1-0.2 for unrelated short sentences or word salad.
    MiniLM reads 512 word pieces of each text (~380 words); the rest is not compared."""
    pairs = _pairs(completions, kwargs, "bertscore")
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
    pairs = _pairs(completions, kwargs, "embedding_cosine")
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
    refs = [None] * n if kwargs.get("answer") is None else _references(kwargs, n, "perplexity")
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


# ---------------------------------------------------------------------------------------------
# Brand subtlety


# Sales language that does not belong in a novel's sentence next to a brand: calls to action,
# shop talk, prices, web addresses, trademark signs.
_AD_MARKERS = re.compile(
    r"""
    \b(?:buy|order|shop|call|click|subscribe|sign\ up|try\ it|get\ yours|grab\ yours|book)\ (?:now|today)\b
    | \b(?:available|sold|on\ sale|in\ stock)\ (?:now\ )?(?:at|in\ (?:stores|shops)|online|everywhere)\b
    | \bget\ (?:yours|one)\ (?:at|from|today|now)\b
    | \b(?:visit|ask\ for|look\ for|don['’]t\ miss|limited[-\ ]time|free\ shipping|order\ online)\b
    | \b(?:only|just)\ (?:for\ )?[$€£¥]
    | [$€£¥]\s?\d | \d(?:[.,]\d+)?\s?(?:[$€£¥]|dollars|euros|pounds|usd|eur|gbp)\b
    | \d+\s?%\ off\b | \bper\ cent\ off\b
    | \bwww\.|https?://|\.(?:com|net|shop)\b
    | [™®]
    """,
    re.IGNORECASE | re.VERBOSE,
)
# Sentence ends (with closing quotes) or line breaks.
_SENTENCE_END = re.compile(r"""(?<=[.!?…])["'”’»)\]]*\s+|\n+""")
# Quoted stretches: dialogue, or a sign/cup seen in passing. A single curly or straight quote opens
# only after a non-letter and closes only before one, so apostrophes ("don’t") never do.
_QUOTED = re.compile(r"""“[^”]*”|"[^"\n]*"|«[^»]*»|(?<!\w)‘[^‘’\n]*’(?!\w)|(?<!\w)'[^'\n]*'(?!\w)""")


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        if m.start() > start:
            spans.append((start, m.start()))
        start = m.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans


def _sentence_at(spans: list[tuple[int, int]], pos: int) -> tuple[int, int]:
    for start, end in spans:
        if start <= pos < end:
            return start, end
    return pos, pos


def brand_placements(
    solution: str, terms: Sequence[str], slogans: Sequence[str] = ()
) -> list[tuple[int, int, bool]]:
    """(start, end, ad_like) of each placement in the chapter text: every mention of a term
    (`brands.placements.find_mentions`, as the UI highlights them) and every verbatim slogan; a term
    mention inside a slogan is that slogan's placement, not a second one. A placement is ad-like when
    its sentence carries sales language (`_AD_MARKERS`: a call to action, "available at", a price, a
    web address, ™/®), or it is a slogan dropped verbatim outside quotation marks (a character saying
    it, or a sign or cup showing it, is quoted; a sales line is not)."""
    slogan_spans = [(m.start, m.end) for m in find_mentions(solution, _strings(list(slogans)), fuzzy=False)]
    term_spans = [
        (m.start, m.end)
        for m in find_mentions(solution, _strings(list(terms)))
        if not any(s <= m.start and m.end <= e for s, e in slogan_spans)
    ]
    quoted = [(m.start(), m.end()) for m in _QUOTED.finditer(solution)]
    sentences = _sentence_spans(solution)
    out: list[tuple[int, int, bool]] = []
    for start, end, is_slogan in sorted(
        [(s, e, True) for s, e in slogan_spans] + [(s, e, False) for s, e in term_spans]
    ):
        s_start, s_end = _sentence_at(sentences, start)
        ad_like = _AD_MARKERS.search(solution, s_start, max(s_end, end)) is not None
        if is_slogan and not any(q <= start and end <= qe for q, qe in quoted):
            ad_like = True
        out.append((start, end, ad_like))
    return out


def brand_subtlety(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """How well a brand placement follows the brief, for prompts that carried one, in [0, 1]:

        (placements not ad-like / placements) x min(1, brand_cap / placements)

    0.0 when the chapter text names no asset (a name only in the reasoning does not count: the
    reader never sees it); 1.0 for 1..cap clean placements; over the cap it falls as cap / count; each
    ad-like placement (see `brand_placements`) takes its share away. None (not applicable) for a
    completion whose `brand_terms` is None or empty: the prompt had no brand brief."""
    n = len(completions)
    terms_per = _per_item(kwargs, "brand_terms", n)
    caps = _per_item(kwargs, "brand_cap", n)
    slogans_per = _per_item(kwargs, "brand_slogans", n)
    scores: list[float | None] = []
    for completion, terms, cap, slogans in zip(completions, terms_per, caps, slogans_per, strict=True):
        terms = _strings(terms)
        if not terms:
            scores.append(None)
            continue
        cap = max(1, int(cap)) if cap is not None else 1
        placements = brand_placements(solution_text(completion), terms, _strings(slogans))
        if not placements:
            scores.append(0.0)
            continue
        count = len(placements)
        clean = sum(1 for _, _, ad in placements if not ad)
        scores.append((clean / count) * min(1.0, cap / count))
    return scores


# ---------------------------------------------------------------------------------------------
# Registry


REWARDS: dict[str, RewardFunc] = {
    "format_exact": format_exact,
    "format_partial": format_partial,
    "bleu": bleu,
    "rouge1": rouge1,
    "rouge2": rouge2,
    "rougeL": rougeL,
    "meteor": meteor,
    "bertscore": bertscore,
    "perplexity": perplexity,
    "embedding_cosine": embedding_cosine,
    "brand_subtlety": brand_subtlety,
}
# Rewards that load a model on first use (seconds and hundreds of MB; see docs/benchmarks.md).
MODEL_REWARDS = frozenset({"bertscore", "perplexity", "embedding_cosine"})

# The default job's weights. Format first: without it nothing else can be parsed reliably (the seed
# scored a format match 3.0, like this weight). Content rewards overlap (BLEU, ROUGE and METEOR all
# count shared words), so each gets a share; meaning-level ones (BERTScore, embedding cosine) weigh
# as much as the word-level group. Perplexity only guards fluency. brand_subtlety is None on rows
# with no brand brief, so its weight only counts where a brief was given.
DEFAULT_WEIGHTS: dict[str, float] = {
    "format_exact": 3.0,
    "format_partial": 0.5,
    "bleu": 0.25,
    "rouge1": 0.25,
    "rouge2": 0.25,
    "rougeL": 0.5,
    "meteor": 0.5,
    "bertscore": 1.0,
    "perplexity": 0.5,
    "embedding_cosine": 1.0,
    "brand_subtlety": 1.0,
}


def get_reward_funcs(names: Sequence[str] | str) -> list[RewardFunc]:
    """The reward functions called `names` (a list, or one comma-separated string), in order,
    duplicates dropped. ApplicationError naming the closest valid names on a typo."""
    if isinstance(names, str):
        names = names.split(",")
    by_lower = {name.lower(): name for name in REWARDS}
    funcs: list[RewardFunc] = []
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        canonical = by_lower.get(name.lower())
        if canonical is None:
            close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.5)
            hint = f" did you mean {' or '.join(repr(by_lower[c]) for c in close)}?" if close else ""
            raise ApplicationError(
                f"Unknown reward '{name}';{hint} Valid: {', '.join(REWARDS)}.",
                {"unknown": name, "suggestions": [by_lower[c] for c in close], "valid": list(REWARDS)},
            )
        if REWARDS[canonical] not in funcs:
            funcs.append(REWARDS[canonical])
    if not funcs:
        raise ApplicationError(f"Choose at least one reward. Valid: {', '.join(REWARDS)}.")
    return funcs


def score_all(
    candidate: str,
    reference: str,
    *,
    names: Sequence[str] | str | None = None,
    brand_terms: Sequence[str] | None = None,
    brand_cap: int = 1,
    brand_slogans: Sequence[str] | None = None,
    **kwargs: Any,
) -> dict[str, float | None]:
    """Every reward (or `names`) of one candidate (a raw model answer, or plain chapter text) against
    one reference chapter: {name: score}. None where a reward does not apply (brand_subtlety without
    `brand_terms`)."""
    funcs = get_reward_funcs(list(REWARDS) if names is None else names)
    call = {
        "prompts": [kwargs.pop("prompt", "")],
        "answer": [reference],
        "brand_terms": [list(brand_terms) if brand_terms else None],
        "brand_cap": [brand_cap],
        "brand_slogans": [list(brand_slogans) if brand_slogans else None],
        **kwargs,
    }
    return {func.__name__: func([candidate], **call)[0] for func in funcs}
