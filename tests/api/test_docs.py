"""/docs works on a closed network: every asset it loads is served by the app itself."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.server import running_server


async def test_docs_reference_only_local_assets(http: httpx.AsyncClient) -> None:
    page = await http.get("/docs")
    assert page.status_code == 200
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
    refs += re.findall(r"""url:\s*["']([^"']+)["']""", page.text)
    assert refs, page.text[:500]
    for ref in refs:
        assert not ref.startswith(("http://", "https://", "//")), ref
        asset = await http.get(ref)
        assert asset.status_code == 200, ref
    spec = (await http.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"


def _render(url: str, tmp_path: Path) -> str:
    # Every host but the loopback resolves to nothing: a CDN asset would fail to load.
    return subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
         "--virtual-time-budget=10000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_docs_and_graphiql_render_in_headless_chromium_with_the_network_off(
    database_url: str, published: Path, tmp_path: Path
) -> None:
    with running_server(database_url, tmp_path / "server.log") as server:
        dom = _render(f"{server.base_url}/docs", tmp_path)
        ide = _render(f"{server.base_url}/graphql", tmp_path)
    # GraphiQL (vendored) mounted its editor without any CDN.
    assert "graphiql-container" in ide, ide[:2000]
    # Swagger UI rendered the operations from /openapi.json.
    assert "opblock" in dom, dom[:2000]
    assert "/v1/people/lookup" in dom
