"""Decoding a reader would accept: the two-phase answer (always in the format, separate budgets, a cut
chapter shortened to its last sentence and flagged), repetition control, and providers that refuse
vLLM's extension parameters (a real proxy in front of the real vLLM server that answers them as OpenAI
does)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

from mesu_web.errors import EngineError
from tests.fixtures_http import serve_on_loopback, stop_loopback
from writer.engines import sampling_from_settings
from writer.engines.base import (
    ANSWER_TAG_TOKENS,
    CHAPTER_STOPS,
    REASONING_STOPS,
    Completion,
    Sampling,
    write_answers,
)
from writer.engines.vllm import CHAPTER_REQUEST, VLLMEngine, VLLMSettings, _refused
from writer.parsing import (
    SENTENCE_STOPS,
    answer_text,
    first_sentence_end,
    parse_output,
    reasoning_block,
    shorten_to_sentence,
    strip_tags,
)
from writer.prompting import REASONING_START

MESSAGES = [
    {"role": "system", "content": "You continue novels."},
    {"role": "user", "content": "Write the next chapter of a story about a lighthouse keeper and a storm."},
]


# -- the format, written ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reasoning", "chapter"),
    [
        ("Plan: the storm.", "The storm came at dawn."),
        ("", ""),  # a model that wrote nothing in either phase
        ("   \n", "  \n\n "),
        # Pieces that try to open or close blocks of their own: the tags are taken out.
        ("a <SOLUTION>fake</SOLUTION> b <end_working_out>", "x </SOLUTION> y <start_working_out> z"),
        ("<think>hm</think>", "< SOLUTION >Text.</solution>\n</SOLUTION>\n"),
    ],
)
def test_an_answer_put_together_from_any_pieces_is_in_the_format(reasoning, chapter):
    parsed = parse_output(answer_text(reasoning_block(reasoning), chapter))
    assert parsed.format_ok
    assert parsed.text == strip_tags(chapter).strip()
    assert parsed.reasoning == strip_tags(reasoning).strip()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The sea rose. The lamp went out. Then the", "The sea rose. The lamp went out."),
        ('"Run!" she said. He did not', '"Run!" she said.'),
        ("She asked Mr. Hale. He said no. Mr.", "She asked Mr. Hale. He said no."),
        ("He met J. Vale at the quay and", None),
        ("Pi is 3.14 and the tide", None),
        ("It ended… and then", "It ended…"),
        ("Where was she? (Nobody knew.) The", "Where was she? (Nobody knew.)"),
        ("one unfinished sentence", None),
        ("Done.", "Done."),
    ],
)
def test_a_cut_text_is_shortened_to_its_last_complete_sentence(text, expected):
    assert shorten_to_sentence(text) == expected


class _FakeWriter:
    """A WriteFn that records its calls and answers from a script: (text, tokens, finish) per piece."""

    def __init__(self, *phases: list[tuple[str, int, str]]) -> None:
        self.phases = list(phases)
        self.calls: list[tuple[list[str], int, int, tuple[str, ...]]] = []

    def __call__(self, prefixes: Sequence[str], n_each: int, max_tokens: int, stop: Sequence[str], progress):
        self.calls.append((list(prefixes), n_each, max_tokens, tuple(stop)))
        pieces = [Completion(text=t, tokens=k, finish_reason=f) for t, k, f in self.phases.pop(0)]
        if progress is not None:
            progress(sum(p.tokens for p in pieces))
        return pieces


def test_two_phases_one_call_each_with_their_own_budgets_and_a_cut_chapter_flagged():
    writer = _FakeWriter(
        [("Wren must climb.", 5, "stop"), ("Dad is worried. The council", 16, "length"), ("", 0, "stop")],
        [
            ("\nShe climbed the ninety-one steps. At the top, the lamp", 40, "length"),
            ("\nDad waited.", 4, "stop"),
            ("\nno sentence end at all", 40, "length"),
        ],
    )
    progress: list[int] = []
    answers = write_answers(
        writer, n=3, sampling=Sampling(max_tokens=40, reasoning_tokens=16), on_progress=progress.append
    )
    assert writer.calls[0] == ([REASONING_START], 3, 16, REASONING_STOPS)
    blocks, n_each, budget, stop = writer.calls[1]
    assert (n_each, budget, stop) == (1, 40, CHAPTER_STOPS) and len(blocks) == 3
    # The reasoning cut by its budget keeps its complete sentences only.
    assert "Dad is worried." in blocks[1] and "council" not in blocks[1]
    parsed = [parse_output(a.text) for a in answers]
    assert all(p.format_ok for p in parsed)
    assert parsed[0].text == "She climbed the ninety-one steps." and parsed[0].reasoning == "Wren must climb."
    assert "limit of 40 tokens" in answers[0].warning and "last complete sentence" in answers[0].warning
    assert parsed[1].text == "Dad waited." and answers[1].warning == ""
    assert parsed[2].text == "no sentence end at all" and "shown as written" in answers[2].warning
    assert [a.tokens for a in answers] == [45, 20, 40]
    assert [a.finish_reason for a in answers] == ["length", "stop", "length"]
    assert progress == [21, 21 + 84]  # the chapters' progress counts on from the reasoning's


def test_sampling_checks_and_the_answers_room_in_the_context():
    for bad in (
        {"repetition_penalty": 0},
        {"frequency_penalty": 2.5},
        {"presence_penalty": -3},
        {"reasoning_tokens": -1},
        {"no_repeat_ngram_size": -1},
    ):
        with pytest.raises(ValueError):
            Sampling(**bad)
    assert Sampling(max_tokens=512).answer_tokens == 512
    assert Sampling(max_tokens=512, reasoning_tokens=128).answer_tokens == 512 + 128 + ANSWER_TAG_TOKENS


def test_sampling_from_settings(settings):
    settings.WRITER_REASONING_TOKENS = 64
    settings.WRITER_REPETITION_PENALTY = 1.2
    settings.WRITER_FREQUENCY_PENALTY = 0.1
    settings.WRITER_PRESENCE_PENALTY = 0.2
    settings.WRITER_NO_REPEAT_NGRAM_SIZE = 5
    settings.WRITER_PREFILL_REASONING = True
    sampling = sampling_from_settings(seed=7)
    assert sampling == Sampling(
        max_tokens=settings.WRITER_MAX_NEW_TOKENS,
        temperature=settings.WRITER_TEMPERATURE,
        top_p=settings.WRITER_TOP_P,
        seed=7,
        prefill=REASONING_START,
        repetition_penalty=1.2,
        frequency_penalty=0.1,
        presence_penalty=0.2,
        no_repeat_ngram_size=5,
        reasoning_tokens=64,
    )
    assert sampling_from_settings(max_tokens=100).max_tokens == 100


# -- the real vLLM server, directly and behind a provider that refuses vLLM's parameters --------------

# What a plain OpenAI-compatible API accepts on its chat and completions endpoints (what this engine
# may send); anything else is answered as OpenAI answers it.
OPENAI_PARAMS = {
    "model", "messages", "prompt", "n", "max_tokens", "temperature", "top_p", "seed", "stop", "stream",
    "stream_options", "frequency_penalty", "presence_penalty",
}  # fmt: skip


class _PlainProvider:
    """A real HTTP proxy in front of the real vLLM server that behaves like a plain OpenAI-compatible
    API: HTTP 400 for a parameter it does not know, 404 for vLLM's /tokenize. Records every request."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removesuffix("/v1")
        self.requests: list[tuple[str, dict, int]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                unknown = sorted(set(body) - OPENAI_PARAMS)
                if self.path == "/tokenize":
                    status, data, kind = 404, json.dumps({"detail": "Not Found"}).encode(), "application/json"
                elif unknown:
                    error = {
                        "message": f"Unrecognized request argument supplied: {unknown[0]}",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                    status, data, kind = 400, json.dumps({"error": error}).encode(), "application/json"
                else:
                    upstream = httpx.post(f"{outer.upstream}{self.path}", json=body, timeout=300)
                    status, data = upstream.status_code, upstream.content
                    kind = upstream.headers.get("content-type", "application/json")
                outer.requests.append((self.path, body, status))
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                upstream = httpx.get(f"{outer.upstream}{self.path}", timeout=30)
                self.send_response(upstream.status_code)
                self.send_header("Content-Type", upstream.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(upstream.content)))
                self.end_headers()
                self.wfile.write(upstream.content)

            def log_message(self, *args) -> None:
                pass

        self.httpd, self.url = serve_on_loopback(Handler)

    def close(self) -> None:
        stop_loopback(self.httpd)


@pytest.fixture
def plain_provider(vllm_server: str) -> Iterator[_PlainProvider]:
    provider = _PlainProvider(vllm_server)
    yield provider
    provider.close()
    _refused.pop(provider.url, None)


def _engine(url: str, **overrides) -> VLLMEngine:
    values = {
        "base_url": url,
        "api_key": "",
        "model": "smollm2",
        "timeout": 120.0,
        "max_retries": 1,
        "retry_backoff": 0.05,
        "stream": True,
        "tokenizer_path": "",
    }
    return VLLMEngine(VLLMSettings(**(values | overrides)))


TWO_PHASES = Sampling(max_tokens=24, reasoning_tokens=16, seed=3, repetition_penalty=1.15)


def _assert_answers(result, n: int) -> None:
    assert len(result.completions) == n
    for completion in result.completions:
        parsed = parse_output(completion.text)
        assert parsed.format_ok, completion.text
        assert 1 <= completion.tokens <= 16 + 24


@pytest.mark.vllm
def test_vllm_takes_the_extensions_one_call_per_phase(vllm_settings, monkeypatch):
    from writer.engines.vllm import _openai_client, get_vllm_engine

    engine = get_vllm_engine()
    client = _openai_client(engine.settings)
    sent: list[tuple[str, dict]] = []
    for kind, api in (("chat", client.chat.completions), ("completions", client.completions)):
        original = api.create
        monkeypatch.setattr(
            api, "create", lambda original=original, kind=kind, **kw: (sent.append((kind, kw)), original(**kw))[1]
        )
    progress: list[int] = []
    result = engine.generate(MESSAGES, n=3, sampling=TWO_PHASES, on_progress=progress.append)
    _assert_answers(result, 3)
    # One call per phase: the reasoning of the 3 options, then their 3 chapters as 3 prompts.
    assert [kind for kind, _ in sent] == ["chat", "completions"]
    chat, chapters = sent[0][1], sent[1][1]
    assert chat["n"] == 3 and chat["max_tokens"] == 16 and chat["stop"] == list(REASONING_STOPS)
    assert chat["extra_body"] == {
        "repetition_penalty": 1.15,
        "continue_final_message": True,
        "add_generation_prompt": False,
    }
    assert chat["messages"][-1] == {"role": "assistant", "content": REASONING_START}
    assert len(chapters["prompt"]) == 3 and chapters["n"] == 1 and chapters["max_tokens"] == 24
    assert chapters["stop"] == list(CHAPTER_STOPS) and chapters["extra_body"] == {"repetition_penalty": 1.15}
    assert engine.settings.base_url not in _refused
    assert progress[-1] == sum(c.tokens for c in result.completions) and result.extra["phases"] == 2


@pytest.mark.vllm
def test_a_provider_that_refuses_the_extensions_still_gets_answers_in_the_format(plain_provider, model_dir):
    engine = _engine(plain_provider.url, tokenizer_path=str(model_dir))
    result = engine.generate(MESSAGES, n=2, sampling=TWO_PHASES)
    _assert_answers(result, 2)
    statuses = [(path, status) for path, _, status in plain_provider.requests]
    # Refused for add_generation_prompt (continuing the assistant message), then for repetition_penalty,
    # each named by the error; the third try goes through. The chapters: no /tokenize, one call each.
    assert statuses == [
        ("/v1/chat/completions", 400),
        ("/v1/chat/completions", 400),
        ("/v1/chat/completions", 200),
        ("/v1/chat/completions", 200),
        ("/v1/chat/completions", 200),
    ]
    assert _refused[plain_provider.url] == {"repetition_penalty", "continue_final_message"}
    chapter_request = plain_provider.requests[3][1]
    # Without continuation the closed reasoning is the assistant's turn, and the user asks for the chapter.
    assert chapter_request["messages"][-1] == {"role": "user", "content": CHAPTER_REQUEST}
    assert chapter_request["messages"][-2]["role"] == "assistant"
    assert chapter_request["messages"][-2]["content"].startswith(REASONING_START)

    # Remembered: the next request sends neither and is not refused.
    plain_provider.requests.clear()
    _assert_answers(engine.generate(MESSAGES, n=1, sampling=TWO_PHASES), 1)
    assert [status for _, _, status in plain_provider.requests] == [200, 200]


@pytest.mark.vllm
def test_extensions_off_sends_none_and_one_phase_still_works(plain_provider, model_dir):
    engine = _engine(plain_provider.url, tokenizer_path=str(model_dir), extensions=False, stream=False)
    result = engine.generate(
        MESSAGES, n=2, sampling=Sampling(max_tokens=12, prefill=REASONING_START, repetition_penalty=1.2)
    )
    assert [status for _, _, status in plain_provider.requests] == [200]
    # The server could not continue the prefill, so the texts are its answers as written.
    assert len(result.completions) == 2 and all(c.text for c in result.completions)
    assert plain_provider.url not in _refused


def test_a_400_for_another_reason_is_not_taken_for_a_refused_extension():
    calls: list[dict] = []

    class TooLong(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            calls.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))))
            data = json.dumps({"error": {"message": "This model's maximum context length is 4096 tokens"}}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    httpd, url = serve_on_loopback(TooLong)
    try:
        with pytest.raises(EngineError) as caught:
            _engine(url, stream=False).generate(MESSAGES, n=1, sampling=TWO_PHASES)
        assert caught.value.retryable is False and "maximum context length" in caught.value.message
        # Tried once more without the extensions (the error named none), then given up: nothing remembered.
        assert len(calls) == 2 and "repetition_penalty" in calls[0] and "repetition_penalty" not in calls[1]
        assert url not in _refused
    finally:
        stop_loopback(httpd)


def _assert_stopped_before(result, stop: str) -> None:
    for completion in result.completions:
        assert stop not in completion.text and completion.finish_reason == "stop", completion
        assert completion.tokens < 64


def test_one_phase_stops_before_its_stop_text_on_the_local_engine(local_engine):
    """A passage rewrite ends at `</PASSAGE>` (brands.matching.REWRITE_STOPS): the engine stops there
    instead of writing on to its token limit. "e" comes within the first few words of any English."""
    from writer.engines import get_engine

    result = get_engine("local").generate(MESSAGES, n=2, sampling=Sampling(max_tokens=64, seed=5, stop=("e",)))
    _assert_stopped_before(result, "e")


@pytest.mark.vllm
def test_one_phase_stops_before_its_stop_text_on_the_vllm_server(vllm_settings):
    from writer.engines.vllm import get_vllm_engine

    result = get_vllm_engine().generate(MESSAGES, n=2, sampling=Sampling(max_tokens=64, seed=5, stop=("e",)))
    _assert_stopped_before(result, "e")


# -- stop_after: an answer that ends after its first sentence (brands.insertion's added sentence) ----------

ONE_SENTENCE = Sampling(max_tokens=48, seed=5, stop=("\n",), stop_after=SENTENCE_STOPS)


def _assert_one_sentence_each(result) -> None:
    """Every answer ends right after its first sentence end, which it keeps (or at a line break, or at
    the token limit, with no sentence end before)."""
    assert len(result.completions) == 3
    for completion in result.completions:
        text = completion.text
        assert "\n" not in text
        if completion.finish_reason == "stop" and text.endswith(SENTENCE_STOPS):
            # The first stop text ends it: no ". ", "! " or "? " before (a sentence that ended in a closing
            # quote may come before it; a title's dot may be the one that stopped it).
            assert not any(stop in text[:-2] for stop in SENTENCE_STOPS), text
        else:  # a line break or the token limit came first
            assert not any(stop in text for stop in SENTENCE_STOPS), text


def _recording_chat(monkeypatch):  # noqa: ANN001, ANN202
    """The vLLM engine of the test settings, and the list its chat calls' arguments are recorded in (each
    call still goes to the real server)."""
    from writer.engines.vllm import _openai_client, get_vllm_engine

    engine = get_vllm_engine()
    api = _openai_client(engine.settings).chat.completions
    sent: list[dict] = []
    original = api.create
    monkeypatch.setattr(api, "create", lambda **kw: (sent.append(kw), original(**kw))[1])
    return engine, sent


def test_stop_after_keeps_the_sentence_end_on_the_local_engine(local_engine):
    from writer.engines import get_engine

    result = get_engine("local").generate(MESSAGES, n=3, sampling=ONE_SENTENCE)
    _assert_one_sentence_each(result)
    assert any(c.text.endswith(SENTENCE_STOPS) for c in result.completions)


@pytest.mark.vllm
def test_stop_after_keeps_the_sentence_end_on_the_vllm_server(vllm_settings, monkeypatch):
    engine, sent = _recording_chat(monkeypatch)
    result = engine.generate(MESSAGES, n=3, sampling=ONE_SENTENCE)
    _assert_one_sentence_each(result)
    assert any(c.text.endswith(SENTENCE_STOPS) for c in result.completions)
    assert sent[0]["stop"] == ["\n", *SENTENCE_STOPS] and sent[0]["extra_body"]["include_stop_str_in_output"]


@pytest.mark.vllm
def test_a_provider_that_refuses_stop_after_writes_on_to_the_line_end(plain_provider, model_dir):
    engine = _engine(plain_provider.url, tokenizer_path=str(model_dir), stream=False)
    result = engine.generate(MESSAGES, n=3, sampling=ONE_SENTENCE)
    assert len(result.completions) == 3 and all(c.text for c in result.completions)
    # Refused (the error names include_stop_str_in_output first), then sent without it and without the
    # sentence stops: OpenAI's own `stop` only.
    assert "include_stop_str_in_output" in _refused[plain_provider.url]
    last = plain_provider.requests[-1]
    assert last[2] == 200 and last[1]["stop"] == ["\n"] and "include_stop_str_in_output" not in last[1]


def test_the_local_cut_keeps_a_stop_after_text_and_drops_a_stop_text():
    from writer.engines.local import _cut_at_stop

    assert _cut_at_stop("She ran. Then\nmore", ("\n",), SENTENCE_STOPS) == ("She ran. ", True)
    assert _cut_at_stop("She ran\nThen. more", ("\n",), SENTENCE_STOPS) == ("She ran", True)
    assert _cut_at_stop('"Go!" she said. More', (), SENTENCE_STOPS) == ('"Go!" she said. ', True)
    assert _cut_at_stop("no end", ("\n",), SENTENCE_STOPS) == ("no end", False)
    with pytest.raises(ValueError, match="one-phase"):
        Sampling(reasoning_tokens=8, stop_after=SENTENCE_STOPS)


def test_first_sentence_end_skips_titles_and_initials():
    assert first_sentence_end("Tidewave Glide. She ran.") == len("Tidewave Glide.")
    assert first_sentence_end("She met Mr. Hale and J. Vale at noon. Then") == len("She met Mr. Hale and J. Vale at noon.")
    assert first_sentence_end('"Run!" she said.') == len('"Run!"')
    assert first_sentence_end("It cost 3.5 pounds") is None
    assert first_sentence_end("She went with Mr. ") is None


# -- one_line: an answer that never breaks its line (an added sentence) ------------------------------

LINES = [{"role": "user", "content": "Write a list of five fruits, one per line."}]
ONE_LINE = Sampling(max_tokens=24, seed=11, one_line=True)


def test_one_line_bans_every_line_break_on_the_local_engine(local_engine):
    from writer.engines import get_engine

    free = get_engine("local").generate(LINES, n=2, sampling=replace(ONE_LINE, one_line=False))
    assert any("\n" in c.text for c in free.completions)  # a list: the model breaks lines when it may
    result = get_engine("local").generate(LINES, n=2, sampling=ONE_LINE)
    assert all(c.text.strip() and "\n" not in c.text for c in result.completions)


@pytest.mark.vllm
def test_one_line_bans_every_line_break_on_the_vllm_server(vllm_settings, monkeypatch):
    engine, sent = _recording_chat(monkeypatch)
    result = engine.generate(LINES, n=2, sampling=ONE_LINE)
    assert all(c.text.strip() and "\n" not in c.text for c in result.completions)
    banned = {int(i) for i, bias in sent[0]["logit_bias"].items() if bias == -100}
    assert 198 in banned and len(banned) > 100  # "\n" and every token that holds one


def test_the_line_break_tokens_are_those_whose_text_holds_one(model_dir):
    from transformers import AutoTokenizer

    from writer.engines.base import line_break_token_ids

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = line_break_token_ids(tokenizer)
    assert tokenizer.encode("\n", add_special_tokens=False)[0] in ids
    assert all("\n" in tokenizer.decode([i]) or "\r" in tokenizer.decode([i]) or "\u2028" in tokenizer.decode([i]) or "\u2029" in tokenizer.decode([i]) for i in ids)
    assert tokenizer.encode(" the", add_special_tokens=False)[0] not in ids
