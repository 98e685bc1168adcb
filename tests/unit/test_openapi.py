"""The OpenAPI document declares the bearer scheme; Swagger UI (CDN-loaded) is off unless asked."""

from __future__ import annotations

from pathlib import Path

from test_api import running


async def test_bearer_scheme_declared_and_docs_off_by_default(tmp_path: Path) -> None:
    async with running(tmp_path) as d:
        assert (await d.http.get("/api/docs")).status_code == 404
        doc = (await d.http.get("/openapi.json")).json()
        assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert doc["security"] == [{"bearer": []}]
        for path in ("/api/v2/alerts", "/api/v2/silences", "/api/v2/silence/{silence_id}",
                     "/api/v1/incidents/{incident_id}"):
            assert path in doc["paths"], path
        # The Alertmanager routes are typed: clients can generate code from the document.
        ok = doc["paths"]["/api/v2/alerts"]["get"]["responses"]["200"]["content"]
        assert ok["application/json"]["schema"]["items"]["$ref"].endswith("/GettableAlert")
        assert {"GettableAlert", "GettableSilence", "AlertGroup"} <= set(
            doc["components"]["schemas"]
        )


async def test_docs_when_asked(tmp_path: Path) -> None:
    async with running(tmp_path, {"http": {"api_docs": True}}) as d:
        page = await d.http.get("/api/docs")
        assert page.status_code == 200
        assert "swagger" in page.text.lower()
