"""POST /v1/changes between two generated quarters: equal to the engine over the two releases'
files for every person and program; statuses and reasons; disclosure; filters; errors; the
audit records and receipts of every chunk."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app import db
from app.config import Settings
from app.services import changes, receipts
from app.services.audit import AuditWriter, running
from app.services.audit.records import nik_subject, subject_hash
from app.services.lookup import Caller
from tests.changes import expected
from tests.changes.conftest import by_nik, post_changes, split
from tests.helpers import CHANGES_FROM, CHANGES_TO, imported_release
from tests.support import MakeClient

pytestmark = pytest.mark.slow

Sides = tuple[dict[str, expected.Side], dict[str, expected.Side]]


@pytest.fixture(scope="module")
async def key(make_client: MakeClient) -> str:
    return await make_client(bulk=True)


def test_the_generator_makes_movers_entrants_and_leavers(sides: Sides) -> None:
    before, after = sides
    assert before.keys() - after.keys(), "nobody left the registry"
    assert after.keys() - before.keys(), "nobody entered the registry"
    moved = [
        n
        for n in before.keys() & after.keys()
        if before[n].family["kode_wilayah"] != after[n].family["kode_wilayah"]
    ]
    assert moved, "nobody moved"


async def test_the_list_equals_the_engine_over_both_releases_files(
    http: httpx.AsyncClient, key: str, full_list: dict[str, dict[str, Any]]
) -> None:
    lines, summary = split(await post_changes(http, key))
    got = by_nik(lines)
    assert got.keys() == full_list.keys()
    for nik, line in full_list.items():
        assert got[nik] == line, nik
    assert summary["listed"] == len(full_list)
    assert summary["programs"] == expected.counts(full_list.values())
    statuses = [line["status"] for line in full_list.values()]
    assert summary["status"] == {s: statuses.count(s) for s in ("stayed", "entered", "left")}
    # The per-province counts add up to the per-program ones.
    total: dict[str, dict[str, int]] = {}
    for per_program in summary["provinces"].values():
        for program, kinds in per_program.items():
            for kind, n in kinds.items():
                total.setdefault(program, dict.fromkeys(kinds, 0))[kind] += n
    assert total == summary["programs"]
    assert summary["from"]["snapshot"]["id"] == CHANGES_FROM
    assert summary["to"]["snapshot"]["id"] == CHANGES_TO


async def test_a_leaver_and_an_entrant_are_listed_with_status_and_reason(
    http: httpx.AsyncClient, key: str, sides: Sides
) -> None:
    before, after = sides
    got = by_nik(split(await post_changes(http, key))[0])
    # An eligible person who left the registry lost every program they had, and vice versa.
    leaver = next(n for n in before.keys() - after.keys() if before[n].decisions["PBI_JK"][0])
    entrant = next(n for n in after.keys() - before.keys() if after[n].decisions["PBI_JK"][0])
    assert got[leaver]["status"] == "left"
    assert {"program": "PBI_JK", "change": "lost", "reasons": ["left_registry"]} in got[leaver][
        "changes"
    ]
    assert got[leaver]["family"]["to"] is None and got[leaver]["decile"]["to"] is None
    assert got[entrant]["status"] == "entered"
    assert {"program": "PBI_JK", "change": "gained", "reasons": ["entered_registry"]} in got[
        entrant
    ]["changes"]
    assert got[entrant]["family"]["from"] is None
    # Someone who stayed and lost PBI JK names the criterion that flipped.
    stayed = [
        line
        for line in got.values()
        if line["status"] == "stayed"
        and any(c["program"] == "PBI_JK" and c["change"] == "lost" for c in line["changes"])
    ]
    assert stayed
    for line in stayed:
        reasons = next(c["reasons"] for c in line["changes"] if c["program"] == "PBI_JK")
        assert reasons and set(reasons) <= {"decile_in_range", "not_excluded"}


async def test_disclosure_holds_on_the_change_list(
    http: httpx.AsyncClient, make_client: MakeClient, full_list: dict[str, dict[str, Any]]
) -> None:
    limited = await make_client(
        bulk=True, fields=["decision"], programs=["PBI_JK", "SEKOLAH_RAKYAT"]
    )
    lines, summary = split(await post_changes(http, limited))
    got = by_nik(lines)
    want = expected.narrowed(full_list, programs={"PBI_JK", "SEKOLAH_RAKYAT"}, groups=())
    assert got == want
    assert all("decile" not in line and "family" not in line for line in got.values())
    assert set(summary["programs"]) <= {"PBI_JK", "SEKOLAH_RAKYAT"}
    # decile without membership: the decile, no family.
    decile_only = await make_client(bulk=True, fields=["decision", "decile"])
    got = by_nik(split(await post_changes(http, decile_only))[0])
    assert got == expected.narrowed(full_list, groups=("decile",))
    # An ungranted program asked by name is refused.
    r = await post_changes(http, limited, programs=["PKH"])
    assert r.status_code == 403 and r.json()["program"] == "PKH"


async def test_filters_select_programs_kinds_and_regions(
    http: httpx.AsyncClient, key: str, full_list: dict[str, dict[str, Any]], sides: Sides
) -> None:
    cases: list[dict[str, Any]] = [
        {"programs": ["PBI_JK"]},
        {"kinds": ["lost"]},
        {"kinds": ["gained"], "programs": ["PKH", "BPNT"]},
        {"kinds": ["benefit_changed", "level_changed"]},
    ]
    # A province and a regency where someone gained something (in either release).
    region = next(
        line["family"]
        for line in full_list.values()
        if any(c["change"] == "gained" for c in line["changes"])
    )
    code = (region["to"] or region["from"])["kode_wilayah"]
    cases += [{"kode_wilayah": code[:2]}, {"kode_wilayah": code[:4], "kinds": ["gained"]}]
    for case in cases:
        got = by_nik(split(await post_changes(http, key, **case))[0])
        want = expected.narrowed(
            full_list,
            programs=case.get("programs"),
            kinds=case.get("kinds"),
            prefix=case.get("kode_wilayah"),
        )
        assert got == want, case
        assert got or case.get("kinds") == ["benefit_changed", "level_changed"], case
    benefit = by_nik(split(await post_changes(http, key, kinds=["benefit_changed"]))[0])
    assert benefit, "no PKH benefit changed between the quarters"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"from": "2019-01-01"}, 404, "from"),
        ({"to": "2019-04-01"}, 404, "to"),
        ({"to": CHANGES_FROM}, 422, "to"),
        ({"programs": ["PKHX"]}, 422, "programs"),
        ({"kinds": ["vanished"]}, 422, "kinds"),
        ({"kinds": []}, 422, "kinds"),
        ({"kode_wilayah": "63a"}, 422, "kode_wilayah"),
        ({"kode_wilayah": "6"}, 422, "kode_wilayah"),
        ({"from": "last quarter"}, 422, "from"),
        ({"rule_set": "no-such-rules"}, 404, None),
        ({"nik": "3201014501900001"}, 422, "nik"),
    ],
)
async def test_bad_requests_are_4xx_naming_the_field(
    http: httpx.AsyncClient,
    key: str,
    quarters: tuple[Path, Path],
    body: dict[str, Any],
    status: int,
    field: str | None,
) -> None:
    r = await post_changes(http, key, **body)
    assert r.status_code == status, r.text
    problem = r.json()
    assert r.headers["content-type"].startswith("application/problem+json")
    if field is not None:
        assert problem["field"].split("[")[0] == field, problem  # programs[0]: the item
    if status == 404 and field is not None:
        assert body[field] in problem["detail"]
    assert "3201014501900001" not in r.text


async def test_the_bulk_grant_and_a_purpose_are_needed(
    http: httpx.AsyncClient, make_client: MakeClient, key: str, quarters: tuple[Path, Path]
) -> None:
    no_bulk = await make_client()
    r = await post_changes(http, no_bulk)
    assert r.status_code == 403 and r.json()["code"] == "bulk_not_granted"
    r = await post_changes(http, key, purpose="marketing")
    assert r.status_code == 403 and r.json()["code"] == "purpose_required"
    r = await http.post("/v1/changes", json={"from": CHANGES_FROM, "to": CHANGES_TO})
    assert r.status_code == 401


async def test_decisions_not_stored_are_409_naming_the_command(
    http: httpx.AsyncClient,
    key: str,
    engine: AsyncEngine,
    settings: Settings,
    quarters: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    release = "2025-08-23"  # imported, its decisions never stored
    async with imported_release(settings, engine, tmp_path / release, release, 200, 5):
        r = await post_changes(http, key, to=release)
        assert r.status_code == 409, r.text
        problem = r.json()
        assert problem["code"] == "decisions_not_materialized"
        assert problem["field"] == "to" and problem["snapshot"] == release
        assert "tepat eligibility materialize" in problem["detail"]


async def test_each_chunk_is_audited_and_its_receipt_verifies(
    http: httpx.AsyncClient,
    engine: AsyncEngine,
    settings: Settings,
    full_list: dict[str, dict[str, Any]],
    quarters: tuple[Path, Path],
) -> None:
    # Small chunks, so the list spans several: the service as the route runs it.
    from app.auth.principal import FIELD_GROUPS, PROGRAMS, Principal

    principal = Principal(
        client_id="changes-test",
        name="changes test",
        programs=frozenset(PROGRAMS),
        field_groups=frozenset(FIELD_GROUPS),
        purposes=frozenset({"p"}),
        expires_at=None,
    )
    caller = Caller(principal, "p", "changes-audit-test")
    hmac_key = settings.audit_hmac_key.get_secret_value().encode()
    keyring = receipts.open_keyring(settings)
    asked = changes.Asked(CHANGES_FROM, CHANGES_TO)

    import contextlib

    @contextlib.asynccontextmanager
    async def connect() -> Any:
        conn = await db.connect_raw(settings)
        try:
            yield conn
        finally:
            await conn.close()

    async with running(AuditWriter(engine, hmac_key, keyring=keyring)) as audit:
        listed = await changes.open_changes(engine, audit, caller, asked, connect, chunk=100)
        parts = [part async for part in listed.stream()]
    *chunks, last = parts
    summary = orjson.loads(last)["summary"]
    assert summary["listed"] == len(full_list)
    assert len(chunks) == len(summary["audit_ids"]) == math.ceil(len(full_list) / 100)
    jwks = keyring.document
    # Each record names both sides, so an audit of the list can be reproduced from it alone.
    sides = (
        f"{CHANGES_FROM}..{CHANGES_TO}",
        f"{summary['from']['rule_set']['id']}..{summary['to']['rule_set']['id']}",
    )
    async with engine.connect() as conn:
        for chunk, audit_id, token in zip(
            chunks, summary["audit_ids"], summary["receipts"], strict=True
        ):
            claims = receipts.verify(token, chunk, jwks)
            assert claims["audit_id"] == audit_id
            assert claims["snapshot"]["id"] == CHANGES_TO
            row = (
                await conn.execute(
                    text(
                        "SELECT operation, subject_hashes, subject_count, found_count, "
                        "snapshot_id, rule_set_id FROM audit_log WHERE id = :id"
                    ),
                    {"id": audit_id},
                )
            ).one()
            niks = [orjson.loads(line)["nik"] for line in chunk.splitlines()]
            assert row.operation == "changes"
            assert (row.snapshot_id, row.rule_set_id) == sides
            assert row.subject_count == row.found_count == len(niks)
            assert set(row.subject_hashes) == {subject_hash(hmac_key, nik_subject(n)) for n in niks}
    with pytest.raises(receipts.ReceiptInvalid):
        receipts.verify(summary["receipts"][0], chunks[1], jwks)


async def test_the_api_summary_names_receipts_that_verify(
    http: httpx.AsyncClient, key: str, quarters: tuple[Path, Path]
) -> None:
    lines, summary = split(await post_changes(http, key))
    jwks = (await http.get("/.well-known/jwks.json")).json()
    chunks = [b"".join(lines[i : i + changes.CHUNK]) for i in range(0, len(lines), changes.CHUNK)]
    assert len(chunks) == len(summary["receipts"]) == len(summary["audit_ids"])
    for chunk, token in zip(chunks, summary["receipts"], strict=True):
        receipts.verify(token, chunk, jwks)
