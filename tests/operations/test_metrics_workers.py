"""`tepat serve --workers 2`: whichever process answers a scrape, the figures are the server's."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import httpx
import pytest

from tests.server import running_server
from tests.support import MakeClient, auth

pytestmark = pytest.mark.slow
ROUTE = 'tepat_http_requests_total{method="POST",route="/v1/people/lookup",status="200"}'


def _count(body: str) -> float:
    m = re.search(re.escape(ROUTE) + r" (\S+)", body)
    return float(m.group(1)) if m else 0.0


async def test_two_workers_add_up(
    database_url: str, published: Path, make_client: MakeClient, tmp_path: Path
) -> None:
    key = await make_client()
    with (published / "anggota.csv").open() as f:
        niks = [r["nik"] for r in csv.DictReader(f)][:40]
    env = {"TEPAT_DATA_DIR": str(tmp_path / "data"), "TEPAT_JOBS_WORKER": "false"}
    with running_server(database_url, tmp_path / "server.log", env, workers=2) as server:
        processes = set()  # a request id's prefix names the process that answered
        for nik in niks:
            # A connection each: the kernel spreads them over both processes.
            with httpx.Client(base_url=server.base_url, timeout=10) as http:
                r = http.post("/v1/people/lookup", json={"niks": [nik]}, headers=auth(key))
                assert r.status_code == 200
                processes.add(r.headers["x-request-id"].split("-")[0])
        assert (tmp_path / "data" / "metrics").is_dir()  # the processes' shared folder
        seen = []
        for _ in range(6):
            with httpx.Client(base_url=server.base_url, timeout=10) as http:
                r = http.get("/metrics")
                assert r.status_code == 200
                seen.append(_count(r.text))
    assert len(processes) == 2  # both answered lookups, so the sums are what is tested
    assert seen == [40.0] * 6, (seen, server.log_text()[-2000:])
