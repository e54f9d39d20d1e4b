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


# A provider may quote an API key back in its errors (some echo the Authorization header): the engines
# pass what they raise through these, so a key reaches neither the message a user reads nor the
# traceback a worker logs.
REDACTED = "[API key]"


def redact(text: str, secret: str) -> str:
    """`text` without `secret` (cut it out before shortening the text, or a piece of it survives)."""
    return text.replace(secret, REDACTED) if secret else text


def secret_free(error: ApplicationError, secret: str) -> ApplicationError:
    """`error` with `secret` cut out of its message."""
    if secret and secret in error.message:
        error.message = redact(error.message, secret)
        error.args = (error.message, *error.args[1:])
    return error


def safe_cause(cause: BaseException | None, secret: str) -> BaseException | None:
    """`cause` to chain an error to (`raise error from safe_cause(exc, key)`), or None when it or an
    exception behind it quotes `secret`: a traceback prints every one of them."""
    link = cause
    while secret and link is not None:
        if secret in str(link) or secret in repr(getattr(link, "body", "")):
            return None
        link = link.__cause__ or link.__context__
    return cause
