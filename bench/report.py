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


def machine_info() -> dict[str, str]:
    """The machine every section names: cores, CPU model, memory, Python. Benchmarks add their own
    versions (torch, PostgreSQL, ...) to this dict."""
    import os
    import platform

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    mem_kib = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    return {
        "nproc": str(os.cpu_count()),
        "CPU": cpu,
        "RAM": f"{mem_kib / 1024**2:.1f} GiB",
        "Python": platform.python_version(),
    }
