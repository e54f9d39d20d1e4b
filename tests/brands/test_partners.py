"""Partner and token services and the partner pages (brands/partners.py, brands/partner_views.py): bad
input gets a clear message and changes nothing."""

from __future__ import annotations

import pytest
from django.urls import reverse

from brands import partners
from brands.models import Partner, PartnerToken
from mesu_web.errors import ApplicationError
from tests.factories import approved_brand


@pytest.fixture
def brand(users):
    return approved_brand(name="Tidewave", managers=[users["mia"]], description="Surfboards.")


@pytest.fixture
def partner(brand, users):
    return partners.partner_create(name="Shop app", brands=[brand], contact_username="rita")


def test_partner_create_links_brands_and_contact(partner, brand, users):
    assert list(partner.brands.all()) == [brand] and partner.contact == users["rita"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "  "}, "Give the partner a name"),
        ({"name": "x" * 121}, "under 120"),
        ({"name": "shop APP"}, "exists already"),
        ({"name": "New", "contact_username": "nobody"}, "No active user"),
    ],
)
def test_bad_partner_input_is_refused(partner, fields, message):
    with pytest.raises(ApplicationError, match=message):
        partners.partner_create(**fields)
    assert Partner.objects.count() == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "", "scopes": ["stories:read"], "rate_per_minute": 60}, "Name the token"),
        ({"name": "t", "scopes": [], "rate_per_minute": 60}, "at least one scope"),
        ({"name": "t", "scopes": ["admin:all"], "rate_per_minute": 60}, "Unknown scope admin:all"),
        ({"name": "t", "scopes": ["stories:read"], "rate_per_minute": 0}, "between 1 and"),
        ({"name": "t", "scopes": ["stories:read"], "rate_per_minute": 10**9}, "between 1 and"),
    ],
)
def test_bad_token_input_is_refused(partner, fields, message):
    with pytest.raises(ApplicationError, match=message):
        partners.token_create(partner=partner, **fields)
    assert not PartnerToken.objects.exists()


def test_an_inactive_partner_gets_no_token(partner):
    partner.is_active = False
    partner.save()
    with pytest.raises(ApplicationError, match="inactive"):
        partners.token_create(partner=partner, name="t", scopes=["stories:read"], rate_per_minute=60)


def test_a_token_is_shown_once_and_kept_as_its_hash(partner):
    token, key = partners.token_create(
        partner=partner, name="t", scopes=["reports:read", "stories:read"], rate_per_minute=60
    )
    assert key.startswith("mesu_") and len(key) > 40 and token.prefix == key[:12]
    assert token.scopes == ["stories:read", "reports:read"]  # in the order of PartnerToken.SCOPES
    assert partners.token_authenticate(key=key) == token
    partners.token_revoke(token=token)
    with pytest.raises(partners.TokenRefused, match="revoked"):
        partners.token_authenticate(key=key)


def test_the_pages_create_a_partner_issue_and_revoke_a_token(client_for, brand, users):
    root = client_for("root")
    response = root.post(
        reverse("brands:partner_create"),
        {"name": "Shop app", "brands": [brand.pk], "contact_username": "rita", "is_active": "on"},
    )
    partner = Partner.objects.get(name="Shop app")
    assert response.status_code == 302 and response["Location"] == reverse(
        "brands:partner_detail", args=[partner.pk]
    )
    mia = client_for("mia")
    page = mia.post(
        reverse("brands:partner_token_create", args=[partner.pk]),
        {"name": "prod", "scopes": ["stories:read"], "rate_per_minute": 30},
    )
    assert page.status_code == 200 and b"shown only this once" in page.content
    token = PartnerToken.objects.get(partner=partner)
    mia.post(reverse("brands:partner_token_revoke", args=[partner.pk, token.pk]))
    token.refresh_from_db()
    assert token.revoked_at is not None
    audit = mia.get(reverse("brands:partner_audit", args=[partner.pk]))
    assert audit.status_code == 200


def test_a_bad_token_form_keeps_what_was_typed(client_for, partner):
    page = client_for("mia").post(
        reverse("brands:partner_token_create", args=[partner.pk]),
        {"name": "prod", "scopes": [], "rate_per_minute": -5},
    )
    assert page.status_code == 400
    assert b'value="prod"' in page.content
    assert not PartnerToken.objects.exists()


def test_a_duplicate_partner_name_is_a_form_error(client_for, partner, brand):
    page = client_for("root").post(
        reverse("brands:partner_create"), {"name": "SHOP APP", "brands": [brand.pk]}
    )
    assert page.status_code == 200 and b"exists already" in page.content
    assert Partner.objects.count() == 1
