"""python manage.py import_results --results DIR --dataset-name NAME [--scores FILE.json] [--name ROLE=NAME]:
a GPU run's results (scripts/gpu/train_writer.sh, docs/gpu-logs/runN/results) on the leaderboard."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mesu_web.errors import ApplicationError
from training.evaluation import EXCERPT_CHARS, quality_summary
from training.judge import MODES, read_answers
from training.selectors import IMPORTED_ENGINE
from training.services import gpu_results_import
from writer.parsing import parse_output
from writer.quality import text_quality

NAME_CHARS = 64  # EvaluationRun.target_name, JudgeComparison.target
QUALITY_SCORES = ("words", "repeat_share")  # of --scores: the leaderboard's words and repeated 4-grams
# train_writer.sh ANSWER_SEEDS: eval-grpo-s1.json, answers-grpo-s1.jsonl are the grpo writer's answers of seed 1.
SEED_ROLE = re.compile(r"(?P<role>.+)-s(?P<seed>[0-9]+)")


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _rounded(value):
    return round(value, 6) if isinstance(value, float) else value


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CommandError(f"{path}: not readable JSON ({exc}).") from exc


def eval_result(path: Path) -> dict:
    """The one run of an `evaluate_adapter` output (a list of one, or the object itself)."""
    data = read_json(path)
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    problem = ""
    if not isinstance(data, dict):
        problem = "expected the JSON list of one run that evaluate_adapter prints"
    elif not isinstance(data.get("target"), str) or not data["target"].strip():
        problem = "no `target` name"
    elif not isinstance(data.get("metrics"), dict) or not all(
        v is None or _is_number(v) for v in data["metrics"].values()
    ):
        problem = "`metrics` must map each metric to a number"
    elif not _is_count(data.get("pairs")):
        problem = "`pairs` must be a whole number"
    elif data.get("format_ok") is not None and not (
        _is_number(data["format_ok"]) and 0 <= data["format_ok"] <= 1
    ):
        problem = "`format_ok` must be a share between 0 and 1"
    elif not all(data.get(key) is None or _is_number(data[key]) for key in ("tokens", "seconds")):
        problem = "`tokens` and `seconds` must be numbers"
    if problem:
        raise CommandError(f"{path} is not an evaluate_adapter result: {problem}.")
    return data


def judge_result(path: Path) -> dict:
    """A `judge_pairs` output: mode, pairs, wins, losses, ties, win_rate, ci95, ..."""
    data = read_json(path)
    problem = ""
    if not isinstance(data, dict):
        problem = "expected the JSON object that judge_pairs prints"
    elif data.get("mode", "letters") not in MODES:
        problem = f"`mode` must be one of {', '.join(MODES)}"
    elif not all(_is_count(data.get(key)) for key in ("pairs", "wins", "losses", "ties")):
        problem = "`pairs`, `wins`, `losses` and `ties` must be whole numbers"
    elif data.get("no_verdict") is not None and not _is_count(data["no_verdict"]):
        problem = "`no_verdict` must be a whole number"
    elif not all(
        data.get(key) is None or _is_number(data[key])
        for key in ("win_rate", "win_rate_ties_half", "mean_preference")
    ):
        problem = "`win_rate`, `win_rate_ties_half` and `mean_preference` must be numbers"
    elif data.get("ci95") is not None and not (
        isinstance(data["ci95"], list) and len(data["ci95"]) == 2 and all(_is_number(v) for v in data["ci95"])
    ):
        problem = "`ci95` must be [low, high]"
    elif data.get("model") is not None and not isinstance(data["model"], str):
        problem = "`model` must be a name"
    if problem:
        raise CommandError(f"{path} is not a judge_pairs result: {problem}.")
    return {"mode": "letters", **data}


def scores_result(path: Path) -> dict:
    """bench/writer_training.py --json: {"table": {role: {metric: mean}}, "rows": {role: [per pair]}}."""
    if not path.is_file():
        raise CommandError(f"No scores file at {path}.")
    data = read_json(path)
    problem = ""
    if not isinstance(data, dict) or not isinstance(data.get("table"), dict):
        problem = "no `table` of means by target"
    elif not all(
        isinstance(means, dict) and all(v is None or _is_number(v) for v in means.values())
        for means in data["table"].values()
    ):
        problem = "each target's `table` entry must map metrics to numbers"
    elif not isinstance(data.get("rows", {}), dict) or not all(
        isinstance(rows, list) and all(isinstance(r, dict) and "book" in r and "k" in r for r in rows)
        for rows in data.get("rows", {}).values()
    ):
        problem = "`rows` must hold a list of per-pair scores ({book, k, ...}) by target"
    if problem:
        raise CommandError(f"{path} is not a bench/writer_training.py --json result: {problem}.")
    return data


def parse_names(values: list[str]) -> dict[str, str]:
    names = {}
    for value in values:
        for item in filter(None, (part.strip() for part in value.split(","))):
            role, sep, name = item.partition("=")
            if not sep or not role.strip() or not name.strip():
                raise CommandError(f"--name {item!r}: write ROLE=NAME, e.g. grpo=mesu-writer-v3.")
            names[role.strip()] = name.strip()
    return names


def source_of(folder: Path) -> str:
    """The results folder as the rows remember it: relative to the project when inside it (the same on
    every checkout), else absolute."""
    folder = folder.resolve()
    try:
        return str(folder.relative_to(Path(settings.BASE_DIR).resolve()))
    except ValueError:
        return str(folder)


class Command(BaseCommand):
    help = (
        "Bring a GPU run's results (the results folder of scripts/gpu/train_writer.sh) onto the "
        "leaderboard under --dataset-name: an evaluation per eval-ROLE.json (base, sft, grpo; status "
        f"succeeded, engine {IMPORTED_ENGINE!r}) named after the base model or the adapter (train-ROLE.json "
        "adapter_name; --name ROLE=NAME overrides, e.g. grpo=mesu-writer-v3) and linked to the registered "
        "adapter of that name, with the words and repetition of its answers-ROLE.jsonl (the answers of another "
        "seed, eval-ROLE-sN.json, are a row of their own named 'NAME seed N', linked to ROLE's adapter); a role "
        "only judged (judge-grpo-vs-v2.json: no eval-v2.json) is named by --name (v2=mesu-writer-v2), else "
        "its role; the richer means of "
        "--scores (bench/writer_training.py --json: METEOR, BERTScore, embedding cosine, the real "
        "chapter's perplexity, the repeated 4-grams) added; and a judged comparison per "
        "judge-A-vs-B.json. Importing the same folder again updates its rows."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--results", required=True, type=Path, help="The run's results folder.")
        parser.add_argument(
            "--dataset-name", required=True, help="The leaderboard's dataset for these rows (e.g. corpus-79)."
        )
        parser.add_argument(
            "--scores", type=Path, default=None, help="bench/writer_training.py --json output."
        )
        parser.add_argument(
            "--name",
            action="append",
            default=[],
            metavar="ROLE=NAME",
            help="The name a role's rows get (repeatable or comma-separated): e.g. grpo=mesu-writer-v3.",
        )
        parser.add_argument(
            "--max-new-tokens",
            type=int,
            default=640,
            help="What each answer was asked for (train_writer.sh COMPLETION_TOKENS, default 640).",
        )

    def handle(self, *args, **options) -> None:
        folder: Path = options["results"]
        dataset_name = options["dataset_name"].strip()
        if not dataset_name or len(dataset_name) > 500:
            raise CommandError("--dataset-name must be 1 to 500 characters.")
        if not folder.is_dir():
            raise CommandError(f"No results folder at {folder}.")
        if options["max_new_tokens"] < 1:
            raise CommandError("--max-new-tokens must be at least 1.")
        evals = {
            path.name[len("eval-") : -len(".json")]: eval_result(path)
            for path in sorted(folder.glob("eval-*.json"))
        }
        if not evals:
            raise CommandError(
                f"No eval-*.json in {folder}: not a results folder of scripts/gpu/train_writer.sh."
            )
        judged_files = {}
        for path in sorted(folder.glob("judge-*.json")):
            a, sep, b = path.name[len("judge-") : -len(".json")].partition("-vs-")
            if not sep or not a or not b:
                raise CommandError(f"{path.name}: a judge result is named judge-A-vs-B.json.")
            judged_files[(a, b)] = judge_result(path)
        scores = (
            scores_result(options["scores"]) if options["scores"] is not None else {"table": {}, "rows": {}}
        )

        roles = set(evals) | {role for pair in judged_files for role in pair}
        overrides = parse_names(options["name"])
        unknown = sorted(set(overrides) - roles)
        if unknown:
            raise CommandError(
                f"--name {unknown[0]}=...: {folder} has no result of {unknown[0]!r} (it has: {', '.join(sorted(roles))})."
            )
        names: dict[str, str] = {}
        for role in sorted(roles, key=lambda r: (self._seed_of(r, roles) is not None, r)):  # seeds last
            names[role] = self._name(folder, role, evals.get(role), overrides, names, roles)
        for role in sorted(roles - set(evals) - set(overrides)):
            self.stderr.write(
                f"{role!r} is judged but has no eval-{role}.json here: its comparisons name it {role!r} "
                f"(--name {role}=NAME gives it the name of its rows on the leaderboard)."
            )
        for role in sorted(set(scores["table"]) - set(evals)):
            self.stderr.write(f"The scores of {role!r} have no eval-{role}.json here: left out.")

        targets = [
            self._target(folder, role, names[role], evals[role], scores, options["max_new_tokens"])
            for role in sorted(evals)
        ]
        for target in targets:  # a seed's row belongs to the adapter of its role
            seed = self._seed_of(target["role"], roles)
            if seed is not None:
                target["adapter_name"] = names[seed[0]]
        judged = [
            {"target": names[a], "baseline": names[b], "summary": summary}
            for (a, b), summary in judged_files.items()
        ]
        source = source_of(folder)
        counts = gpu_results_import(dataset_name=dataset_name, source=source, targets=targets, judged=judged)
        for target in targets:
            self.stdout.write(
                f"{target['name']}: {target['pairs']} pairs, format ok {target['format_ok']}, "
                f"{len(target['metrics'])} metrics"
            )
        for item in judged:
            s = item["summary"]
            self.stdout.write(
                f"{item['target']} vs {item['baseline']}: {s['wins']} wins, {s['losses']} losses, {s['ties']} ties"
            )
        self.stdout.write(
            f"Imported {source} as {dataset_name!r}: {counts['runs_created']} evaluation(s) new, "
            f"{counts['runs_updated']} updated; {counts['judged_created']} judged comparison(s) new, "
            f"{counts['judged_updated']} updated."
        )

    @staticmethod
    def _seed_of(role: str, roles: set[str]) -> tuple[str, str] | None:
        """(its role, the seed) of a role of another seed's answers (grpo-s1 when grpo is here too)."""
        match = SEED_ROLE.fullmatch(role)
        return (match["role"], match["seed"]) if match and match["role"] in roles else None

    def _name(
        self,
        folder: Path,
        role: str,
        evaluation: dict | None,
        overrides: dict[str, str],
        names: dict[str, str],
        roles: set[str],
    ) -> str:
        """--name ROLE=NAME, else (another seed's answers of a role) "NAME seed N", else the adapter_name
        of train-ROLE.json, else the eval's target, else ROLE."""
        name = overrides.get(role)
        seed = self._seed_of(role, roles)
        if name is None and seed is not None:
            name = f"{names[seed[0]]} seed {seed[1]}"
        train = folder / f"train-{role}.json"
        if name is None and train.is_file():
            data = read_json(train)
            if not isinstance(data, dict):
                raise CommandError(f"{train} is not a training result: expected a JSON object.")
            if isinstance(data.get("adapter_name"), str) and data["adapter_name"].strip():
                name = data["adapter_name"].strip()
        if name is None:
            name = evaluation["target"].strip() if evaluation else role
        if len(name) > NAME_CHARS:
            raise CommandError(
                f"The name of {role!r} ({name[:80]!r}) is longer than {NAME_CHARS} characters."
            )
        return name

    def _target(
        self, folder: Path, role: str, name: str, evaluation: dict, scores: dict, max_new_tokens: int
    ) -> dict:
        metrics = {key: _rounded(value) for key, value in evaluation["metrics"].items()}
        means = scores["table"].get(role) or {}
        for key, value in means.items():  # the GPU host's own means stand; --scores adds the rest
            if key not in QUALITY_SCORES:
                metrics.setdefault(key, _rounded(value))
        per_pair = {(str(r["book"]), r["k"]): r for r in (scores.get("rows") or {}).get(role, [])}
        samples, qualities = [], []
        answers_path = folder / f"answers-{role}.jsonl"
        if answers_path.is_file():
            try:
                answers = read_answers(answers_path)
            except ApplicationError as exc:
                raise CommandError(exc.message) from exc
            for (book, k), text in answers.items():
                parsed = parse_output(text)
                quality = text_quality(parsed.text).to_dict()
                qualities.append(quality)
                row = per_pair.get((book, k), {})
                samples.append(
                    {
                        "book": book,
                        "k": k,
                        "scores": {
                            m: _rounded(v)
                            for m, v in row.items()
                            if m not in ("book", "k") and (v is None or _is_number(v))
                        },
                        "format_ok": bool(parsed.format_ok),
                        "quality": quality,
                        "excerpt": (parsed.text or text)[:EXCERPT_CHARS],
                    }
                )
        if qualities:
            quality = quality_summary(qualities)
        else:  # no answers file: the means of --scores, if any
            quality = {
                key: _rounded(means[score])
                for key, score in (("words", "words"), ("repetition", "repeat_share"))
                if means.get(score) is not None
            }
        return {
            "name": name,
            "role": role,
            "pairs": evaluation["pairs"],
            "metrics": metrics,
            "format_ok": evaluation.get("format_ok"),
            "quality": quality,
            "samples": samples,
            "tokens": int(evaluation.get("tokens") or 0),
            "seconds": float(evaluation.get("seconds") or 0.0),
            "max_new_tokens": max_new_tokens,
        }
