"""What every benchmark writes: its dated section appended to docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

HEADER = (
    "# Benchmarks\n\nMeasured runs, newest last. Each section names the machine; compare numbers only "
    "within one section.\n"
)


def append_report(path: Path, report: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(HEADER)
    with path.open("a") as handle:
        handle.write("\n" + report)
