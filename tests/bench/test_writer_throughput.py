"""bench/gpu/writer_throughput.py's batch against the real vLLM CPU server: with --distinct-prompts no KV
block is shared between requests or with an earlier batch (the server's own prefix-cache counters say so),
while the benchmark's one prompt is served from the prefix cache the second time."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "gpu"))

from writer_throughput import _batch, distinct, metric_sums  # noqa: E402

PROMPT = [
    {"role": "system", "content": "You continue stories for readers."},
    {"role": "user", "content": "Chapter 1. " + "Mira walked the pier at dusk, counting lanterns. " * 60},
]


def test_distinct_gives_each_request_its_own_first_line():
    a, b = distinct(PROMPT, 0, "n1"), distinct(PROMPT, 1, "n1")
    assert a[0]["content"] != b[0]["content"] and a[0]["content"].startswith("Reader session n1-0.\n")
    assert a[0]["content"].endswith(PROMPT[0]["content"]) and a[1:] == PROMPT[1:]  # the rest untouched
    assert PROMPT[0]["content"] == "You continue stories for readers."  # the caller's prompt not changed


def _prefix_cache(root: str) -> list[float]:
    """[queried, hit] tokens from the server's prefix-cache counters."""
    return metric_sums(
        root,
        ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_queries"),
        ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_hits"),
    )


def _hits_of(root: str, distinct_prompts: bool) -> tuple[float, float, dict]:
    before = _prefix_cache(root)
    out = asyncio.run(_batch(root, ["smollm2"], PROMPT, 2, 1, 2, distinct_prompts))
    after = _prefix_cache(root)
    return after[0] - before[0], after[1] - before[1], out


@pytest.mark.vllm
def test_distinct_prompts_share_no_kv_blocks(vllm_server: str):
    root = vllm_server.removesuffix("/v1")
    for _ in range(2):  # a second distinct batch does not hit the first one's blocks either
        queried, hit, out = _hits_of(root, True)
        assert queried >= 2 * 500 and hit == 0, (queried, hit)
        assert out["distinct_prompts"] is True and out["output_tokens"] == 2 * 2
    _hits_of(root, False)
    queried, hit, out = _hits_of(root, False)  # the one shared prompt: cached from the batch before
    assert hit >= 0.5 * queried > 0, (queried, hit)
    assert out["distinct_prompts"] is False
