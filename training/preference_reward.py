"""The human preference reward model: a Bradley-Terry scorer learned from people's preference pairs.

Data: the rows `writer.preferences.write_jsonl` writes (`export_preferences`, or the training pages'
download): {"prompt": chat messages, "chosen": completion, "rejected": completion, "source", "writer"}.

Features of a completion (the chapter it holds, `training.rewards.solution_text`, as every reward
scores) given its prompt: [e(chapter), e(chapter) * e(prompt tail)], 2 x 384 floats, where `e` is the
frozen MiniLM embedding every embedding reward uses (`training.rewards.embed_texts`: unit vector, mean of
150-word chunks) and the prompt tail is the last `PROMPT_TAIL_WORDS` words of the prompt's last user
message (the end of the story so far and the reader's wish, which the options continue). The first half
says what people like in any chapter (no loops, no boilerplate); the second how well it goes on from
this prompt. Features are standardised with the training completions' mean and spread.

Model: score(x) = w . x, trained with the pairwise logistic loss -log sigmoid(score(chosen) -
score(rejected)) + l2 |w|^2 (Adam, mini-batches, CPU), stopped early on held-out pairs: a fifth of the
pairs, split by prompt (one request's pairs share it), so that the held-out accuracy says how the model
does on requests it never saw. The best epoch's weights are kept (the held-out pairs choose that epoch
too, so their accuracy is a little optimistic; with a few hundred pairs there are none to spare). Scores are centred on the training
completions' mean, so the reward, sigmoid(score), is 0.5 for a typical completion.

Saved as a folder: `weights.safetensors` (w, mean, std, offset) and `card.json` (pairs, held-out
accuracy, sources, writers, date, the MiniLM it was trained on, the config). Seconds to train on a CPU
from a few hundred pairs; the time goes into embedding the texts.

Importable without Django (no model rows: the JSONL file is the interface), like the other training code.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mesu_web.errors import ApplicationError

WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "card.json"
KIND = "bradley-terry-minilm"
FORMAT_VERSION = 1
PROMPT_TAIL_WORDS = 150  # one MiniLM chunk (training.rewards: 150 English words are ~200 word pieces)
MIN_PAIRS = 10  # = 8 to learn from + 2 held out: fewer says nothing about unseen requests
EMBEDDING_DIM = 384  # all-MiniLM-L6-v2


@dataclass(frozen=True)
class PreferenceRewardConfig:
    """How the scorer is trained (saved in the card)."""

    epochs: int = field(default=200, metadata={"help": "Most passes over the training pairs."})
    patience: int = field(
        default=20, metadata={"help": "Stop after this many epochs without a better held-out loss."}
    )
    learning_rate: float = field(default=0.01, metadata={"help": "Adam's learning rate."})
    l2: float = field(
        default=0.01, metadata={"help": "Weight of the L2 penalty on w (standardised features)."}
    )
    batch_size: int = field(default=32, metadata={"help": "Pairs per optimiser step."})
    heldout_share: float = field(
        default=0.2, metadata={"help": "Share of the pairs held out (whole requests) for early stopping."}
    )
    seed: int = field(default=0, metadata={"help": "Seeds the split, the shuffles and the initial weights."})
    min_pairs: int = field(default=MIN_PAIRS, metadata={"help": "Fewer usable pairs are refused."})

    def __post_init__(self) -> None:
        problems = []
        for name in ("epochs", "patience", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be an integer >= 1, not {value!r}.")
        if not (isinstance(self.seed, int) and self.seed >= 0):
            problems.append(f"seed must be an integer >= 0, not {self.seed!r}.")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            problems.append(f"learning_rate must be a positive number, not {self.learning_rate!r}.")
        if not (self.l2 >= 0 and math.isfinite(self.l2)):
            problems.append(f"l2 must be a number >= 0, not {self.l2!r}.")
        if not 0 < self.heldout_share < 1:
            problems.append(f"heldout_share must be between 0 and 1, not {self.heldout_share!r}.")
        if not (isinstance(self.min_pairs, int) and self.min_pairs >= 4):
            problems.append(
                f"min_pairs must be an integer >= 4 (some to learn, some to check), not {self.min_pairs!r}."
            )
        if problems:
            raise ApplicationError(" ".join(problems))


# --- Pairs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreferencePair:
    """One usable pair: the chapters (SOLUTION parts) chosen and rejected, the prompt's tail, and the
    prompt's hash (pairs of one request share it; the held-out split keeps them together)."""

    chosen: str
    rejected: str
    prompt_tail: str
    group: str
    source: str = ""
    writer: str = ""


def prompt_tail(prompt: Any, words: int = PROMPT_TAIL_WORDS) -> str:
    """The last `words` words of a prompt: of its last user message when it is a chat list (the system
    message is the same for every request), else of the text."""
    if prompt is None:
        return ""
    if isinstance(prompt, str):
        text = prompt
    elif isinstance(prompt, dict):
        text = str(prompt.get("content") or "")
    else:
        messages = [m for m in prompt if isinstance(m, dict)]
        users = [m for m in messages if m.get("role") == "user"] or messages
        text = str(users[-1].get("content") or "") if users else ""
    return " ".join(text.split()[-words:])


def chapter_of(completion: Any) -> str:
    """The chapter a completion holds, as the rewards read it (its SOLUTION part, or what the parser
    salvages from an answer out of format)."""
    from training.rewards.completions import solution_text

    return solution_text(completion).strip()


def pair_from_row(row: Any) -> PreferencePair:
    """A usable pair from one JSONL row; ValueError naming why a row is not one."""
    if not isinstance(row, dict):
        raise ValueError("not an object")
    chosen, rejected, prompt = row.get("chosen"), row.get("rejected"), row.get("prompt")
    if not isinstance(chosen, (str, list)) or not isinstance(rejected, (str, list)):
        raise ValueError("no chosen or rejected completion")
    if prompt is not None and not isinstance(prompt, (str, list)):
        raise ValueError("prompt is neither text nor chat messages")
    chosen_text, rejected_text = chapter_of(chosen), chapter_of(rejected)
    if not chosen_text or not rejected_text:
        raise ValueError("an empty chapter")
    if chosen_text == rejected_text:
        raise ValueError("chosen and rejected are the same chapter")
    group = hashlib.sha256(json.dumps(prompt, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]
    return PreferencePair(
        chosen=chosen_text,
        rejected=rejected_text,
        prompt_tail=prompt_tail(prompt),
        group=group,
        source=str(row.get("source") or ""),
        writer=str(row.get("writer") or ""),
    )


def read_pairs(path: Path) -> tuple[list[PreferencePair], Counter]:
    """The usable pairs of a preference JSONL file and the lines skipped, counted by reason. Blank lines
    are not counted. ApplicationError when the file is missing or not readable text."""
    path = Path(path)
    if not path.is_file():
        raise ApplicationError(f"No preference file at {path} (make one with manage.py export_preferences).")
    pairs: list[PreferencePair] = []
    skipped: Counter = Counter()
    try:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    skipped["not JSON"] += 1
                    continue
                try:
                    pairs.append(pair_from_row(row))
                except ValueError as exc:
                    skipped[str(exc)] += 1
    except UnicodeDecodeError as exc:
        raise ApplicationError(f"{path} is not UTF-8 text: {exc}") from None
    return pairs, skipped


def split_pairs(pairs: Sequence[PreferencePair], share: float, seed: int) -> tuple[list[int], list[int], str]:
    """(train indices, held-out indices, how): whole prompts (requests) held out until `share` of the
    pairs is, when there are two prompts or more; else single pairs ("pairs")."""
    rng = random.Random(seed)
    want = max(1, round(len(pairs) * share))
    groups: dict[str, list[int]] = {}
    for i, pair in enumerate(pairs):
        groups.setdefault(pair.group, []).append(i)
    if len(groups) >= 2:
        names = sorted(groups)
        rng.shuffle(names)
        held: list[int] = []
        for name in names[:-1]:  # at least one prompt stays to learn from
            if len(held) >= want:
                break
            held.extend(groups[name])
        if held and len(held) < len(pairs) - 1:
            held_set = set(held)
            return [i for i in range(len(pairs)) if i not in held_set], sorted(held), "request"
    order = list(range(len(pairs)))
    rng.shuffle(order)
    return sorted(order[want:]), sorted(order[:want]), "pairs"


# --- Features ---------------------------------------------------------------------------------------


def embedding_model_name() -> str:
    """The MiniLM the features come from: the packaged all-MiniLM-L6-v2, or the configured folder's name."""
    from training.rewards import get_settings

    path = get_settings().embedding_model_path
    return os.path.basename(os.path.normpath(path)) if path else "all-MiniLM-L6-v2"


def raw_features(chapters: Sequence[str], tails: Sequence[str]):  # -> numpy (n, 768) float32
    """[e(chapter), e(chapter) * e(tail)] per completion; each distinct text embedded once."""
    import numpy as np

    from training.rewards import embed_texts

    texts = sorted({t for t in [*chapters, *tails] if t.strip()})
    vectors = embed_texts(texts) if texts else np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    if vectors.shape[1:] != (EMBEDDING_DIM,):
        raise ApplicationError(
            f"The embedding model gives {vectors.shape[1]} floats a text; the preference reward expects "
            f"{EMBEDDING_DIM} (all-MiniLM-L6-v2)."
        )
    index = {t: i for i, t in enumerate(texts)}
    zero = np.zeros(EMBEDDING_DIM, dtype=np.float32)

    def e(text: str):
        return vectors[index[text]] if text.strip() else zero

    rows = [np.concatenate([e(c), e(c) * e(t)]) for c, t in zip(chapters, tails, strict=True)]
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, 2 * EMBEDDING_DIM), dtype=np.float32)


# --- The model --------------------------------------------------------------------------------------


@dataclass
class PreferenceModel:
    """A trained scorer: weights over standardised features, and its card."""

    weight: Any  # torch tensor (768,)
    mean: Any  # (768,)
    std: Any  # (768,)
    offset: float  # the training completions' mean score, subtracted so that a typical one scores 0
    card: dict[str, Any]

    def score_features(self, features) -> list[float]:  # noqa: ANN001 (numpy array)
        import torch

        x = (torch.as_tensor(features, dtype=torch.float32) - self.mean) / self.std
        return [float(v) - self.offset for v in (x @ self.weight).tolist()]

    def score_chapters(self, chapters: Sequence[str], tails: Sequence[str]) -> list[float]:
        """Centred scores of chapters (plain text) after prompt tails; higher = more preferred."""
        return self.score_features(raw_features(chapters, tails))

    def score(self, completions: Sequence[Any], prompts: Sequence[Any] | None = None) -> list[float]:
        """Centred scores of completions (writer answers, chapters or chat lists) after their prompts
        (chat lists or text; None: no prompt)."""
        prompts = [None] * len(completions) if prompts is None else list(prompts)
        if len(prompts) != len(completions):
            raise ApplicationError(f"{len(prompts)} prompt(s) for {len(completions)} completion(s).")
        return self.score_chapters([chapter_of(c) for c in completions], [prompt_tail(p) for p in prompts])

    def save(self, out_dir: Path) -> Path:
        """Write the folder (weights and card), replacing `out_dir` only once both are written. A folder
        that holds something else than a preference model is refused, never overwritten."""
        from safetensors.torch import save_file

        target = Path(out_dir).resolve()
        if target.exists() and not target.is_dir():
            raise ApplicationError(f"{target} is a file; give a folder to write the preference model into.")
        if target.is_dir() and any(target.iterdir()) and not (target / CARD_FILE).is_file():
            raise ApplicationError(
                f"{target} already holds files that are not a preference model; choose an empty or new folder."
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            save_file(
                {
                    "weight": self.weight.detach().contiguous(),
                    "mean": self.mean.contiguous(),
                    "std": self.std.contiguous(),
                    "offset": self._offset_tensor(),
                },
                str(tmp / WEIGHTS_FILE),
            )
            (tmp / CARD_FILE).write_text(
                json.dumps(self.card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
            os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a worker may run as another user
            if target.exists():
                old = target.parent / f".{target.name}.old-{os.getpid()}"
                target.rename(old)
                tmp.rename(target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    def _offset_tensor(self):  # noqa: ANN202
        import torch

        return torch.tensor([self.offset], dtype=torch.float32)


def load(folder: Path) -> PreferenceModel:
    """A saved preference model; ApplicationError saying what is wrong with the folder."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    hint = "train one with manage.py train_preference_reward --data FILE.jsonl --out DIR"
    if not folder.is_dir():
        raise ApplicationError(f"No preference model folder at {folder}; {hint}.")
    card_path, weights_path = folder / CARD_FILE, folder / WEIGHTS_FILE
    if not card_path.is_file() or not weights_path.is_file():
        raise ApplicationError(
            f"{folder} has no {CARD_FILE} and {WEIGHTS_FILE}: not a preference model; {hint}."
        )
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        tensors = load_file(str(weights_path))
    except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError, OSError) as exc:
        raise ApplicationError(f"The preference model in {folder} cannot be read: {exc}") from None
    if not isinstance(card, dict) or card.get("kind") != KIND:
        raise ApplicationError(f"{card_path} is not a {KIND} card.")
    width = 2 * EMBEDDING_DIM
    shapes = {
        name: tuple(tensors[name].shape) for name in ("weight", "mean", "std", "offset") if name in tensors
    }
    if shapes != {"weight": (width,), "mean": (width,), "std": (width,), "offset": (1,)}:
        raise ApplicationError(f"{weights_path} holds {shapes}, not a {width}-feature scorer.")
    trained_on, here = card.get("embedding_model"), embedding_model_name()
    if trained_on != here:
        raise ApplicationError(
            f"The preference model in {folder} was trained on {trained_on} embeddings, but the rewards embed "
            f"with {here}: train it again with this embedding model."
        )
    return PreferenceModel(
        weight=tensors["weight"].float(),
        mean=tensors["mean"].float(),
        std=tensors["std"].float(),
        offset=float(tensors["offset"][0]),
        card=card,
    )


# --- Training ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainResult:
    pairs: int
    train_pairs: int
    heldout_pairs: int
    heldout_accuracy: float
    out: str
    skipped: dict[str, int]
    seconds: float
    model: PreferenceModel | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "pairs": self.pairs,
            "train_pairs": self.train_pairs,
            "heldout_pairs": self.heldout_pairs,
            "heldout_accuracy": self.heldout_accuracy,
            "out": self.out,
            "skipped": self.skipped,
            "seconds": self.seconds,
        }


def _pairwise(weight, chosen, rejected):  # noqa: ANN001, ANN202 (tensors)
    """Per pair: the margin score(chosen) - score(rejected)."""
    return (chosen - rejected) @ weight


def _accuracy(margins) -> float:  # noqa: ANN001
    """Share of pairs ranked right; a tie counts half."""
    if len(margins) == 0:
        return 0.0
    right = (margins > 0).float().sum() + 0.5 * (margins == 0).float().sum()
    return float(right / len(margins))


def train(
    pairs: Sequence[PreferencePair],
    *,
    out_dir: Path,
    config: PreferenceRewardConfig | None = None,
    data: str = "",
    skipped: Counter | None = None,
) -> TrainResult:
    """Train the scorer on `pairs`, save it to `out_dir` and say how it did on the held-out pairs."""
    import torch

    config = config or PreferenceRewardConfig()
    skipped = Counter() if skipped is None else skipped
    if len(pairs) < config.min_pairs:
        where = f" in {data}" if data else ""
        what = f" ({sum(skipped.values())} line(s) skipped: {dict(skipped)})" if skipped else ""
        raise ApplicationError(
            f"Only {len(pairs)} usable preference pair(s){where}{what}; the preference reward needs at least "
            f"{config.min_pairs} (some to learn from, a fifth held out to check it): {config.min_pairs - len(pairs)} "
            "more. Readers' ratings and choices and authors' acceptances make pairs (export_preferences).",
            {"pairs": len(pairs), "needed": config.min_pairs},
        )
    started = time.perf_counter()
    torch.set_num_threads(1)  # tiny matrices; more threads only contend with the embedding model's
    torch.manual_seed(config.seed)
    train_idx, held_idx, split = split_pairs(pairs, config.heldout_share, config.seed)

    n = len(pairs)
    feats = torch.as_tensor(
        raw_features(
            [p.chosen for p in pairs] + [p.rejected for p in pairs], [p.prompt_tail for p in pairs] * 2
        )
    )
    chosen_raw, rejected_raw = feats[:n], feats[n:]
    train_rows = torch.cat([chosen_raw[train_idx], rejected_raw[train_idx]])
    mean = train_rows.mean(dim=0)
    std = train_rows.std(dim=0)
    # A feature (nearly) constant in training would blow up on new text: floor the spread at a tenth of
    # the median one.
    std = torch.clamp(std, min=max(float(std.median()) * 0.1, 1e-8))
    chosen, rejected = (chosen_raw - mean) / std, (rejected_raw - mean) / std
    tr_c, tr_r = chosen[train_idx], rejected[train_idx]
    ho_c, ho_r = chosen[held_idx], rejected[held_idx]

    weight = torch.zeros(feats.shape[1], requires_grad=True)
    optimizer = torch.optim.Adam([weight], lr=config.learning_rate)
    generator = torch.Generator().manual_seed(config.seed)
    logsig = torch.nn.functional.logsigmoid

    def heldout_loss() -> float:
        with torch.no_grad():
            return float(-logsig(_pairwise(weight, ho_c, ho_r)).mean())

    best_loss, best_weight, best_epoch, since_best, epochs_run = (
        heldout_loss(),
        weight.detach().clone(),
        0,
        0,
        0,
    )
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(len(train_idx), generator=generator)
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            loss = -logsig(_pairwise(weight, tr_c[batch], tr_r[batch])).mean() + config.l2 * (weight**2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        epochs_run = epoch
        current = heldout_loss()
        if current < best_loss - 1e-6:
            best_loss, best_weight, best_epoch, since_best = current, weight.detach().clone(), epoch, 0
        else:
            since_best += 1
            if since_best >= config.patience:
                break

    with torch.no_grad():
        heldout_accuracy = round(_accuracy(_pairwise(best_weight, ho_c, ho_r)), 4)
        train_accuracy = round(_accuracy(_pairwise(best_weight, tr_c, tr_r)), 4)
        offset = float((torch.cat([tr_c, tr_r]) @ best_weight).mean())
    seconds = round(time.perf_counter() - started, 2)
    card = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data": data,
        "pairs": n,
        "train_pairs": len(train_idx),
        "heldout_pairs": len(held_idx),
        "heldout_split": split,
        "heldout_accuracy": heldout_accuracy,
        "heldout_loss": round(best_loss, 4),
        "train_accuracy": train_accuracy,
        "best_epoch": best_epoch,
        "epochs_run": epochs_run,
        "sources": dict(sorted(Counter(p.source or "unknown" for p in pairs).items())),
        "writers": dict(sorted(Counter(p.writer or "unknown" for p in pairs).items())),
        "skipped_lines": dict(sorted(skipped.items())),
        "embedding_model": embedding_model_name(),
        "embedding_dim": EMBEDDING_DIM,
        "features": "[e(chapter), e(chapter) * e(prompt tail)], standardised",
        "prompt_tail_words": PROMPT_TAIL_WORDS,
        "reward": "sigmoid(w . x - offset)",
        "config": asdict(config),
        "seconds": seconds,
    }
    model = PreferenceModel(weight=best_weight, mean=mean, std=std, offset=offset, card=card)
    target = model.save(out_dir)
    return TrainResult(
        pairs=n,
        train_pairs=len(train_idx),
        heldout_pairs=len(held_idx),
        heldout_accuracy=heldout_accuracy,
        out=str(target),
        skipped=dict(sorted(skipped.items())),
        seconds=seconds,
        model=model,
    )


def train_file(data: Path, *, out_dir: Path, config: PreferenceRewardConfig | None = None) -> TrainResult:
    """Read a preference JSONL file (`export_preferences`) and train on it."""
    data = Path(data)
    pairs, skipped = read_pairs(data)
    if not pairs and not skipped:
        raise ApplicationError(
            f"{data} is empty: no preference pairs. Export some with manage.py export_preferences once readers "
            "have rated or chosen options, or authors have accepted them."
        )
    return train(pairs, out_dir=out_dir, config=config, data=str(data.resolve()), skipped=skipped)


def config_help() -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in fields(PreferenceRewardConfig)}
