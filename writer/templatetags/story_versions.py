"""Versions, swipes and branches in the pages: what the story page says about branches, and a swipe's
progress (writer.versions, writer.swipes, writer.branches)."""

from __future__ import annotations

from django import template

from writer.branches import story_branch_info
from writer.models import GenerationOption, GenerationRequest, Story
from writer.swipes import swipe_expected_tokens

register = template.Library()


@register.simple_tag
def branch_info(story: Story, user: object) -> dict[str, object]:
    """{"original": the story this one branches, or None; "branches": its branches the user may see}."""
    return story_branch_info(story=story, user=user)


@register.filter
def swipe_percent(option: GenerationOption, request: GenerationRequest) -> int:
    """How far the option's running swipe is, 0-99 (its tokens of the most it writes)."""
    expected = swipe_expected_tokens(request)
    tokens = getattr(option, "swipe_tokens", 0) or 0
    return min(99, round(100 * tokens / expected)) if expected else 0
