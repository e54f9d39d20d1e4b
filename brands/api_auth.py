"""Token auth of the partner API: `Authorization: Bearer <token>`, one scope per route.

The order of the checks: the key (unknown, revoked, or of an inactive partner: 401), the token's rate this
minute (429 with Retry-After: a flood is counted even when its scope is wrong), then the route's scope
(403). The token found is kept on the request (`partner_token`) for the audit, refused calls included.
No session and no CSRF: the API never reads a cookie.
"""

from __future__ import annotations

from django.http import HttpRequest
from ninja.security import HttpBearer

from brands import partners
from brands.models import PartnerToken

SCHEME = "PartnerTokenAuth"  # the security scheme's name in the OpenAPI schema (the class's name)


class PartnerTokenAuth(HttpBearer):
    """A partner's token with `scope` (one of PartnerToken.SCOPES)."""

    openapi_description = (
        "A partner token (`mesu_...`), made on the partner's page; each route needs one scope."
    )

    def __init__(self, scope: str) -> None:
        if scope not in partners.SCOPES:
            raise ValueError(f"Unknown scope {scope!r}: one of {', '.join(partners.SCOPES)}")
        super().__init__()
        self.scope = scope

    def __call__(self, request: HttpRequest) -> PartnerToken | None:
        request.partner_token = None
        header = request.headers.get("Authorization", "")
        if not header:
            raise partners.TokenRefused("Send a token: 'Authorization: Bearer <token>'.")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise partners.TokenRefused("Send the token as 'Authorization: Bearer <token>'.")
        return self.authenticate(request, key.strip())

    def authenticate(self, request: HttpRequest, token: str) -> PartnerToken:
        found = partners.token_for_key(key=token)
        request.partner_token = found  # for the audit, even when refused below
        found = partners.token_check(token=found)
        partners.token_rate_spend(token=found)
        partners.token_scope_check(token=found, scope=self.scope)
        partners.token_touch(token=found)
        return found
