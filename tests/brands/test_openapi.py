"""The partner API's OpenAPI schema: served at /api/v1/openapi.json without a token, parses, lists every
route with its security scheme and scope, and its paths and components are the ones asserted here (a new
route or a removed one fails this test until it is added to ROUTES)."""

from __future__ import annotations

import json

from django.test import Client

from brands.api_auth import SCHEME

ROUTES = {
    ("/api/v1/stories", "get"): "stories:read",
    ("/api/v1/stories/{slug}/requests", "post"): "requests:write",
    ("/api/v1/requests/{request_id}", "get"): "requests:read",
    ("/api/v1/reports/campaigns", "get"): "reports:read",
    ("/api/v1/reports/campaigns/{campaign_id}", "get"): "reports:read",
}
SCHEMAS = {
    "StoryPage",
    "StoryOut",
    "RequestIn",
    "RequestCreated",
    "RequestOut",
    "OptionOut",
    "CampaignReportOut",
    "ErrorOut",
}


def schema() -> dict:
    response = Client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    return json.loads(response.content)


def test_the_schema_is_served_and_names_the_api(db):
    doc = schema()
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"] == "MeSu Studio partner API"
    assert doc["info"]["version"] == "1"


def test_every_route_is_listed_with_its_security_scheme_and_scope(db):
    doc = schema()
    found = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert found == set(ROUTES)
    for (path, method), scope in ROUTES.items():
        operation = doc["paths"][path][method]
        assert operation["security"] == [{SCHEME: []}], path
        assert operation["x-scope"] == scope
        assert f"`{scope}`" in operation["description"]
        for status in ("401", "403", "422", "429"):
            assert status in operation["responses"], (path, status)
    assert doc["components"]["securitySchemes"] == {
        SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": doc["components"]["securitySchemes"][SCHEME]["description"],
        }
    }


def test_the_components_and_the_request_body(db):
    doc = schema()
    assert SCHEMAS <= set(doc["components"]["schemas"])
    body = doc["components"]["schemas"]["RequestIn"]
    assert body["required"] == ["brand"]
    assert body["properties"]["n"]["minimum"] == 1 and body["properties"]["n"]["maximum"] == 4
    assert body["properties"]["preference"]["maxLength"] == 1000
    created = doc["paths"]["/api/v1/stories/{slug}/requests"]["post"]
    assert "202" in created["responses"] and "409" in created["responses"]
    story = doc["components"]["schemas"]["StoryOut"]["properties"]
    assert {"slug", "categories", "risk_tier", "url"} <= set(story)


def test_the_docs_page_is_served(db):
    response = Client().get("/api/v1/docs")
    assert response.status_code == 200
    assert b"openapi.json" in response.content
