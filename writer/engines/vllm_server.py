"""Start and stop a local vLLM server process (scripts/vllm_server.sh): for tests, benchmarks and tools.

Django-free. The app itself never starts servers: it talks to WRITER_BASE_URL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "vllm_server.sh"


class ServerStartError(RuntimeError):
    """The server exited or did not answer /health in time; the message ends with its log tail."""


def server_is_up(root_url: str) -> bool:
    """Whether a vLLM server answers GET {root_url}/health with 200 now."""
    try:
        return httpx.get(f"{root_url}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def start_vllm_server(
    model_dir: Path, port: int, log_path: Path, *, env: dict[str, str] | None = None, timeout: float = 240.0
) -> tuple[subprocess.Popen, float]:
    """Start the server; return it and the seconds until /health answered (a cold start: 30-90 s here)."""
    started = time.monotonic()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(SCRIPT), str(model_dir), str(port)],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the engine core processes stop with it
        )
    root = f"http://127.0.0.1:{port}"
    while not server_is_up(root):
        if proc.poll() is not None or time.monotonic() - started > timeout:
            why = f"exited with {proc.returncode}" if proc.poll() is not None else f"was not up in {timeout:.0f} s"
            stop_process_group(proc)
            raise ServerStartError(f"the vLLM server {why}; log tail:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.5)
    return proc, time.monotonic() - started


def stop_process_group(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM the process's group (it was started in a new session), SIGKILL after `timeout` seconds."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
