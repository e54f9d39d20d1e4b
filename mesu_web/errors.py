"""The one base error. Views turn these into form errors or messages; a user never sees a trace."""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    def __init__(self, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}


class EngineError(ApplicationError):
    """An engine failed. `retryable` says whether trying again can help (as healthchecks' TransportError)."""

    def __init__(self, message: str, *, retryable: bool, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message, extra)
        self.retryable = retryable
