"""The one base error. Views turn these into form errors or messages; a user never sees a trace."""

from __future__ import annotations

from typing import Any, Protocol


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


# What every provider client (the writer's vLLM engine, the distillation teacher, the brand embedder)
# agrees on about a failed HTTP call: whether another try can help, and the message in its body.

# HTTP statuses worth another try: timeout, conflict (e.g. an adapter being loaded by another
# worker), rate limit. Every 5xx is retried too.
RETRYABLE_STATUSES = frozenset({408, 409, 429})


def is_retryable_status(status: int) -> bool:
    """Whether a call answered with HTTP `status` may succeed if tried again."""
    return status in RETRYABLE_STATUSES or status >= 500


def error_body_message(body: object) -> str:
    """The human message of an OpenAI-style error body ({"message"}, {"error": {"message"}},
    {"error": "..."}, {"detail": "..."}, or plain text); "" when it has none."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
        if isinstance(body.get("detail"), str):
            return body["detail"]
    if isinstance(body, str):
        return body
    return ""


class HTTPResponse(Protocol):
    """What `response_message` reads of a response (an httpx.Response has it)."""

    text: str

    def json(self) -> Any: ...


def response_message(response: HTTPResponse) -> str:
    """The human message of an error response: from its JSON body, else its text (500 characters of
    it when the body is not JSON, e.g. a proxy's HTML page)."""
    try:
        return error_body_message(response.json()) or response.text
    except ValueError:
        return response.text.strip()[:500]
