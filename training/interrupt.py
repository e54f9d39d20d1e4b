"""Ctrl-C for the training commands: once, the trainer stops after its current step (with a checkpoint);
twice, at once."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def stop_after_step() -> Iterator[Callable[[], bool]]:
    """While inside: a first Ctrl-C makes the yielded `should_stop()` say True (the trainer reads it
    between steps); a second raises KeyboardInterrupt. Off the main thread (a worker thread) nothing is
    installed and `should_stop()` stays False."""
    requested = False

    def on_sigint(signum, frame) -> None:  # noqa: ANN001 (signal's handler signature)
        nonlocal requested
        if requested:
            raise KeyboardInterrupt
        requested = True
        sys.stderr.write("Stopping after this step (Ctrl-C again to abort at once)...\n")

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread: no Ctrl-C handling
        previous = None
    try:
        yield lambda: requested
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
