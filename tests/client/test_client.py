"""The integrators' client (clients/python) against a real server process: lookups, errors,
receipts of answers and of bulk chunks, checked as an integrator would check them."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from tepat_client import (
    ReceiptInvalid,
    Tepat,
    TepatError,
    verify_chunks,
    verify_file,
    verify_receipt,
)

from app.config import Settings
from tests.changes import expected
from tests.helpers import CHANGES_FROM, CHANGES_TO, two_quarters
from tests.server import Server, running_server
from tests.support import PURPOSE, MakeClient

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(
    database_url: str, published: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("client") / "server.log"
    with running_server(database_url, log) as s:
        yield s


@pytest.fixture(scope="module")
def people(published: Path) -> list[dict[str, str]]:
    with (published / "anggota.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
async def key(make_client: MakeClient) -> str:
    return await make_client(bulk=True)


@pytest.fixture
def tepat(server: Server, key: str) -> Iterator[Tepat]:
    with Tepat(server.base_url, api_key=key, purpose=PURPOSE) as t:
        yield t


def test_people_lookup_answers_in_order_with_a_receipt_that_verifies(
    tepat: Tepat, people: list[dict[str, str]]
) -> None:
    niks = [p["nik"] for p in people[:5]]
    answer = tepat.people(niks, programs=["PBI_JK"])
    assert [r["nik"] for r in answer.results] == niks
    assert all(r["found"] for r in answer.results)
    assert {d["program"] for r in answer.results for d in r["decisions"]} == {"PBI_JK"}
    claims = tepat.verify(answer)
    assert claims["audit_id"] == answer.meta["audit_id"]
    assert claims["snapshot"]["id"] == answer.meta["snapshot"]["id"]
    # One changed byte of the body and the receipt no longer vouches for it.
    tampered = dataclasses.replace(
        answer, body=answer.body.replace(b'"found":true', b'"found":false', 1)
    )
    with pytest.raises(ReceiptInvalid, match="body does not match"):
        tepat.verify(tampered)
    # Offline, with a saved JWKS: the same check, no call to the service.
    assert verify_receipt(answer.receipt or "", answer.body, tepat.jwks()) == claims


def test_families_lookup(tepat: Tepat, people: list[dict[str, str]]) -> None:
    no_kk = people[0]["no_kk"]
    answer = tepat.families([no_kk])
    assert answer.results[0]["no_kk"] == no_kk
    assert answer.results[0]["found"] is True
    assert tepat.verify(answer)["audit_id"] == answer.meta["audit_id"]


def test_errors_raise_with_the_servers_code_and_status(
    server: Server, key: str, tepat: Tepat
) -> None:
    with pytest.raises(TepatError) as bad:
        tepat.people(["12345"])
    assert bad.value.status == 422
    assert "nik" in json.dumps(bad.value.problem).lower()
    with (
        Tepat(server.base_url, api_key=key, purpose="not-a-granted-purpose") as other,
        pytest.raises(TepatError) as refused,
    ):
        other.people(["3201011201990001"])
    assert refused.value.status == 403
    assert refused.value.code
    with (
        Tepat(server.base_url, api_key="tp_wrong", purpose=PURPOSE) as anonymous,
        pytest.raises(TepatError) as unknown,
    ):
        anonymous.people(["3201011201990001"])
    assert unknown.value.status == 401


def test_metadata(tepat: Tepat) -> None:
    snapshots = tepat.snapshots()
    assert any(s["id"] == "2026-01-23" for s in snapshots)
    assert tepat.programs()
    assert tepat.rule_sets()


def test_bulk_chunks_verify_against_the_summarys_receipts(
    server: Server, key: str, tepat: Tepat, people: list[dict[str, str]]
) -> None:
    """2,500 lines (3 chunks) with one bad line: every chunk verifies against its receipt, and
    a changed line breaks its chunk's check."""
    niks = [p["nik"] for p in people[:2500]]
    niks[1234] = "not a nik"
    body = "".join(json.dumps({"nik": n}) + "\n" for n in niks).encode()
    headers = {"Authorization": f"Bearer {key}", "X-Purpose": PURPOSE}
    r = httpx.post(
        f"{server.base_url}/v1/bulk/eligibility", content=body, headers=headers, timeout=60
    )
    assert r.status_code == 200, r.text
    lines = r.content.splitlines(keepends=True)
    summary = json.loads(lines[-1])["summary"]
    answers = lines[:-1]
    assert len(answers) == 2500
    checked = verify_chunks(answers, summary["receipts"], tepat.jwks())
    assert [c["audit_id"] for c in checked] == summary["audit_ids"]
    answers[2001] = answers[2001].replace(b'"found":true', b'"found":false')
    with pytest.raises(ReceiptInvalid):
        verify_chunks(answers, summary["receipts"], tepat.jwks())


@pytest.fixture(scope="module")
def worker_server(
    database_url: str, published: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server process that runs the bulk-job worker, as `tepat serve` does (change list
    jobs of 50 people a chunk, so the small generated lists span several)."""
    log = tmp_path_factory.mktemp("client-jobs") / "server.log"
    env = {"TEPAT_JOBS_WORKER": "true", "TEPAT_CHANGES_JOB_CHUNK": "50"}
    with running_server(database_url, log, env=env) as s:
        yield s


def test_a_bulk_job_runs_downloads_resumes_and_verifies(
    worker_server: Server, key: str, people: list[dict[str, str]], tmp_path: Path
) -> None:
    niks = [p["nik"] for p in people[:2100]] + ["9999999999999999"]
    source = tmp_path / "niks.csv"
    source.write_text("nik\n" + "\n".join(niks) + "\n")
    with Tepat(worker_server.base_url, api_key=key, purpose=PURPOSE) as t:
        job = t.jobs.submit(source, programs=["PBI_JK"])
        seen: list[str] = []
        done = t.jobs.wait(job["id"], progress=lambda j: seen.append(j["status"]), poll=0.2)
        assert done["status"] == "succeeded"
        assert seen[-1] == "succeeded"
        out = t.jobs.download(job["id"], tmp_path / "answers.ndjson")
        whole = out.read_bytes()
        lines = whole.splitlines()
        assert len(lines) == len(niks) + 1
        assert [json.loads(x)["nik"] for x in lines[:-2]] == niks[:-1]
        assert "error" in json.loads(lines[-2])  # the malformed NIK: an error line, in place
        claims = verify_file(out, t.jwks())
        assert len(claims) == 3  # 2,101 lines: chunks of 1,000, 1,000 and 101
        # A cut download: the file keeps its first bytes, the next call fetches only the rest.
        out.write_bytes(whole[: len(whole) // 3])
        t.jobs.download(job["id"], out)
        assert out.read_bytes() == whole
        t.jobs.cancel(job["id"])  # a finished job: deleted with its answers
        with pytest.raises(TepatError) as gone:
            t.jobs.status(job["id"])
        assert gone.value.status == 404


def test_a_million_line_job_through_the_client(
    worker_server: Server, key: str, people: list[dict[str, str]], tmp_path: Path
) -> None:
    """The issue's integrator: 1 M NIKs uploaded with httpx (no full duplex needed), every
    line answered once, in order, every chunk's receipt valid."""
    n = 1_000_000
    niks = [p["nik"] for p in people]
    source = tmp_path / "million.ndjson"
    with source.open("w") as f:
        for i in range(n):
            f.write('{"nik":"' + niks[i % len(niks)] + '"}\n')
    with Tepat(worker_server.base_url, api_key=key, purpose=PURPOSE, timeout=120) as t:
        done = t.jobs.run(source, tmp_path / "million.out", programs=["PBI_JK"], poll=0.5)
        assert done["progress"]["answered"] == n
        out = tmp_path / "million.out"
        count = 0
        with out.open("rb") as f:
            for i, line in enumerate(f):
                if i < n:
                    want = f'{{"line":{i + 1},"nik":"{niks[i % len(niks)]}"'.encode()
                    assert line.startswith(want), i
                count += 1
        assert count == n + 1
        claims = verify_file(out, t.jwks())
        assert len(claims) == n // 1000


@pytest.fixture(scope="module")
async def quarters(
    settings: Settings, engine: AsyncEngine, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("client-changes")
    async with two_quarters(settings, engine, root, 1500, 83) as q:
        yield q


def test_changes_streams_the_list_between_two_releases(
    tepat: Tepat, quarters: tuple[Path, Path]
) -> None:
    want = expected.narrowed(
        expected.change_list(*(expected.release_people(q) for q in quarters)),
        programs={"PBI_JK"},
    )
    *lines, last = tepat.changes(CHANGES_FROM, CHANGES_TO, programs=["PBI_JK"])
    assert {line["nik"]: line for line in lines} == want
    summary = last["summary"]
    assert summary["listed"] == len(want) > 0
    assert summary["to"]["snapshot"]["id"] == CHANGES_TO
    assert len(summary["receipts"]) == len(summary["audit_ids"]) >= 1
    # Filters travel: only the lost, in one province.
    province = next(iter(want.values()))["family"]
    code = (province["to"] or province["from"])["kode_wilayah"][:2]
    *lines, _ = tepat.changes(CHANGES_FROM, CHANGES_TO, kinds=["lost"], kode_wilayah=code)
    assert all(c["change"] == "lost" for line in lines for c in line["changes"])
    with pytest.raises(TepatError) as unknown:
        list(tepat.changes("2019-01-01", CHANGES_TO))
    assert unknown.value.status == 404 and unknown.value.problem["field"] == "from"


def test_a_change_list_job_through_the_client(
    worker_server: Server, key: str, quarters: tuple[Path, Path], tmp_path: Path
) -> None:
    """The list as a job: submitted, waited on with progress, downloaded (resumed after a
    cut), equal to the streamed list; its CSV is the mutation list."""
    with Tepat(worker_server.base_url, api_key=key, purpose=PURPOSE) as t:
        *streamed, streamed_last = t.changes(CHANGES_FROM, CHANGES_TO)
        seen: list[Mapping[str, Any]] = []
        out = tmp_path / "changes.ndjson"
        done = t.jobs.run_changes(CHANGES_FROM, CHANGES_TO, out, progress=seen.append, poll=0.2)
        assert done["kind"] == "changes" and done["status"] == "succeeded"
        assert seen[-1]["status"] == "succeeded"
        whole = out.read_bytes()
        *lines, last = [json.loads(x) for x in whole.splitlines()]
        assert {x["nik"]: x for x in lines} == {x["nik"]: x for x in streamed}
        assert [x["nik"] for x in lines] == sorted(x["nik"] for x in streamed)
        ignored = ("audit_ids", "receipts", "request_id")
        assert {k: v for k, v in last["summary"].items() if k not in ignored} == {
            k: v for k, v in streamed_last["summary"].items() if k not in ignored
        }
        assert done["request"]["chunk"] == 50
        claims = verify_file(out, t.jwks(), chunk=50)  # every chunk against its receipt
        assert len(claims) == len(last["summary"]["audit_ids"]) == -(-len(lines) // 50) > 1
        out.write_bytes(whole[: len(whole) // 2])  # a cut download: resumed
        t.jobs.download(done["id"], out)
        assert out.read_bytes() == whole

        job = t.jobs.submit_changes(CHANGES_FROM, CHANGES_TO, programs=["PBI_JK"], kinds=["lost"])
        t.jobs.wait(job["id"], poll=0.2)
        rows = t.jobs.download(job["id"], tmp_path / "lost.csv", media_type="text/csv")
        header, *body = rows.read_text().splitlines()
        assert header == "nik,program,change,reasons,effective_date"
        want = {
            (x["nik"], c["change"])
            for x in lines
            for c in x["changes"]
            if c["program"] == "PBI_JK" and c["change"] == "lost"
        }
        assert {(r.split(",")[0], r.split(",")[2]) for r in body} == want and want
        with pytest.raises(TepatError) as unknown:
            t.jobs.submit_changes("2019-01-01", CHANGES_TO)
        assert unknown.value.status == 404 and unknown.value.problem["field"] == "from"
