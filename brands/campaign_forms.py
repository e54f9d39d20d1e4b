"""Campaign forms: they carry what the page sends; `brands.campaigns` checks and cleans it (dates, budgets,
prices, names, assets), so the same rules hold for every caller."""

from __future__ import annotations

from django import forms

from brands.models import Brand, BrandAsset, Campaign


class CampaignForm(forms.Form):
    name = forms.CharField(max_length=120)
    objective = forms.CharField(max_length=200, required=False, help_text="What the campaign is for.")
    assets = forms.ModelMultipleChoiceField(
        queryset=BrandAsset.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Assets in play",
        help_text="Only these assets are offered to stories while the campaign is live.",
        error_messages={"invalid_choice": "Choose among the brand's own assets: %(value)s is not one of them."},
    )
    starts_on = forms.DateField(label="First day", widget=forms.DateInput(attrs={"type": "date"}))
    ends_on = forms.DateField(label="Last day", widget=forms.DateInput(attrs={"type": "date"}))
    budget_total = forms.DecimalField(label="Total budget")
    budget_daily = forms.DecimalField(
        label="Daily budget", required=False, help_text="Empty: no daily limit."
    )
    pricing = forms.ChoiceField(choices=Campaign.Pricing.choices, initial=Campaign.Pricing.CPM)
    price = forms.DecimalField(
        help_text="Per 1,000 viewable impressions (CPM) or per approved placement."
    )
    pacing = forms.ChoiceField(choices=Campaign.Pacing.choices, initial=Campaign.Pacing.EVEN)
    cap_per_reader_per_day = forms.IntegerField(
        required=False,
        label="Cap per reader a day",
        help_text="Placements of the brand one reader gets a day. Empty: no cap.",
    )
    cap_per_story = forms.IntegerField(
        required=False, label="Cap per story", help_text="Approved placements of the brand in one story. Empty: no cap."
    )

    def __init__(self, *args: object, brand: Brand, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.fields["assets"].queryset = BrandAsset.objects.filter(brand=brand).order_by("kind", "name")

    @staticmethod
    def initial_for(campaign: Campaign) -> dict[str, object]:
        fields = (
            "name", "objective", "starts_on", "ends_on", "budget_total", "budget_daily", "pricing", "price",
            "pacing", "cap_per_reader_per_day", "cap_per_story",
        )  # fmt: skip
        initial: dict[str, object] = {f: getattr(campaign, f) for f in fields}
        initial["assets"] = list(campaign.assets.values_list("pk", flat=True))
        return initial


class CampaignStatusForm(forms.Form):
    status = forms.ChoiceField(choices=Campaign.Status.choices)
