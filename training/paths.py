"""Where a staff form may point (issue 18): a dataset, a job's output folder or an adapter to register must
be inside the project's data folders (`settings.TRAINING_DATA_ROOTS`), so that a form never reads or writes
elsewhere on the machine. The command-line tools are not limited: they run as the machine's own user."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from mesu_web.errors import ApplicationError


def data_roots() -> list[Path]:
    return [Path(root).resolve() for root in settings.TRAINING_DATA_ROOTS]


def data_folder(value: str, *, what: str) -> str:
    """`value` resolved (a relative path from the project's folder; `..` and links followed), when it is inside
    one of the data roots; ApplicationError naming them otherwise."""
    value = (value or "").strip()
    if not value:
        raise ApplicationError(f"Give the {what}.")
    if "\x00" in value:
        raise ApplicationError(f"The {what} holds a NUL character.")
    path = Path(value)
    if not path.is_absolute():
        path = Path(settings.BASE_DIR) / path
    resolved = path.resolve()
    roots = data_roots()
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        shown = ", ".join(str(root) for root in roots)
        raise ApplicationError(f"The {what} must be inside the project's data folders ({shown}); {value!r} is not.")
    return str(resolved)
