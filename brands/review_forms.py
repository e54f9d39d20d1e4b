"""Forms of the review workflow (issue 17): what the pages send; brands.review and the services check it."""

from __future__ import annotations

from django import forms

from brands.models import AutoApproveRule
from brands.review import MAX_COMMENT_CHARS, MAX_PASSAGE_CHARS


class ChangesForm(forms.Form):
    # The form's limit is a little over the service's, so that the service's clear message is the one shown.
    comment = forms.CharField(
        max_length=MAX_COMMENT_CHARS * 2,
        widget=forms.Textarea(attrs={"rows": 3, "required": True}),
        error_messages={"required": "Say what should change: the author revises the passage from it."},
        help_text="The author reads it and revises the placed passage, e.g. “name the board once, not twice”.",
    )


class PassageForm(forms.Form):
    passage = forms.CharField(
        max_length=MAX_PASSAGE_CHARS * 2,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        error_messages={"required": "The passage is empty: write the passage that names the brand."},
    )


class AutoApproveRuleForm(forms.Form):
    max_risk_tier = forms.ChoiceField(
        choices=AutoApproveRule._meta.get_field("max_risk_tier").choices,
        initial="low",
        label="Risk tier at most",
    )
    min_similarity = forms.FloatField(
        min_value=0.0,
        max_value=1.0,
        initial=0.95,
        label="Similarity to the draft at least",
        help_text="ROUGE-L of the placed chapter against the chapter written without the brand (0 to 1).",
    )
