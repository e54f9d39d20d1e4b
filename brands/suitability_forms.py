"""Forms of the suitability pages (issue 17): a story's categories and tier (its author), a brand's
accepted categories and tier (its managers), the reader's age (the sponsorship page)."""

from __future__ import annotations

from django import forms

from brands import iab
from brands.models import RiskTier

# What a brand may accept: every tier but the floor. An author may say their story is floor-level.
BRAND_TIERS = [c for c in RiskTier.choices if c[0] != RiskTier.FLOOR]
ADULT_CHOICES = (("yes", "Yes, I am 18 or older"), ("no", "No, I am under 18"))


class StorySuitabilityForm(forms.Form):
    categories = forms.MultipleChoiceField(
        choices=iab.CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Content categories",
        error_messages={"invalid_choice": "Unknown category “%(value)s”: choose from the list."},
    )
    risk_tier = forms.ChoiceField(
        choices=RiskTier.choices,
        label="Risk tier",
        help_text="Low suits every brand; the floor tier is never monetised.",
    )


class BrandSuitabilityForm(forms.Form):
    category = forms.ChoiceField(
        choices=[("", "None")] + list(iab.CHOICES),
        required=False,
        label="The brand's own category",
        help_text="Two brands of one category never appear in one chapter.",
        error_messages={"invalid_choice": "Unknown category “%(value)s”: choose from the list."},
    )
    accepted_categories = forms.MultipleChoiceField(
        choices=iab.CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Stories the brand accepts",
        help_text="None ticked: any category. Floor-level content is never offered.",
        error_messages={"invalid_choice": "Unknown category “%(value)s”: choose from the list."},
    )
    max_risk_tier = forms.ChoiceField(
        choices=BRAND_TIERS,
        label="Highest risk tier",
        error_messages={"invalid_choice": "The floor tier is never monetised: choose low, medium or high."},
    )
    allow_health = forms.BooleanField(required=False, label="Allow placements next to health topics")
    allow_politics = forms.BooleanField(required=False, label="Allow placements next to politics")
    review_sla_days = forms.IntegerField(
        min_value=1, max_value=90, initial=3, label="Review SLA (days)",
        help_text="Placements waiting longer than this are flagged in the review queue.",
    )  # fmt: skip


class ReaderAgeForm(forms.Form):
    adult = forms.ChoiceField(
        choices=ADULT_CHOICES,
        widget=forms.RadioSelect,
        label="Are you 18 or older?",
        error_messages={"required": "Tell us whether you are 18 or older."},
    )
