"""Forms of the partner pages (issue 17): a partner (staff) and a token (the partner's brand managers)."""

from __future__ import annotations

from django import forms

from brands.models import Brand, Partner, PartnerToken


class PartnerForm(forms.Form):
    name = forms.CharField(max_length=120)
    brands = forms.ModelMultipleChoiceField(
        queryset=Brand.objects.order_by("name"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="The brands the partner acts for; their managers issue its tokens.",
    )
    contact_username = forms.CharField(
        max_length=150,
        required=False,
        label="Contact user",
        help_text="The user the partner's chapter requests are made as (a reader request of theirs).",
    )
    is_active = forms.BooleanField(required=False, initial=True, label="Active")

    @staticmethod
    def initial_for(partner: Partner) -> dict[str, object]:
        return {
            "name": partner.name,
            "brands": list(partner.brands.all()),
            "is_active": partner.is_active,
            "contact_username": partner.contact.get_username() if partner.contact else "",
        }


class TokenForm(forms.Form):
    name = forms.CharField(max_length=80, help_text="What uses it, e.g. 'shop app, production'.")
    scopes = forms.MultipleChoiceField(choices=PartnerToken.SCOPES, widget=forms.CheckboxSelectMultiple)
    rate_per_minute = forms.IntegerField(
        min_value=1,
        initial=60,
        label="Calls a minute at most",
        help_text="Calls over this rate get 429 until the minute turns.",
    )
