"""The human preference reward (training.preference_reward, training.rewards.preference): a Bradley-Terry
scorer on the real MiniLM, trained from preference rows as writer.preferences writes them; the command,
its refusals, the GRPO reward and train_grpo's option, and pairs from real ratings trained end to end.

The synthetic preferences are learnable on purpose: the chosen chapter goes on with the prompt's two
characters and place, the rejected one is a loop of one sentence or web boilerplate, as readers turn
down. Each text is assembled from shuffled sentences and slots, so no two pairs share their texts."""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
from django.core.management import CommandError, call_command

from mesu_web.errors import ApplicationError
from tests.factories import story_with_chapters
from tests.fixtures_training import tiny_config, write_dataset
from training import preference_reward, rewards
from training.preference_reward import CARD_FILE, MIN_PAIRS, WEIGHTS_FILE, PreferenceRewardConfig
from training.rewards.preference import NO_MODEL, human_preference
from writer import services
from writer.models import GenerationOption, GenerationRequest
from writer.preferences import option_prefer, option_rate, preference_pairs, write_jsonl

torch.set_num_threads(1)

NAMES = [
    "Mara",
    "Tobias",
    "Wren",
    "Elias",
    "Ines",
    "Corin",
    "Hazel",
    "Ruben",
    "Nadia",
    "Felix",
    "Oona",
    "Piet",
    "Lena",
    "Arlo",
    "Sabine",
    "Jonah",
    "Mirela",
    "Quentin",
    "Talia",
    "Viggo",
]
UNSEEN_NAMES = ["Greta", "Bastien", "Yusra", "Odile", "Kasimir", "Noor", "Ambrose", "Livia"]
PLACES = [
    "lighthouse",
    "mill",
    "harbour",
    "orchard",
    "chapel",
    "boathouse",
    "library",
    "farmhouse",
    "inn",
    "quarry",
]
OBJECTS = ["lantern", "letter", "map", "key", "violin", "compass", "knife", "locket", "ledger", "rope"]
WEATHER = ["rain", "fog", "wind", "snow", "storm", "dusk"]
FEELINGS = ["tired", "uneasy", "hopeful", "angry", "frightened", "calm"]
STORY = [
    "{a} pushed open the door of the {place} and listened for {b} in the dark.",
    "{b} was waiting by the {object}, {feeling} and quiet, and did not look up at first.",
    "'We cannot stay here,' {a} said, and {b} nodded toward the {weather} beyond the window.",
    "{a} turned the {object} over in both hands, remembering what {b} had promised the night before.",
    "Outside, the {weather} thickened over the {place}, and {b} drew closer to the fire.",
    "{b} told {a} the truth at last: the {object} had never been lost, only hidden.",
    "For a long moment neither of them spoke; then {a} laughed, and {b} laughed too.",
    "{a} counted the steps back to the {place}, thinking of the road and of {b}'s warning.",
    "When the bell rang, {b} took the {object} and followed {a} out into the {weather}.",
]
LOOPS = [
    "{a} walked to the door.",
    "The {object} was on the table.",
    "{b} said nothing.",
    "It was very dark.",
    "And then {a} waited.",
]
WEB = [
    "Click here to subscribe to our newsletter and never miss a deal.",
    "This website uses cookies to improve your experience. Accept all cookies?",
    "Copyright 2024 All rights reserved. Terms of service | Privacy policy | Contact us.",
    "Top 10 {object} deals this week: free shipping on orders over $50!",
    "Sign in to your account to continue reading. Forgot your password?",
    "Download our app now for exclusive offers and breaking news alerts.",
    "Related articles: best {place} hotels, cheap flights, {weather} forecast for your area.",
    "Share this post on Facebook, Twitter and Pinterest. Leave a comment below.",
]


def answer(chapter: str) -> str:
    return f"<start_working_out>\nWhat happens next.\n<end_working_out>\n<SOLUTION>\n{chapter}\n</SOLUTION>"


class Synth:
    """Preference rows shaped as writer.preferences.preference_pairs yields them."""

    def __init__(self, seed: int, names: list[str] = NAMES) -> None:
        self.rng, self.names, self.seen = random.Random(seed), names, set()

    def new(self, make, s: dict[str, str]) -> str:  # noqa: ANN001 (a method)
        """A text no earlier pair had (a short loop can come out twice)."""
        while (text := make(s)) in self.seen:
            pass
        self.seen.add(text)
        return text

    def slots(self) -> dict[str, str]:
        a, b = self.rng.sample(self.names, 2)
        pick = self.rng.choice
        return {
            "a": a,
            "b": b,
            "place": pick(PLACES),
            "object": pick(OBJECTS),
            "weather": pick(WEATHER),
            "feeling": pick(FEELINGS),
        }

    def sentences(self, pool: list[str], s: dict[str, str], low: int, high: int) -> str:
        return " ".join(t.format(**s) for t in self.rng.sample(pool, self.rng.randint(low, high)))

    def prompt(self, s: dict[str, str]) -> list[dict[str, str]]:
        story = self.sentences(STORY, s, 3, 3)
        return [
            {"role": "system", "content": "You are a novelist. Continue the story."},
            {
                "role": "user",
                "content": f"# The {s['place'].title()}\n\n## Chapter 3\n\n{story}\n\nWrite chapter 4.",
            },
        ]

    def chosen(self, s: dict[str, str]) -> str:
        return answer(self.sentences(STORY, s, 4, 6))

    def loop(self, s: dict[str, str]) -> str:
        return answer(" ".join([self.rng.choice(LOOPS).format(**s)] * self.rng.randint(6, 12)))

    def web(self, s: dict[str, str]) -> str:
        return answer(self.sentences(WEB, s, 3, 5))

    def rows(self, requests: int) -> list[dict]:
        """Two pairs a request, as an author's accept makes them: its chosen chapter over a loop and over
        web boilerplate."""
        out = []
        for _ in range(requests):
            s = self.slots()
            prompt, good = self.prompt(s), self.new(self.chosen, s)
            for bad in (self.new(self.loop, s), self.new(self.web, s)):
                out.append(
                    {
                        "prompt": prompt,
                        "chosen": good,
                        "rejected": bad,
                        "source": "author",
                        "writer": "smollm2",
                    }
                )
        return out


def write_rows(path: Path, rows: list[dict]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        write_jsonl(rows, handle)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """35 requests x 2 pairs = 70 pairs, trained once through the command."""
    folder = tmp_path_factory.mktemp("preference")
    rows = Synth(seed=1).rows(35)
    assert len({r["rejected"] for r in rows}) == 70 and len({r["chosen"] for r in rows}) == 35
    data = write_rows(folder / "prefs.jsonl", rows)
    out = io.StringIO()
    call_command("train_preference_reward", "--data", str(data), "--out", str(folder / "model"), stdout=out)
    return {"printed": json.loads(out.getvalue()), "folder": folder / "model", "data": data}


@pytest.fixture
def reward_model(trained):
    """The human_preference reward pointed at the trained folder, and back to the settings before."""
    before = rewards.get_settings().preference_model_path
    rewards.configure(preference_model_path=str(trained["folder"]))
    yield trained["folder"]
    rewards.configure(preference_model_path=before)


@pytest.fixture
def no_reward_model(monkeypatch):
    before = rewards.get_settings().preference_model_path
    monkeypatch.delenv("PREFERENCE_REWARD_MODEL", raising=False)
    rewards.configure(preference_model_path="")
    yield
    rewards.configure(preference_model_path=before)


# --- Learning ---------------------------------------------------------------------------------------


def test_it_learns_synthetic_preferences_and_says_so_on_its_card(trained):
    printed = trained["printed"]
    assert set(printed) >= {"pairs", "train_pairs", "heldout_pairs", "heldout_accuracy", "out"}
    assert printed["pairs"] == 70 and printed["train_pairs"] + printed["heldout_pairs"] == 70
    assert 12 <= printed["heldout_pairs"] <= 20  # a fifth, in whole requests (2 pairs each)
    assert printed["heldout_pairs"] % 2 == 0
    assert printed["heldout_accuracy"] >= 0.8
    assert printed["out"] == str(trained["folder"].resolve()) and printed["skipped"] == {}
    assert (trained["folder"] / WEIGHTS_FILE).is_file()
    card = json.loads((trained["folder"] / CARD_FILE).read_text())
    assert card["pairs"] == 70 and card["heldout_accuracy"] == printed["heldout_accuracy"]
    assert card["heldout_split"] == "request"
    assert card["sources"] == {"author": 70} and card["writers"] == {"smollm2": 70}
    assert card["embedding_model"] == "all-MiniLM-L6-v2" and card["data"] == str(trained["data"].resolve())
    assert card["created"][:2] == "20" and card["config"]["seed"] == 0


def test_the_learned_reward_ranks_unseen_chosen_over_rejected(trained):
    model = preference_reward.load(trained["folder"])
    unseen = Synth(seed=99, names=UNSEEN_NAMES).rows(10)  # characters it never saw
    prompts = [r["prompt"] for r in unseen]
    chosen = model.score([r["chosen"] for r in unseen], prompts)
    rejected = model.score([r["rejected"] for r in unseen], prompts)
    right = sum(c > r for c, r in zip(chosen, rejected, strict=True))
    assert right >= 18, (chosen, rejected)  # of 20
    assert min(chosen) > 0 > max(rejected)  # centred: a typical completion scores about 0


def test_save_and_load_give_the_same_scores(trained, tmp_path):
    first = preference_reward.load(trained["folder"])
    copy = first.save(tmp_path / "copy")
    again = preference_reward.load(copy)
    texts = [r["rejected"] for r in Synth(seed=5).rows(3)] + [answer("Mara sat down by the mill.")]
    assert again.score(texts) == pytest.approx(first.score(texts), abs=1e-6)
    assert again.card == first.card
    assert not torch.equal(first.weight, torch.zeros_like(first.weight))


def test_the_same_seed_trains_the_same_model(trained, tmp_path):
    rows = Synth(seed=7).rows(8)
    pairs = [preference_reward.pair_from_row(r) for r in rows]
    one = preference_reward.train(
        pairs, out_dir=tmp_path / "a", config=PreferenceRewardConfig(epochs=5, seed=3)
    )
    two = preference_reward.train(
        pairs, out_dir=tmp_path / "b", config=PreferenceRewardConfig(epochs=5, seed=3)
    )
    assert torch.equal(one.model.weight, two.model.weight)
    assert one.heldout_pairs == two.heldout_pairs


# --- Bad input ----------------------------------------------------------------------------------------


def test_bad_input_is_refused_with_reasons(tmp_path):
    out = str(tmp_path / "model")
    with pytest.raises(CommandError, match="No preference file at"):
        call_command("train_preference_reward", "--data", str(tmp_path / "missing.jsonl"), "--out", out)
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(CommandError, match="is empty: no preference pairs"):
        call_command("train_preference_reward", "--data", str(tmp_path / "empty.jsonl"), "--out", out)
    rows = Synth(seed=3).rows(3)  # 6 good pairs
    lines = [json.dumps(r) for r in rows] + [
        "{not json",
        "[1, 2]",
        json.dumps({"prompt": "p", "chosen": answer("A tale.")}),
        json.dumps({"prompt": "p", "chosen": answer("Same."), "rejected": answer("Same.")}),
        json.dumps({"prompt": "p", "chosen": answer("Some text."), "rejected": answer("   ")}),
        json.dumps({"prompt": 5, "chosen": "a", "rejected": "b"}),
    ]
    (tmp_path / "few.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(CommandError) as exc:
        call_command("train_preference_reward", "--data", str(tmp_path / "few.jsonl"), "--out", out)
    message = str(exc.value)
    assert "Only 6 usable preference pair(s)" in message and f"at least {MIN_PAIRS}" in message
    assert "4 more" in message and "6 line(s) skipped" in message
    assert not (tmp_path / "model").exists()
    pairs, skipped = preference_reward.read_pairs(tmp_path / "few.jsonl")
    assert len(pairs) == 6
    assert skipped == Counter({
        "not JSON": 1, "not an object": 1, "no chosen or rejected completion": 1,
        "chosen and rejected are the same chapter": 1, "an empty chapter": 1,
        "prompt is neither text nor chat messages": 1,
    })  # fmt: skip


def test_malformed_lines_are_skipped_and_counted_when_enough_pairs_remain(tmp_path, capsys):
    rows = Synth(seed=4).rows(6)
    text = "\n".join([json.dumps(r) for r in rows] + ["{oops", json.dumps({"chosen": "only"})]) + "\n"
    (tmp_path / "prefs.jsonl").write_text(text)
    call_command(
        "train_preference_reward",
        "--data",
        str(tmp_path / "prefs.jsonl"),
        "--out",
        str(tmp_path / "model"),
        "--epochs",
        "3",
        "--seed",
        "2",
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["pairs"] == 12 and printed["skipped"] == {
        "no chosen or rejected completion": 1,
        "not JSON": 1,
    }
    card = json.loads((tmp_path / "model" / CARD_FILE).read_text())
    assert card["config"]["epochs"] == 3 and card["config"]["seed"] == 2 and card["epochs_run"] <= 3


def test_a_folder_that_holds_something_else_is_never_overwritten(trained, tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_model.safetensors").write_text("keep me")
    with pytest.raises(CommandError, match="not a preference model"):
        call_command(
            "train_preference_reward",
            "--data",
            str(trained["data"]),
            "--out",
            str(tmp_path / "adapter"),
            "--epochs",
            "1",
        )
    assert (tmp_path / "adapter" / "adapter_model.safetensors").read_text() == "keep me"
    with pytest.raises(CommandError, match="epochs must be an integer >= 1"):
        call_command(
            "train_preference_reward",
            "--data",
            str(trained["data"]),
            "--out",
            str(tmp_path / "m"),
            "--epochs",
            "0",
        )
    with pytest.raises(ApplicationError, match="not a preference model"):
        preference_reward.load(tmp_path / "adapter")


# --- The GRPO reward ----------------------------------------------------------------------------------


def test_the_reward_is_in_zero_one_and_higher_for_a_chosen_like_chapter(reward_model):
    synth = Synth(seed=42, names=UNSEEN_NAMES)
    s = synth.slots()
    prompt = synth.prompt(s)
    completions = [synth.chosen(s), synth.loop(s), synth.web(s), "<start_working_out>plan<end_working_out>"]
    scores = human_preference(completions, prompts=[prompt] * 4)
    assert all(0.0 <= v <= 1.0 for v in scores)
    assert scores[0] > scores[1] and scores[0] > scores[2]
    assert scores[0] > 0.5 > max(scores[1], scores[2])
    assert scores[3] == 0.0  # an empty chapter
    # TRL's chat completions, and no prompt at all, are scored too.
    chat = human_preference([[{"role": "assistant", "content": completions[0]}]], prompts=[prompt])
    assert chat == pytest.approx(scores[:1])
    assert 0.0 <= human_preference([completions[0]])[0] <= 1.0
    assert rewards.score_all(completions[0], "", names=["human_preference"], prompt=prompt) == {
        "human_preference": pytest.approx(scores[0])
    }


def test_the_reward_is_opt_in_and_says_what_it_needs(no_reward_model):
    assert rewards.get_reward_funcs("format_exact,human_preference") == [
        rewards.format_exact,
        human_preference,
    ]
    assert "human_preference" not in rewards.REWARDS and "human_preference" not in rewards.DEFAULT_WEIGHTS
    with pytest.raises(ApplicationError) as exc:
        human_preference([answer("Mara ran.")], prompts=["p"])
    assert exc.value.message == NO_MODEL and "train_preference_reward" in NO_MODEL


def test_train_grpo_refuses_human_preference_without_a_model(no_reward_model, tmp_path):
    ds = write_dataset(tmp_path / "ds")
    args = ["train_grpo", "--dataset", str(ds), "--out", str(tmp_path / "out"), "--base-model", str(tmp_path)]
    with pytest.raises(CommandError, match="The human_preference reward needs a preference model"):
        call_command(*args, "--rewards", "format_exact,human_preference")
    (tmp_path / "notamodel").mkdir()
    with pytest.raises(CommandError, match="not a preference model"):
        call_command(
            *args, "--rewards", "human_preference", "--preference-model", str(tmp_path / "notamodel")
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_grpo_step_is_rewarded_by_human_preference(trained, tmp_path):
    """One real GRPO step (SmolLM2, CPU): TRL passes the prompts as the reward reads them, and the scorer
    that was used is recorded beside the adapter."""
    from django.conf import settings

    from training.trainer import run_grpo
    from writer.model_files import prepare_model

    before = rewards.get_settings().preference_model_path
    rewards.configure(preference_model_path=str(trained["folder"]))
    try:
        config = tiny_config(
            str(prepare_model(Path(settings.WRITER_MODEL_PATH))), max_steps=1,
            reward_names=["rouge1", "human_preference"], reward_weights=[1.0, 1.0],
        )  # fmt: skip
        result = run_grpo(config=config, dataset_dir=write_dataset(tmp_path / "ds"), out_dir=tmp_path / "out")
    finally:
        rewards.configure(preference_model_path=before)
    value = result.step_logs[0]["rewards"]["human_preference"]
    assert value is not None and 0.0 <= value <= 1.0
    meta = json.loads(result.config_path.read_text())["_meta"]["preference_reward"]
    assert meta["path"] == str(trained["folder"].resolve()) and meta["card"]["pairs"] == 70


# --- From real ratings --------------------------------------------------------------------------------


@pytest.fixture
def _own_cache(settings, request):
    """A private cache (the ratings' flood limit counts there) and no tokenizer server."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": request.node.nodeid,
        }
    }
    settings.WRITER_BASE_URL = "http://127.0.0.1:9/v1"


def make_request(story, user, kind, texts, wish):  # noqa: ANN001, ANN201
    gen = GenerationRequest.objects.create(
        story=story,
        requested_by=user,
        kind=kind,
        engine="vllm",
        model_name="smollm2",
        max_new_tokens=64,
        next_number=4,
        n=len(texts),
        status=GenerationRequest.Status.SUCCEEDED,
        preference=wish,
    )
    return [
        GenerationOption.objects.create(
            request=gen, index=i, text=text, reasoning=f"Plan {i}.", raw_output=f"raw {i}", format_ok=True
        )
        for i, text in enumerate(texts)
    ]


def test_pairs_from_real_ratings_train_end_to_end(users, _own_cache, tmp_path, capsys):
    story = story_with_chapters(owner=users["alice"], chapters=3, slug="tide-line", title="Tide Line")
    Kind = GenerationRequest.Kind
    wishes = ["a storm at sea", "a quiet morning", "a letter arrives", "the lamp goes out"]
    for n, wish in enumerate(wishes):
        a, b, c = make_request(story, users["rita"], Kind.READER, (
            f"Wren climbed to the lamp room as {wish} began.", f"It was dark. It was dark. It was dark {n}.",
            f"Subscribe to our newsletter {n}. Cookies help us.",
        ), wish)  # fmt: skip
        for option, stars in ((a, 5), (b, 2), (c, 1)):
            option_rate(option=option, user=users["rita"], stars=stars)
    a, b, c = make_request(
        story,
        users["rita"],
        Kind.READER,
        ("Wren read the letter twice.", "Buy now!", "Ok ok ok."),
        "a secret",
    )
    option_prefer(option=a, user=users["rita"])
    a, b, c = make_request(
        story, users["alice"], Kind.AUTHOR, ("The tide came in.", "Loop loop loop.", "Ads."), ""
    )
    services.option_accept(option=a, user=users["alice"])

    rows = list(preference_pairs(count_tokens=lambda text: len(text.split())))
    assert Counter(r["source"] for r in rows) == {"reader": 14, "author": 2}
    data = write_rows(tmp_path / "prefs.jsonl", rows)
    call_command(
        "train_preference_reward", "--data", str(data), "--out", str(tmp_path / "model"), "--epochs", "20"
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["pairs"] == 16 and printed["skipped"] == {}
    assert printed["train_pairs"] >= 8 and printed["heldout_pairs"] >= 2
    assert 0.0 <= printed["heldout_accuracy"] <= 1.0
    card = json.loads((tmp_path / "model" / CARD_FILE).read_text())
    assert card["sources"] == {"author": 2, "reader": 14} and card["heldout_split"] == "request"
    assert len(preference_reward.load(tmp_path / "model").score(["<SOLUTION>Wren slept.</SOLUTION>"])) == 1
