"""`./dev up 2>&1 | tee up.log`, then Ctrl-C: the stop handler must stop what ./dev started even though the
pipe it reports to is gone (issue 18, item 7). The handler is the real one, cut out of ./dev."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _functions(names: tuple[str, ...]) -> str:
    """The shell functions `names` as ./dev defines them."""
    source = (ROOT / "dev").read_text(encoding="utf-8")
    found = []
    for name in names:
        one_line = re.search(rf"^{name}\(\) {{.*}}$", source, re.M)
        block = one_line or re.search(rf"^{name}\(\) {{\n.*?^}}$", source, re.M | re.S)
        assert block, f"./dev defines no {name}()"
        found.append(block.group(0))
    return "\n".join(found)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie waits for its parent's wait: it is stopped
        return stat.read().split()[2] != "Z"


def test_ctrl_c_stops_the_children_when_the_log_pipe_is_closed(tmp_path):
    pid_file = tmp_path / "child.pid"
    harness = tmp_path / "up.sh"
    harness.write_text(
        "set -euo pipefail\n"
        + _functions(("say", "stop_all"))
        + f"""
PIDS=()
setsid sleep 300 &
PIDS+=("$!")
echo "$!" > {pid_file}
trap 'stop_all; exit 130' INT TERM
trap stop_all EXIT
say "ready"
while true; do sleep 0.1; done
""",
        encoding="utf-8",
    )
    # As `./dev up 2>&1 | tee up.log`: the reader of the output goes first (head stops after one line, as tee
    # does on Ctrl-C), then the shell gets the interrupt.
    shell = subprocess.Popen(
        ["bash", "-c", f"bash {harness} 2>&1 | head -n 1 > /dev/null"], start_new_session=True
    )
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text().strip():
            assert time.monotonic() < deadline, "the harness never started its child"
            time.sleep(0.1)
        child = int(pid_file.read_text())
        time.sleep(0.5)  # head has read "ready" and gone: the pipe is closed
        os.killpg(shell.pid, signal.SIGINT)
        deadline = time.monotonic() + 15
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "Ctrl-C left the child running: the stop handler died on the closed pipe"
    finally:
        try:
            os.killpg(shell.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if pid_file.exists() and pid_file.read_text().strip():
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
