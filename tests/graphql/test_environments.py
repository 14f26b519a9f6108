"""Dev and production faces: the offline IDE, introspection, masked errors, the committed SDL."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.contracts import ROOT
from app.graphql.router import mount
from app.graphql.schema import sdl
from app.services import programs as programs_svc
from tests.graphql.conftest import codes, gql

INTROSPECTION = "{ __schema { queryType { name } } }"


@pytest.fixture(scope="module")
async def production(app: FastAPI, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The GraphQL face as production mounts it, over the test app's database and audit."""
    prod_settings = settings.model_copy(update={"env": "production"})
    prod = FastAPI()
    prod.state.tepat = app.state.tepat
    mount(prod, prod_settings)
    transport = httpx.ASGITransport(app=prod)
    async with httpx.AsyncClient(transport=transport, base_url="http://tepat.test") as client:
        yield client


async def test_ide_works_offline_in_dev(http: httpx.AsyncClient) -> None:
    r = await http.get("/graphql", headers={"Accept": "text/html"})
    assert r.status_code == 200
    page = r.text
    assert "https://" not in page and "http://" not in page  # no CDN
    assets = re.findall(r'(?:src|href)="(/graphql/static/[^"]+)"', page)
    assert len(assets) == 4
    for asset in assets:
        served = await http.get(asset)
        assert served.status_code == 200 and len(served.content) > 1000, asset
    assert "updateURL" not in page and "history.replaceState" not in page  # no NIK in a URL


async def test_introspection_on_in_dev_off_in_production(
    http: httpx.AsyncClient, production: httpx.AsyncClient
) -> None:
    r = await gql(http, INTROSPECTION)
    assert r.json()["data"]["__schema"]["queryType"]["name"] == "Query"
    r = await gql(production, INTROSPECTION)
    assert r.json()["data"] is None
    assert set(codes(r.json())) == {"graphql_validation_failed"}
    assert "introspection" in r.json()["errors"][0]["message"].lower()


async def test_ide_and_its_assets_off_in_production(production: httpx.AsyncClient) -> None:
    r = await production.get("/graphql", headers={"Accept": "text/html"})
    assert r.status_code == 404
    assert (await production.get("/graphql/static/graphiql.min.js")).status_code == 404


async def test_no_field_suggestions_in_production(production: httpx.AsyncClient) -> None:
    r = await gql(production, "{ program { id } }")
    assert "Did you mean" not in r.text


async def test_unexpected_errors_masked_in_production_domain_codes_kept(
    http: httpx.AsyncClient, production: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(programs_svc, "PROGRAMS", [object()])
    r = await gql(production, "{ programs { id } }")
    error = r.json()["errors"][0]
    assert r.status_code == 500
    assert error["message"] == "internal error"
    assert error["extensions"]["code"] == "internal"
    assert "AttributeError" not in r.text
    r = await gql(http, "{ programs { id } }")  # dev says what broke
    assert "AttributeError" in r.json()["errors"][0]["message"]
    monkeypatch.undo()
    r = await gql(production, '{ snapshot(id: "1999-01-01") { id } }')
    assert codes(r.json()) == ["snapshot_not_found"]
    assert "1999-01-01" in r.json()["errors"][0]["message"]


def test_committed_schema_is_the_code() -> None:
    assert (ROOT / "schema.graphql").read_text() == sdl()
