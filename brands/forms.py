"""Forms carry what a page sends; the services clean and check it (lists, caps, unique names)."""

from __future__ import annotations

from django import forms
from django.db.models import QuerySet

from brands.models import Brand, BrandAsset
from brands.services import MAX_PLACEMENTS


class BrandForm(forms.Form):
    name = forms.CharField(max_length=120)
    description = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="What the brand is and sells, in plain words: the writer and the matching read it.",
    )
    tone_of_voice = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="How the brand speaks, e.g. playful, calm, never snarky.",
    )
    target_audience = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="Who the brand wants to reach."
    )
    banned_themes = forms.CharField(
        required=False,
        label="Banned themes",
        help_text="Comma-separated themes and genres the brand must never appear next to, "
        "e.g. violence, self-harm, alcohol.",
    )
    max_placements_per_chapter = forms.IntegerField(
        min_value=1, max_value=MAX_PLACEMENTS, initial=1, label="Placements per chapter (at most)"
    )
    is_active = forms.BooleanField(
        required=False, initial=True, label="Active", help_text="Only active brands are matched to stories."
    )

    @staticmethod
    def initial_for(brand: Brand) -> dict[str, object]:
        return {
            "name": brand.name,
            "description": brand.description,
            "tone_of_voice": brand.tone_of_voice,
            "target_audience": brand.target_audience,
            "banned_themes": ", ".join(brand.banned_themes),
            "max_placements_per_chapter": brand.max_placements_per_chapter,
            "is_active": brand.is_active,
        }


class AssetForm(forms.Form):
    kind = forms.ChoiceField(choices=BrandAsset.Kind.choices)
    name = forms.CharField(max_length=120)
    description = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="A short description a writer can work from.",
    )
    terms = forms.CharField(
        max_length=2000,
        help_text="Comma-separated: the exact words that name the asset in a chapter, e.g. BobaBear, Boba Bear.",
    )

    @staticmethod
    def initial_for(asset: BrandAsset) -> dict[str, object]:
        return {
            "kind": asset.kind,
            "name": asset.name,
            "description": asset.description,
            "terms": ", ".join(asset.terms),
        }


class RejectForm(forms.Form):
    reason = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3, "required": True}),
        error_messages={"required": "Say why you reject this placement: the author reads it."},
        help_text="The author reads it, e.g. “the product reads like an advert in the middle of a fight”.",
    )


class SponsorshipForm(forms.Form):
    enabled = forms.TypedChoiceField(choices=[("1", "on"), ("0", "off")], coerce=lambda value: value == "1")


class StoryBrandSettingsForm(forms.Form):
    opt_in = forms.BooleanField(
        required=False,
        label="Allow brand placements in new chapters",
        help_text="The AI writer may then weave one matched brand into a chapter it writes. A brand "
        "manager approves every placement before anyone reads it, with a disclosure label.",
    )
    excluded_brands = forms.ModelMultipleChoiceField(
        queryset=Brand.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Never place these brands",
    )

    def __init__(self, *args, brands: QuerySet[Brand], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["excluded_brands"].queryset = brands
