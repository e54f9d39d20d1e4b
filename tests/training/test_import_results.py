"""import_results: a GPU run's results folder (scripts/gpu/train_writer.sh) on the leaderboard, with the
richer scores of bench/writer_training.py --json and the pairwise judge's verdicts; the leaderboard's
"Pairwise judge" table and its lower-is-better scores."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.urls import reverse

from training import selectors
from training.models import EvaluationRun, JudgeComparison, WriterAdapter
from training.selectors import IMPORTED_ENGINE

RUN11 = Path(settings.BASE_DIR) / "docs" / "gpu-logs" / "run11" / "results-79"
RUN12B = Path(settings.BASE_DIR) / "docs" / "gpu-logs" / "run12" / "run12b"
GOOD = "<start_working_out>She reads it.<end_working_out>\n<SOLUTION>Wren climbed the steps with the letter.</SOLUTION>"
LOOP = "the sea the sea the sea the sea the sea the sea the sea the sea"
PAIRS = [("emma", 3), ("persuasion", 7)]


def _write(path: Path, data) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


def _eval(target: str, metrics: dict, format_ok: float) -> list[dict]:
    return [
        {
            "run": 1,
            "target": target,
            "pairs": 2,
            "metrics": metrics,
            "format_ok": format_ok,
            "tokens": 300,
            "seconds": 4.5,
        }
    ]


def _judge(wins: int, losses: int, ties: int, **extra) -> dict:
    return {
        "mode": "logprobs",
        "pairs": wins + losses + ties,
        "wins": wins,
        "losses": losses,
        "ties": ties,
        "no_verdict": 0,
        "win_rate": round(wins / (wins + losses), 4),
        "ci95": [0.4878, 0.8077],
        "win_rate_ties_half": 0.5633,
        "answers_no_verdict": 0,
        "first_position_share": 1.0,
        "mean_preference": 0.5018,
        "model": "qwen15",
        "seconds": 2.0,
        **extra,
    }


@pytest.fixture
def results(tmp_path) -> Path:
    """A results folder shaped as train_writer.sh leaves it: base, SFT and SFT+GRPO, two judgements."""
    folder = tmp_path / "results"
    folder.mkdir()
    _write(
        folder / "eval-base.json",
        _eval("smollm2", {"format_exact": 0.0, "rouge1": 0.17, "repetition": 0.66}, 0.0),
    )
    _write(
        folder / "eval-sft.json",
        _eval("sft-x", {"format_exact": 0.5, "rouge1": 0.37, "repetition": 0.97}, 0.5),
    )
    _write(
        folder / "eval-grpo.json",
        _eval("grpo-x", {"format_exact": 1.0, "rouge1": 0.35, "repetition": 0.98}, 1.0),
    )
    _write(folder / "train-sft.json", {"steps": 200, "final_loss": 2.65, "adapter_name": "sft-x"})
    _write(folder / "train-grpo.json", {"steps": 40, "adapter_name": "grpo-x"})
    texts = {"base": [LOOP, LOOP], "sft": [GOOD, LOOP], "grpo": [GOOD, GOOD]}
    for role, answers in texts.items():
        (folder / f"answers-{role}.jsonl").write_text(
            "".join(
                json.dumps({"book": b, "k": k, "text": t}) + "\n"
                for (b, k), t in zip(PAIRS, answers, strict=True)
            )
        )
    _write(folder / "judge-grpo-vs-base.json", _judge(20, 10, 49))
    _write(folder / "judge-sft-vs-base.json", _judge(23, 9, 47, mode="letters", mean_preference=None))
    _write(folder / "distill_summary.json", {"pairs": 4})  # other files of the folder are left alone
    return folder


@pytest.fixture
def scores(tmp_path) -> Path:
    """bench/writer_training.py --json for the same run."""
    table = {
        role: {
            "format_exact": 0.25,  # the GPU host's own mean (eval-ROLE.json) stands over this one
            "rouge1": 0.99,
            "meteor": meteor,
            "bertscore": 0.45,
            "embedding_cosine": 0.4,
            "repeat_share": share,
            "words": 200.0,
            "real_chapter_ppl": ppl,
        }
        for role, meteor, share, ppl in (
            ("base", 0.10, 0.36, 35.8),
            ("sft", 0.127, 0.09, 29.9),
            ("grpo", 0.133, 0.1, 29.4),
        )
    }
    rows = {
        role: [{"book": b, "k": k, "meteor": 0.1 * k, "real_chapter_ppl": 30.0 + k} for b, k in PAIRS]
        for role in table
    }
    path = tmp_path / "scores.json"
    _write(path, {"pairs": 2, "table": table, "better_than_base": {}, "judge": {}, "rows": rows})
    return path


def _import(folder: Path, *args: str) -> str:
    out = io.StringIO()
    call_command(
        "import_results",
        "--results",
        str(folder),
        "--dataset-name",
        "corpus-79",
        *args,
        stdout=out,
        stderr=io.StringIO(),
    )
    return out.getvalue()


def _runs() -> dict[str, EvaluationRun]:
    return {run.target_name: run for run in EvaluationRun.objects.all()}


# --- The import ------------------------------------------------------------------------------


def test_a_results_folder_becomes_evaluations_and_judged_comparisons(db, results, scores):
    registered = WriterAdapter.objects.create(name="grpo-x", base_model="smollm2", path="/nowhere")
    output = _import(results, "--scores", str(scores))
    assert "3 evaluation(s) new, 0 updated; 2 judged comparison(s) new" in output

    runs = _runs()
    assert set(runs) == {"smollm2", "sft-x", "grpo-x"}  # the base model's name, the adapters' names
    for run in runs.values():
        assert run.status == EvaluationRun.Status.SUCCEEDED and run.engine == IMPORTED_ENGINE
        assert run.dataset_dir == "corpus-79" and run.done == run.total == 2 and run.finished_at is not None
        assert run.tokens == 300 and run.seconds == 4.5 and run.max_new_tokens == 640
    grpo, sft, base = runs["grpo-x"], runs["sft-x"], runs["smollm2"]
    assert grpo.adapter == registered and sft.adapter is None and base.adapter is None
    assert grpo.format_ok == 1.0 and sft.format_ok == 0.5
    # The GPU host's means stand; --scores adds what it could not run (not words and the repeat share:
    # those are the answers' quality, measured here on the answers files).
    assert grpo.metrics == {
        "format_exact": 1.0,
        "rouge1": 0.35,
        "repetition": 0.98,
        "meteor": 0.133,
        "bertscore": 0.45,
        "embedding_cosine": 0.4,
        "real_chapter_ppl": 29.4,
    }
    assert base.quality["repetition"] > 0.5 > grpo.quality["repetition"]  # LOOP repeats itself
    assert base.quality["role"] == "base" and grpo.quality["source"] == str(results.resolve())
    assert [(s["book"], s["k"], s["format_ok"]) for s in sft.samples] == [
        ("emma", 3, True),
        ("persuasion", 7, False),
    ]
    assert sft.samples[0]["scores"] == {"meteor": 0.3, "real_chapter_ppl": 33.0}
    assert "Wren climbed the steps" in sft.samples[0]["excerpt"]

    judged = {(c.target, c.baseline): c for c in JudgeComparison.objects.all()}
    assert set(judged) == {("grpo-x", "smollm2"), ("sft-x", "smollm2")}
    c = judged[("grpo-x", "smollm2")]
    assert (c.wins, c.losses, c.ties, c.no_verdict, c.pairs) == (20, 10, 49, 0, 79)
    assert (c.win_rate, c.ci_low, c.ci_high, c.win_rate_ties_half, c.mean_preference) == (
        0.6667, 0.4878, 0.8077, 0.5633, 0.5018
    )  # fmt: skip
    assert c.judge_model == "qwen15" and c.mode == "logprobs" and c.dataset_dir == "corpus-79"
    assert c.summary["first_position_share"] == 1.0
    assert (
        judged[("sft-x", "smollm2")].mode == "letters"
        and judged[("sft-x", "smollm2")].mean_preference is None
    )


def test_without_scores_or_answers_the_eval_files_are_enough(db, results):
    for path in results.glob("answers-*.jsonl"):
        path.unlink()
    _import(results)
    grpo = _runs()["grpo-x"]
    assert grpo.metrics == {"format_exact": 1.0, "rouge1": 0.35, "repetition": 0.98} and grpo.samples == []
    assert set(grpo.quality) == {"source", "role"}


def test_names_can_be_overridden_to_match_the_registered_adapter(db, results):
    shipped = WriterAdapter.objects.create(name="mesu-writer-v2", base_model="smollm2", path="/nowhere")
    _import(results, "--name", "grpo=mesu-writer-v2", "--name", "sft=sft-corpus,base=SmolLM2-135M")
    runs = _runs()
    assert set(runs) == {"mesu-writer-v2", "sft-corpus", "SmolLM2-135M"}
    assert runs["mesu-writer-v2"].adapter == shipped
    assert {(c.target, c.baseline) for c in JudgeComparison.objects.all()} == {
        ("mesu-writer-v2", "SmolLM2-135M"),
        ("sft-corpus", "SmolLM2-135M"),
    }


def test_importing_twice_updates_instead_of_duplicating(db, results, scores):
    _import(results)
    first = {name: run.pk for name, run in _runs().items()}
    output = _import(results, "--scores", str(scores))  # again, now with the scores
    assert "0 evaluation(s) new, 3 updated; 0 judged comparison(s) new, 2 updated" in output
    assert EvaluationRun.objects.count() == 3 and JudgeComparison.objects.count() == 2
    assert {name: run.pk for name, run in _runs().items()} == first
    assert _runs()["grpo-x"].metrics["meteor"] == 0.133  # the update took
    # Registered later: a new import links the row to it.
    adapter = WriterAdapter.objects.create(name="sft-x", base_model="smollm2", path="/nowhere")
    _import(results)
    assert _runs()["sft-x"].adapter == adapter
    # The same files from another folder are another source: rows of their own.
    other = results.parent / "results-again"
    shutil.copytree(results, other)
    _import(other)
    assert EvaluationRun.objects.count() == 6 and JudgeComparison.objects.count() == 4


def test_the_real_run11_results(db):
    before = {p.name: p.stat().st_mtime_ns for p in RUN11.iterdir()}
    output = _import(RUN11, "--name", "grpo=mesu-writer-v2")
    assert "3 evaluation(s) new" in output
    runs = _runs()
    assert set(runs) == {"smollm2", "sft-corpus", "mesu-writer-v2"}
    grpo = runs["mesu-writer-v2"]
    assert grpo.format_ok == pytest.approx(0.911392) and grpo.metrics["rougeL"] == pytest.approx(0.144366)
    assert (
        grpo.done == 79
        and len(grpo.samples) == 79
        and grpo.quality["source"] == "docs/gpu-logs/run11/results-79"
    )
    assert runs["sft-corpus"].format_ok == pytest.approx(0.696203) and runs["smollm2"].format_ok == 0.0
    # The answers' own format agrees with the GPU host's.
    assert sum(s["format_ok"] for s in grpo.samples) / 79 == pytest.approx(0.911392, abs=1e-6)
    c = JudgeComparison.objects.get(target="mesu-writer-v2", baseline="smollm2")
    assert (c.wins, c.losses, c.ties, c.pairs, c.mode, c.judge_model) == (
        20,
        10,
        49,
        79,
        "logprobs",
        "qwen15",
    )
    assert (c.win_rate, c.ci_low, c.ci_high) == (0.6667, 0.4878, 0.8077)
    assert JudgeComparison.objects.get(target="sft-corpus", baseline="smollm2").wins == 23
    assert JudgeComparison.objects.get(target="mesu-writer-v2", baseline="sft-corpus").losses == 17
    assert {p.name: p.stat().st_mtime_ns for p in RUN11.iterdir()} == before  # read only


def test_other_seeds_are_rows_of_their_own_and_a_judged_only_role_is_named_by_name(db, results):
    """train_writer.sh ANSWER_SEEDS leaves eval-grpo-s1.json (its target: the same adapter name as
    eval-grpo.json) and answers-grpo-s1.jsonl; GRPO_INIT_ADAPTER runs judge the new writer against the
    one it started from (judge-grpo-vs-v2.json) with no eval-v2.json."""
    shipped = WriterAdapter.objects.create(name="grpo-x", base_model="smollm2", path="/nowhere")
    for seed, format_ok in ((1, 0.5), (2, 1.0)):
        _write(results / f"eval-grpo-s{seed}.json", _eval("grpo-x", {"format_exact": format_ok}, format_ok))
    (results / "answers-grpo-s1.jsonl").write_text(
        "".join(
            json.dumps({"book": b, "k": k, "text": t}) + "\n"
            for (b, k), t in zip(PAIRS, [GOOD, LOOP], strict=True)
        )
    )
    _write(results / "judge-grpo-vs-v2.json", _judge(43, 36, 0))
    err = io.StringIO()
    call_command(
        "import_results",
        "--results",
        str(results),
        "--dataset-name",
        "corpus-79",
        stdout=io.StringIO(),
        stderr=err,
    )
    runs = _runs()
    assert set(runs) == {"smollm2", "sft-x", "grpo-x", "grpo-x seed 1", "grpo-x seed 2"}  # no seed overwrites
    assert [runs[n].adapter for n in ("grpo-x", "grpo-x seed 1", "grpo-x seed 2")] == [shipped] * 3
    assert (runs["grpo-x seed 1"].format_ok, runs["grpo-x seed 2"].format_ok) == (0.5, 1.0)
    assert runs["grpo-x seed 1"].quality["role"] == "grpo-s1" and len(runs["grpo-x seed 1"].samples) == 2
    assert runs["grpo-x seed 2"].samples == []  # no answers-grpo-s2.jsonl
    assert JudgeComparison.objects.get(target="grpo-x", baseline="v2").wins == 43
    assert "'v2' is judged but has no eval-v2.json" in err.getvalue()
    # Named: the seeds follow their role's name; the judged-only role gets the name of its own rows.
    EvaluationRun.objects.all().delete()
    JudgeComparison.objects.all().delete()
    _import(results, "--name", "grpo=mesu-writer-v3,v2=mesu-writer-v2")
    assert {"mesu-writer-v3", "mesu-writer-v3 seed 1", "mesu-writer-v3 seed 2"} <= set(_runs())
    assert JudgeComparison.objects.get(target="mesu-writer-v3", baseline="mesu-writer-v2").losses == 36


def test_the_real_run12_results_beside_run11(db):
    """./dev up: run11 (base, SFT, v2) and run12b (v3, the shipped writer, three seeds; judged against
    the base and v2, whose answers are run11's) on one leaderboard."""
    results = RUN12B / "results"
    before = {p.name: p.stat().st_mtime_ns for p in RUN12B.rglob("*") if p.is_file()}
    shipped = WriterAdapter.objects.create(name="mesu-writer-v3", base_model="smollm2", path="/nowhere")
    _import(RUN11, "--scores", str(RUN11 / "scores-cpu.json"), "--name", "grpo=mesu-writer-v2")  # as ./dev up
    output = _import(
        results,
        "--scores",
        str(RUN12B / "scores-cpu.json"),
        "--name",
        "grpo=mesu-writer-v3,v2=mesu-writer-v2,base=smollm2",
    )
    assert "3 evaluation(s) new, 0 updated; 2 judged comparison(s) new" in output
    runs = _runs()
    assert set(runs) == {
        "smollm2",
        "sft-corpus",
        "mesu-writer-v2",
        "mesu-writer-v3",
        "mesu-writer-v3 seed 1",
        "mesu-writer-v3 seed 2",
    }
    v3, v2, base = runs["mesu-writer-v3"], runs["mesu-writer-v2"], runs["smollm2"]
    seeds = [runs["mesu-writer-v3 seed 1"], runs["mesu-writer-v3 seed 2"]]
    assert all(run.adapter == shipped for run in (v3, *seeds)) and v3.quality["source"] == str(
        results.relative_to(settings.BASE_DIR)
    )
    assert (
        v3.format_ok == pytest.approx(0.974684)
        and [s.format_ok for s in seeds] == [pytest.approx(0.987342)] * 2
    )
    # Format over the 237 options of the three seeds, from the answers themselves.
    assert sum(s["format_ok"] for run in (v3, *seeds) for s in run.samples) == 233
    assert v3.metrics["rougeL"] == pytest.approx(0.149492)
    for metric in ("meteor", "bertscore", "embedding_cosine"):  # --scores: better than the base's
        assert v3.metrics[metric] > base.metrics[metric]
    assert v3.metrics["real_chapter_ppl"] < base.metrics["real_chapter_ppl"]
    assert v3.quality["repetition"] < base.quality["repetition"] and v2.format_ok == pytest.approx(0.911392)
    c = JudgeComparison.objects.get(target="mesu-writer-v3", baseline="smollm2")
    assert (c.wins, c.losses, c.ties, c.win_rate, c.ci_low, c.ci_high) == (57, 22, 0, 0.7215, 0.6142, 0.8083)
    c = JudgeComparison.objects.get(target="mesu-writer-v3", baseline="mesu-writer-v2")
    assert (c.wins, c.losses, c.ties) == (43, 36, 0)
    board = selectors.leaderboard(dataset_dir="corpus-79", metric="format_ok")
    assert board["rows"][0]["run"].target_name.startswith("mesu-writer-v3")
    assert {(c.target, c.baseline) for c in board["judged"]} == {
        ("mesu-writer-v2", "smollm2"),
        ("mesu-writer-v2", "sft-corpus"),
        ("sft-corpus", "smollm2"),
        ("mesu-writer-v3", "smollm2"),
        ("mesu-writer-v3", "mesu-writer-v2"),
    }
    assert {p.name: p.stat().st_mtime_ns for p in RUN12B.rglob("*") if p.is_file()} == before  # read only


# --- What is refused -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "args", "message"),
    [
        (lambda f: shutil.rmtree(f), (), "No results folder at"),
        (
            lambda f: [p.unlink() for p in f.glob("eval-*.json")],
            (),
            "No eval-\\*.json in .*not a results folder",
        ),
        (lambda f: (f / "eval-sft.json").write_text("{not json"), (), "eval-sft.json: not readable JSON"),
        (
            lambda f: (f / "eval-sft.json").write_bytes(b"\xff\xfe\x00"),
            (),
            "eval-sft.json: not readable JSON",
        ),
        (
            lambda f: _write(f / "eval-sft.json", {"hello": 1}),
            (),
            "eval-sft.json is not an evaluate_adapter result: no `target`",
        ),
        (
            lambda f: _write(f / "eval-sft.json", _eval("s", {"rouge1": "high"}, 0.5)),
            (),
            "`metrics` must map",
        ),
        (lambda f: _write(f / "eval-sft.json", _eval("s", {}, 1.5)), (), "`format_ok` must be a share"),
        (
            lambda f: _write(f / "judge-grpo-vs-base.json", [1, 2]),
            (),
            "not a judge_pairs result: expected the JSON object",
        ),
        (lambda f: _write(f / "judge-grpo-vs-base.json", {"mode": "logprobs", "pairs": 3}), (), "`wins`"),
        (lambda f: _write(f / "judge-grpo-vs-base.json", _judge(1, 1, 1, ci95=[0.1])), (), "`ci95` must be"),
        (
            lambda f: _write(f / "judge-grpo-vs-base.json", _judge(1, 1, 1, mode="vibes")),
            (),
            "`mode` must be one of",
        ),
        (lambda f: _write(f / "judge-grpo.json", _judge(1, 1, 1)), (), "judge-A-vs-B.json"),
        (lambda f: (f / "answers-sft.jsonl").write_text('{"book": "x"}\n'), (), "answers-sft.jsonl, line 1"),
        (lambda f: _write(f / "train-sft.json", [1]), (), "train-sft.json is not a training result"),
        (lambda f: None, ("--name", "dpo=x"), "has no result of 'dpo'"),
        (lambda f: None, ("--name", "grpo"), "write ROLE=NAME"),
        (lambda f: None, ("--name", "grpo=" + "x" * 65), "longer than 64 characters"),
        (lambda f: None, ("--scores", "/nonexistent/scores.json"), "No scores file at"),
    ],
)
def test_bad_input_is_refused_with_its_reason_and_nothing_is_written(db, results, change, args, message):
    change(results)
    with pytest.raises(CommandError, match=message):
        _import(results, *args)
    assert not EvaluationRun.objects.exists() and not JudgeComparison.objects.exists()


def test_a_scores_file_of_another_shape_is_refused(db, results, tmp_path):
    bad = tmp_path / "bad.json"
    for data, message in (
        ([], "no `table`"),
        ({"table": {"grpo": {"meteor": "good"}}}, "map metrics to numbers"),
        ({"table": {}, "rows": {"grpo": [{"meteor": 1}]}}, "per-pair scores"),
    ):
        _write(bad, data)
        with pytest.raises(CommandError, match=f"not a bench/writer_training.py --json result: .*{message}"):
            _import(results, "--scores", str(bad))
    bad.write_text("[")
    with pytest.raises(CommandError, match="not readable JSON"):
        _import(results, "--scores", str(bad))
    assert not EvaluationRun.objects.exists()


# --- The leaderboard -------------------------------------------------------------------------


def test_the_leaderboard_shows_the_imported_rows_and_the_judge_table(db, results, scores, client_for):
    root = client_for("root")
    page = root.get(reverse("training:leaderboard")).content.decode()
    assert "Pairwise judge" in page and "No judged comparisons yet" in page

    _import(results, "--scores", str(scores), "--name", "sft=<i>sft</i>")
    page = root.get(reverse("training:leaderboard"), {"dataset": "corpus-79"}).content.decode()
    assert "No judged comparisons yet" not in page
    for text in ("grpo-x", "smollm2", "vllm (GPU host)", "meteor", "real_chapter_ppl", "bertscore"):
        assert text in page
    assert "&lt;i&gt;sft&lt;/i&gt;" in page and "<i>sft</i>" not in page  # names are escaped
    assert "not registered here" in page and "(base)" in page
    assert page.count("lower is better</small>") == 2  # the repeated 4-grams and real_chapter_ppl
    judge = page[page.index('id="pairwise-judge"') :]
    assert "20 / 10 / 49" in judge and "66.7 % (48.8–80.8 %)" in judge and "56.3 %" in judge
    assert "0.5018" in judge and "qwen15" in judge and "logprobs" in judge and "letters" in judge

    # Lower is better: real_chapter_ppl and the repeated 4-grams sort lowest first.
    ppl = selectors.leaderboard(dataset_dir="corpus-79", metric="real_chapter_ppl")
    assert [r["run"].target_name for r in ppl["rows"]] == ["grpo-x", "<i>sft</i>", "smollm2"]
    assert "real_chapter_ppl" in ppl["lower_is_better"] and "real_chapter_ppl" in ppl["metrics"]
    share = selectors.leaderboard(dataset_dir="corpus-79", metric="repeat_share")
    assert share["rows"][-1]["run"].target_name == "smollm2"  # its answers loop
    meteor = selectors.leaderboard(dataset_dir="corpus-79", metric="meteor")
    assert [r["run"].target_name for r in meteor["rows"]] == ["grpo-x", "<i>sft</i>", "smollm2"]
    response = root.get(
        reverse("training:leaderboard"), {"dataset": "corpus-79", "metric": "real_chapter_ppl"}
    )
    assert response.status_code == 200 and 'class="sorted"' in response.content.decode()

    # The imported run's page reads like any evaluation's.
    detail = root.get(reverse("training:evaluation_detail", args=[_runs()["grpo-x"].pk])).content.decode()
    assert "vllm (GPU host)" in detail and "real_chapter_ppl" in detail and "persuasion" in detail


def test_a_dataset_with_only_judged_comparisons_is_on_the_menu(db, client_for):
    JudgeComparison.objects.create(
        dataset_dir="judged-only", target="<b>t</b>", baseline="base", mode="letters", pairs=3, wins=0,
        losses=0, ties=3, source="judge_pairs", win_rate=None, win_rate_ties_half=0.5,
    )  # fmt: skip
    board = selectors.leaderboard(dataset_dir=None, metric="format_ok")
    assert board["dataset_dir"] == "judged-only" and board["rows"] == [] and len(board["judged"]) == 1
    page = client_for("root").get(reverse("training:leaderboard")).content.decode()
    assert "no decisive pair" in page and "&lt;b&gt;t&lt;/b&gt;" in page and "<b>t</b>" not in page
    assert "No finished evaluation on judged-only yet" in page
