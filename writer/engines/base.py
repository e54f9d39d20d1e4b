"""The writer-engine interface: (messages, n, sampling, adapter) -> n completions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}
ProgressCallback = Callable[
    [int], None
]  # called with the number of new tokens generated so far (all options)


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 512  # new tokens per option
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int | None = None
    # Text the answer must start with (e.g. the reasoning tag). Engines return it as part of the text.
    prefill: str = ""

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if self.temperature < 0:
            raise ValueError("temperature must not be negative")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter: the name the server knows it by, and the folder it is loaded from."""

    name: str
    path: Path


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: int  # new tokens of this option
    finish_reason: str = "stop"


@dataclass
class GenerationResult:
    completions: list[Completion]
    model: str  # the base model or adapter name that produced them
    prompt_tokens: int = 0
    extra: dict = field(default_factory=dict)


class WriterEngine(Protocol):
    name: str

    def generate(
        self,
        messages: list[Message],
        *,
        n: int,
        sampling: Sampling,
        adapter: Adapter | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> GenerationResult: ...

    def count_tokens(self, text: str) -> int: ...
