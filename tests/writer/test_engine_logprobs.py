"""`choice_logprobs`: the log-probability of each choice as the answer's first token. Which tokens spell
a choice, the vLLM path's reading of top_logprobs from a real loopback HTTP server (and its errors), the
local engine on the real SmolLM2 against a forward pass of our own, and the real vLLM CPU server."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import torch

from mesu_web.errors import ApplicationError, EngineError
from tests.fixtures_http import serve_on_loopback, stop_loopback
from writer.engines.base import Adapter, choice_token_ids, logsumexp, token_choice
from writer.engines.local import LocalEngine, LocalSettings
from writer.engines.vllm import TOP_LOGPROBS, VLLMEngine, VLLMSettings, top_choice_logprobs

MESSAGES = [
    {"role": "system", "content": "You answer with a single letter."},
    {
        "role": "user",
        "content": "Which of these is a colour? A: blue. B: seven. Answer with one letter only: A or B.",
    },
]

# --- Which tokens spell a choice ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "choice"),
    [
        ("A", "A"),
        (" A", "A"),
        ("B\n", "B"),
        ("**A", "A"),
        ("(B", "B"),
        ('"A"', "A"),
        ("\u201cB", "B"),
        ("a", None),  # case-sensitive: the article "a" is not a choice
        (" b", None),
        ("A.", None),
        ("AB", None),
        ("An", None),
        ("**", None),
        ("", None),
        ("C", None),
    ],
)
def test_token_choice(token, choice):
    assert token_choice(token, ("A", "B")) == choice


def test_logsumexp():
    assert logsumexp([math.log(0.25), math.log(0.5)]) == pytest.approx(math.log(0.75))
    assert logsumexp([-1000.0, -1000.0]) == pytest.approx(-1000.0 + math.log(2))  # no underflow to -inf
    assert logsumexp([]) == -math.inf and logsumexp([-math.inf]) == -math.inf


def test_top_choice_logprobs_sums_a_choices_tokens_and_floors_an_absent_one():
    top = [("A", math.log(0.5)), (" A", math.log(0.2)), ("The", math.log(0.1)), ("a", math.log(0.05))]
    logprobs, absent = top_choice_logprobs(top, ("A", "B"))
    assert logprobs["A"] == pytest.approx(math.log(0.7))
    # B is less likely than every token shown (p_min 0.05: halved) and than what they leave (0.15).
    assert absent == ("B",) and logprobs["B"] == pytest.approx(math.log(0.025))
    # When the tokens shown leave less over than half the least likely one, the floor is what is left.
    logprobs, absent = top_choice_logprobs([("A", math.log(0.9)), ("C", math.log(0.09))], ("A", "B"))
    assert absent == ("B",) and logprobs["B"] == pytest.approx(math.log(0.01))
    # Rounding may leave nothing over: the floor is then half the least likely.
    logprobs, _ = top_choice_logprobs([("A", 0.0), ("C", -20.0)], ("A", "B"))
    assert logprobs["B"] == pytest.approx(-20.0 - math.log(2))
    logprobs, absent = top_choice_logprobs([("The", -0.1), ("It", -3.0)], ("A", "B"))
    assert absent == ("A", "B") and logprobs["A"] == logprobs["B"] < -3.0
    with pytest.raises(ValueError):
        top_choice_logprobs([], ("A", "B"))


# --- The vLLM path against a real HTTP server ----------------------------------------------------


class _LogprobsServer:
    """A real HTTP server on a free loopback port: POST /v1/chat/completions answers `payload`
    (status, JSON); GET /v1/models lists `models`. It records what it was sent."""

    def __init__(self, status: int, payload: dict, models: tuple[str, ...] = ("smollm2",)) -> None:
        self.requests: list[tuple[str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                outer.requests.append((self.path, body))
                self._answer(status, payload)

            def do_GET(self) -> None:  # noqa: N802
                outer.requests.append((self.path, {}))
                self._answer(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in models]})

            def log_message(self, *args) -> None:
                pass

        self.httpd, self.url = serve_on_loopback(Handler)

    def close(self) -> None:
        stop_loopback(self.httpd)


@pytest.fixture
def logprobs_server() -> Iterator[type[_LogprobsServer]]:
    servers: list[_LogprobsServer] = []

    def make(status: int, payload: dict, **kwargs) -> _LogprobsServer:
        servers.append(_LogprobsServer(status, payload, **kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def _settings(url: str) -> VLLMSettings:
    return VLLMSettings(
        base_url=url, api_key="", model="smollm2", timeout=5.0, max_retries=0, retry_backoff=0.01,
        stream=True, tokenizer_path="",
    )  # fmt: skip


def _answer(top: list[tuple[str, float]] | None, chosen: tuple[str, float] | None = None) -> dict:
    """A chat completion of one token, as vLLM sends it with logprobs=true (None: without logprobs)."""
    token, logprob = chosen or (top[0] if top else ("A", 0.0))
    logprobs = None
    if top is not None:
        entry = {
            "token": token,
            "logprob": logprob,
            "bytes": list(token.encode()),
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top],
        }
        logprobs = {"content": [entry]}
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "smollm2",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": token},
                "logprobs": logprobs,
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 42, "completion_tokens": 1, "total_tokens": 43},
    }


def test_the_vllm_path_asks_for_one_token_and_reads_its_top_logprobs(logprobs_server):
    top = [(" B", -0.5), ("A", -1.5), ("B", -2.5), ("**", -3.0), ("a", -3.5), (" A", -4.0)]
    server = logprobs_server(200, _answer(top))
    scored = VLLMEngine(_settings(server.url)).choice_logprobs(MESSAGES)
    path, body = server.requests[0]
    assert path == "/v1/chat/completions"
    assert body["messages"] == MESSAGES and body["model"] == "smollm2"
    assert body["max_tokens"] == 1 and body["temperature"] == 0 and body["n"] == 1
    assert body["logprobs"] is True and body["top_logprobs"] == TOP_LOGPROBS == 20
    assert "stream" not in body or body["stream"] is False  # one answer, even with streaming settings
    assert scored.logprobs["A"] == pytest.approx(logsumexp([-1.5, -4.0]))  # "A" and " A"; not "a"
    assert scored.logprobs["B"] == pytest.approx(logsumexp([-0.5, -2.5]))
    assert scored.absent == () and scored.model == "smollm2"
    assert scored.extra["prompt_tokens"] == 42


def test_the_vllm_path_floors_a_letter_missing_from_the_top(logprobs_server):
    top = [("A", math.log(0.6)), ("The", math.log(0.3)), ("It", math.log(0.05))]
    server = logprobs_server(200, _answer(top))
    scored = VLLMEngine(_settings(server.url)).choice_logprobs(MESSAGES)
    assert scored.absent == ("B",)
    assert scored.logprobs["A"] == pytest.approx(math.log(0.6))
    assert scored.logprobs["B"] == pytest.approx(math.log(0.025))  # min(0.05 / 2, 1 - 0.95)


def test_the_vllm_path_counts_the_chosen_token_when_the_top_leaves_it_out(logprobs_server):
    server = logprobs_server(200, _answer([(" B", -2.0)], chosen=("A", -0.2)))
    scored = VLLMEngine(_settings(server.url)).choice_logprobs(MESSAGES)
    assert scored.logprobs == pytest.approx({"A": -0.2, "B": -2.0}) and scored.absent == ()


def test_the_vllm_path_scores_with_an_adapter_by_its_name(logprobs_server):
    server = logprobs_server(200, _answer([("A", -0.1), ("B", -2.5)]), models=("smollm2", "judge-lora"))
    adapter = Adapter(name="judge-lora", path=Path("/nowhere/judge-lora"))
    scored = VLLMEngine(_settings(server.url)).choice_logprobs(MESSAGES, adapter=adapter)
    assert [p for p, _ in server.requests] == ["/v1/models", "/v1/chat/completions"]  # already served
    assert server.requests[1][1]["model"] == "judge-lora" and scored.model == "judge-lora"


@pytest.mark.parametrize(
    "answer", [_answer(None), {**_answer(None), "choices": [{**_answer(None)["choices"][0], "logprobs": {"content": []}}]}]
)
def test_a_provider_without_logprobs_is_a_clear_error_naming_the_letters_mode(logprobs_server, answer):
    server = logprobs_server(200, answer)
    with pytest.raises(ApplicationError) as caught:
        VLLMEngine(_settings(server.url)).choice_logprobs(MESSAGES)
    assert "returned no log-probabilities" in caught.value.message
    assert "--mode letters" in caught.value.message and server.url in caught.value.message


def test_a_server_that_refuses_logprobs_says_to_use_the_letters_mode(logprobs_server):
    message = "Requested top logprobs of 20 exceeds the maximum of 5."
    server = logprobs_server(400, {"error": {"message": message, "type": "BadRequestError", "code": 400}})
    with pytest.raises(EngineError) as caught:
        VLLMEngine(_settings(server.url)).choice_logprobs(MESSAGES)
    assert message in caught.value.message and "--mode letters" in caught.value.message
    assert caught.value.retryable is False
    # Any other refusal is passed on as it is.
    other = logprobs_server(400, {"error": {"message": "The prompt is too long.", "code": 400}})
    with pytest.raises(EngineError) as caught:
        VLLMEngine(_settings(other.url)).choice_logprobs(MESSAGES)
    assert "The prompt is too long." in caught.value.message and "--mode letters" not in caught.value.message


# --- The local engine on the real SmolLM2 ----------------------------------------------------------


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> LocalEngine:
    return LocalEngine(LocalSettings(model_path=str(model_dir), model_name="smollm2", threads=1))


def _manual_logprobs(model, tokenizer, messages, ids_of: dict[str, list[int]]) -> dict[str, float]:
    """Our own forward pass: the whole prompt's logits (no logits_to_keep), the last row's log-softmax."""
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")  # the answer's first token comes next
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
    last = torch.log_softmax(logits.double(), dim=-1)
    return {c: float(torch.logsumexp(last[ids_], dim=0)) for c, ids_ in ids_of.items()}


@pytest.mark.slow
def test_the_local_engine_matches_a_forward_pass_of_our_own(engine):
    scored = engine.choice_logprobs(MESSAGES)
    assert scored.model == "smollm2" and scored.absent == ()
    assert all(math.isfinite(v) and v < 0 for v in scored.logprobs.values())
    loaded = engine.load()
    tokenizer = loaded.tokenizer
    # The tokens of each letter: at least its encodings with and without a leading space, never "a".
    ids_of = choice_token_ids(tokenizer, ("A", "B"))
    for letter in ("A", "B"):
        for spelled in (letter, " " + letter):
            encoded = tokenizer(spelled, add_special_tokens=False)["input_ids"]
            assert len(encoded) == 1 and encoded[0] in ids_of[letter]
    assert tokenizer("a", add_special_tokens=False)["input_ids"][0] not in ids_of["A"]
    assert scored.extra["token_ids"] == ids_of
    # The base model with any LoRA an earlier test loaded switched off (PEFT injects its layers into the
    # base model's modules: `loaded.base` alone would still apply the last active adapter).
    with loaded.activated(None) as model:
        manual = _manual_logprobs(model, tokenizer, MESSAGES, ids_of)
    assert scored.logprobs == pytest.approx(manual, abs=1e-4)
    # Not a constant: another question moves them.
    other = [MESSAGES[0], {"role": "user", "content": "A: seven. B: blue. Which is a colour? A or B?"}]
    assert engine.choice_logprobs(other).logprobs != pytest.approx(scored.logprobs, abs=1e-3)


@pytest.mark.slow
def test_the_local_engine_scores_with_an_adapter(engine, lora_adapter_dir):
    adapter = Adapter(name="test-lora", path=lora_adapter_dir)
    base = engine.choice_logprobs(MESSAGES)
    tuned = engine.choice_logprobs(MESSAGES, adapter=adapter)
    assert tuned.model == "test-lora" and all(math.isfinite(v) for v in tuned.logprobs.values())
    assert tuned.logprobs != pytest.approx(base.logprobs, abs=1e-4)  # the LoRA's random weights count
    loaded = engine.load()
    with loaded.activated(adapter) as model:
        manual = _manual_logprobs(model, loaded.tokenizer, MESSAGES, choice_token_ids(loaded.tokenizer, ("A", "B")))
    assert tuned.logprobs == pytest.approx(manual, abs=1e-4)
    # And the base model again once the adapter is off.
    assert engine.choice_logprobs(MESSAGES).logprobs == pytest.approx(base.logprobs, abs=1e-5)


# --- The real vLLM CPU server ------------------------------------------------------------------


@pytest.mark.vllm
def test_the_vllm_server_agrees_with_the_local_engine(vllm_settings, engine):
    scored = VLLMEngine().choice_logprobs(MESSAGES)
    local = engine.choice_logprobs(MESSAGES)
    assert scored.model == "smollm2" and scored.absent == ()  # both letters are among its top 20
    top = scored.extra["top"]
    assert len(top) >= TOP_LOGPROBS and all(lp <= 0 for _, lp in top)
    # bfloat16 on the server, float32 here: close, not equal.
    for letter in ("A", "B"):
        assert scored.logprobs[letter] == pytest.approx(local.logprobs[letter], abs=0.15)
    p_server = math.exp(scored.logprobs["A"]) / (math.exp(scored.logprobs["A"]) + math.exp(scored.logprobs["B"]))
    p_local = math.exp(local.logprobs["A"]) / (math.exp(local.logprobs["A"]) + math.exp(local.logprobs["B"]))
    assert p_server == pytest.approx(p_local, abs=0.05)
