"""The writer server down, or hanging: a real worker retries with back-off (the engine's quick retries,
then the task's slower ones), then fails the request with a readable reason. The web answers all along,
and nothing half-written is ever stored or shown.

The task's own retry delays (15 s, 60 s) are shortened to 1 s and 2 s through tests/faults/worker.py; the
engine's are real settings (WRITER_MAX_RETRIES, WRITER_RETRY_BACKOFF). The worker sweeps every second
meanwhile, which also shows that the sweep never re-enqueues a request waiting for its retry.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from django.urls import reverse

from tests.factories import story_with_chapters
from tests.fixtures_redis import free_port, wait_for
from writer import services
from writer.models import GenerationOption, GenerationRequest

pytestmark = [pytest.mark.faults, pytest.mark.slow]

TASK_DELAYS = (1.0, 2.0)  # seconds: the task's retries (writer.tasks.RETRY_DELAYS_SECONDS in production)
RUNS = 1 + len(TASK_DELAYS)  # the first run and the task's retries
HALF_WRITTEN = "HALFWRITTEN"  # what the hanging server streams before it stalls


class StallingWriterServer:
    """A real TCP server in a thread that speaks just enough HTTP to hang a client: the first connection
    is accepted and never answered; every later one gets a 200 and the start of a chat-completions stream
    (three tokens), then nothing, until close()."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)
            if len(self.connections) > 1:
                threading.Thread(target=self._half_answer, args=(conn,), daemon=True).start()

    def _half_answer(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)  # the request (headers and body arrive together from httpx here)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            for i in range(3):
                chunk = {
                    "id": "stall", "object": "chat.completion.chunk", "created": 0, "model": "smollm2",
                    "choices": [{"index": 0, "delta": {"content": f"{HALF_WRITTEN}{i} "}, "finish_reason": None}],
                }
                conn.sendall(f"data: {json.dumps(chunk)}\n\n".encode())
        except OSError:
            return
        self.stop.wait()  # ... and stall

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        for conn in self.connections:
            conn.close()


def _watch_until_finished(request: GenerationRequest, client, timeout: float) -> tuple[list[str], int]:  # noqa: ANN001
    """Poll the row and the request's page until it finishes; the web must answer every time, and no
    option may ever exist before the end. Returns the pages seen and the most progress the row showed."""
    url = reverse("writer:request_detail", args=[request.pk])
    pages: list[str] = []
    progress = [0]

    def finished() -> bool:
        page = client.get(url)
        assert page.status_code == 200
        pages.append(page.content.decode())
        assert client.get("/healthz").status_code == 200
        request.refresh_from_db()
        progress[0] = max(progress[0], request.progress_tokens)
        if not request.is_finished:
            assert not GenerationOption.objects.filter(request=request).exists()
        return request.is_finished

    wait_for(finished, timeout=timeout, what="the request to fail", every=0.2)
    return pages, progress[0]


def _make_request(users, settings):  # noqa: ANN001, ANN202
    settings.WRITER_ENGINE = "vllm"
    story = story_with_chapters(owner=users["alice"], chapters=2)
    return services.generation_request_create(story=story, user=users["alice"], n=2, max_new_tokens=32)


def test_writer_server_down_retries_with_backoff_then_fails_readably(users, settings, model_dir, client_for, start_worker):
    settings.WRITER_BASE_URL = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    settings.WRITER_TOKENIZER_PATH = str(model_dir)
    settings.WRITER_MAX_RETRIES, settings.WRITER_RETRY_BACKOFF = 2, 0.5  # the engine waits 0.5 s, then 1 s
    worker = start_worker(
        "generation",
        MESU_TEST_TASK_RETRY_DELAYS=",".join(map(str, TASK_DELAYS)),
        RECOVERY_SWEEP_INTERVAL="1",
        RECOVERY_STALE_AFTER="1",
    )
    started = time.monotonic()
    request = _make_request(users, settings)
    pages, _ = _watch_until_finished(request, client_for("alice"), timeout=90)
    elapsed = time.monotonic() - started

    assert request.status == GenerationRequest.Status.FAILED
    assert request.attempts == RUNS  # the sweep added no run of its own while the request waited
    assert request.error.startswith(f"The writer server at {settings.WRITER_BASE_URL} could not be reached")
    assert "after 3 attempts (trying to generate)" in request.error
    # Back-off: per run 0.5 s + 1 s of engine back-off, and the task's 1 s and 2 s between runs.
    waited = RUNS * (0.5 + 1.0) + sum(TASK_DELAYS)
    assert waited - 0.5 <= elapsed <= waited + 45, f"{elapsed:.1f} s for {waited:.1f} s of back-off"
    log = worker.log
    assert log.count("retrying in 0.5 s (attempt 2 of 3)") == RUNS
    assert log.count("retrying in 1.0 s (attempt 3 of 3)") == RUNS
    assert any("Will try again in" in page and "could not be reached" in page for page in pages)  # while waiting
    # The request's page: the reason, a way to try again, and no option.
    final = client_for("alice").get(reverse("writer:request_detail", args=[request.pk])).content.decode()
    assert "The writer could not finish" in final and "could not be reached" in final and "Try again" in final
    assert "Option 1" not in final and not GenerationOption.objects.filter(request=request).exists()


def test_writer_server_hanging_mid_stream_times_out_retries_and_fails_with_nothing_half_written(
    users, settings, model_dir, client_for, start_worker
):
    server = StallingWriterServer()
    try:
        settings.WRITER_BASE_URL = f"http://127.0.0.1:{server.port}/v1"
        settings.WRITER_TOKENIZER_PATH = str(model_dir)
        settings.WRITER_TIMEOUT = 1.5  # seconds without a byte before a call counts as hung
        settings.WRITER_MAX_RETRIES, settings.WRITER_RETRY_BACKOFF = 1, 0.2
        start_worker(
            "generation",
            MESU_TEST_TASK_RETRY_DELAYS=",".join(map(str, TASK_DELAYS)),
            RECOVERY_SWEEP_INTERVAL="1",
            RECOVERY_STALE_AFTER="1",
        )
        started = time.monotonic()
        request = _make_request(users, settings)
        pages, progress = _watch_until_finished(request, client_for("alice"), timeout=90)
        elapsed = time.monotonic() - started
    finally:
        server.close()

    assert request.status == GenerationRequest.Status.FAILED and request.attempts == RUNS
    assert request.error == (
        f"The writer server at {settings.WRITER_BASE_URL} did not answer within 1.5 s after 2 attempts "
        "(trying to generate)."
    )
    assert len(server.connections) == RUNS * 2  # every attempt reached it: the first hung, the rest half-answered
    waited = RUNS * (1.5 + 0.2 + 1.5) + sum(TASK_DELAYS)
    assert waited - 0.5 <= elapsed <= waited + 45, f"{elapsed:.1f} s for {waited:.1f} s of timeouts and back-off"
    # The stream got halfway (the row counted its tokens) but no page ever showed a word of it.
    assert progress >= 1
    assert not any(HALF_WRITTEN in page for page in pages)
    final = client_for("alice").get(reverse("writer:request_detail", args=[request.pk])).content.decode()
    assert "did not answer within 1.5 s" in final and HALF_WRITTEN not in final
    assert not GenerationOption.objects.filter(request=request).exists()
