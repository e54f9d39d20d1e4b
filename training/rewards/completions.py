"""Completions, solutions and references: what every reward reads from TRL's arguments.

A completion is a string or a chat list; the scored text is its SOLUTION part (or what
`writer.parsing.parse_output` salvages); the reference is the dataset's `answer` column, cut to the
candidate's length (`reference_for`, see the package docstring)."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from typing import Any

from mesu_web.errors import ApplicationError
from training.rewards.settings import get_settings
from writer.parsing import ParsedOutput, parse_output
from writer.prompting import REASONING_END, REASONING_START


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks: [{"type": "text", "text": ...}]
        return "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in content)
    return str(content)


def completion_text(completion: Any) -> str:
    """The raw text of a completion: a string, or a chat list whose assistant messages are joined."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    if isinstance(completion, Sequence):
        messages = [m for m in completion if isinstance(m, dict)]
        assistant = [m for m in messages if m.get("role", "assistant") == "assistant"] or messages
        return "".join(_content_text(m.get("content")) for m in assistant)
    return "" if completion is None else str(completion)


def with_prefill(text: str) -> str:
    """The completion as the writer sees it: `<start_working_out>` prepended when the completion
    closes a reasoning block it never opened (the prefill was part of the prompt)."""
    if REASONING_START not in text and REASONING_END in text:
        return REASONING_START + text
    return text


@functools.lru_cache(maxsize=4096)
def _parsed(text: str) -> ParsedOutput:
    # Every reward of a step parses the same 8-ish completions: parse each once.
    return parse_output(with_prefill(text))


def clear_parse_cache() -> None:
    """Forget the parsed completions (`reset_caches` keeps them: they depend on no setting)."""
    _parsed.cache_clear()


def solution_text(completion: Any) -> str:
    """The chapter text of a completion (its SOLUTION part, or what parse_output salvages)."""
    return _parsed(completion_text(completion)).text


def reasoning_text(completion: Any) -> str:
    """The reasoning of a completion (its working-out block(s), as parse_output reads them; "" when
    it has none)."""
    return _parsed(completion_text(completion)).reasoning


def per_item(kwargs: dict[str, Any], key: str, n: int) -> list[Any]:
    """A per-completion column (TRL passes one value per completion); a non-list value applies to all."""
    value = kwargs.get(key)
    if value is None:
        return [None] * n
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ApplicationError(f"The '{key}' column has {len(value)} values for {n} completions.")
        return list(value)
    return [value] * n


def nonempty_strings(value: Any) -> list[str]:
    """A list of non-empty strings from a column value: None, one string, or a list of them."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    return [v for v in value if isinstance(v, str) and v.strip()]


def references(kwargs: dict[str, Any], n: int, reward: str) -> list[str | None]:
    """The real next chapter (the `answer` column) per completion, None where a row has none;
    ApplicationError naming `reward` when the column is missing altogether."""
    if kwargs.get("answer") is None:
        raise ApplicationError(
            f"The '{reward}' reward compares with the real next chapter, but no `answer` was given "
            "(the dataset's `answer` column)."
        )
    return [None if a is None else str(a) for a in per_item(kwargs, "answer", n)]


_WORD_RUN = re.compile(r"\S+")


def reference_for(candidate: str, reference: str) -> str:
    """The part of `reference` a candidate is compared with (see the package docstring)."""
    factor = get_settings().reference_words_factor
    if factor is None:
        return reference
    words = len(candidate.split())
    keep = max(1, math.ceil(words * factor))
    for i, m in enumerate(_WORD_RUN.finditer(reference)):
        if i == keep:
            return reference[: m.start()].rstrip()
    return reference


def solution_pairs(
    completions: Sequence[Any], kwargs: dict[str, Any], reward: str
) -> list[tuple[str, str] | None]:
    """(solution, reference cut to it) per completion; None where there is no reference."""
    refs = references(kwargs, len(completions), reward)
    out: list[tuple[str, str] | None] = []
    for completion, ref in zip(completions, refs, strict=True):
        if ref is None:
            out.append(None)
            continue
        sol = solution_text(completion)
        out.append((sol, reference_for(sol, ref)))
    return out
