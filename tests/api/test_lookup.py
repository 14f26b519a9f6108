"""Lookups end to end through the app: answers checked against the engine, pinned, audited."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.eligibility import (
    SCHOOL_LEVEL_NAMES,
    Family,
    Member,
    evaluate_family,
    load_rule_set,
    shipped_rule_sets,
)
from tests.support import RELEASE, auth

LEVELS = SCHOOL_LEVEL_NAMES
ReleaseData = tuple[dict[str, dict[str, str]], dict[str, list[dict[str, str]]]]


def _read_release(
    folder: Path,
) -> tuple[dict[str, dict[str, str]], dict[str, list[dict[str, str]]]]:
    with (folder / "keluarga.csv").open() as f:
        families = {r["no_kk"]: r for r in csv.DictReader(f)}
    members: dict[str, list[dict[str, str]]] = {}
    with (folder / "anggota.csv").open() as f:
        for r in csv.DictReader(f):
            members.setdefault(r["no_kk"], []).append(r)
    return families, members


def _flag(v: str) -> bool | None:
    return None if v == "" else v == "1"


def _int(v: str) -> int | None:
    return None if v == "" else int(v)


def _engine_family(fam: dict[str, str], people: list[dict[str, str]]) -> Family:
    import datetime as dt

    return Family(
        no_kk=fam["no_kk"],
        decile=_int(fam["desil"]),
        asn_tni_polri=fam["asn_tni_polri"] == "1",
        pkh_recipient=_flag(fam.get("penerima_pkh", "")),
        bpnt_recipient=_flag(fam.get("penerima_bpnt", "")),
        members=tuple(
            Member(
                nik=p["nik"],
                relationship=int(p["hubungan_kk"]),
                sex=int(p["jenis_kelamin"]),
                birth_date=dt.date.fromisoformat(p["tanggal_lahir"]),
                pregnant=_flag(p["hamil"]),
                school_status=_int(p["status_sekolah"]),
                school_level=p["jenjang_sekolah"] or None,
                disability=_int(p["disabilitas"]),
                pbi_recipient=_flag(p["penerima_pbi"]),
            )
            for p in people
        ),
    )


@pytest.fixture(scope="module")
def release_data(
    published: Path,
) -> tuple[dict[str, dict[str, str]], dict[str, list[dict[str, str]]]]:
    return _read_release(published)


async def test_people_lookup_matches_the_engine_on_the_source_files(
    http: httpx.AsyncClient, full_key: str, published: Path, release_data: ReleaseData
) -> None:
    import datetime as dt

    families, members = release_data
    rule_set = load_rule_set(shipped_rule_sets()[0])
    sample = [m for kk in list(members)[:300] for m in members[kk]][:1000]
    niks = [m["nik"] for m in sample]
    missing = "3201010101990001"  # a valid NIK that is not in the release
    asked = [*niks[:500], missing, *niks[500:999]]
    r = await http.post(
        "/v1/people/lookup", json={"niks": asked, "explain": True}, headers=auth(full_key)
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["meta"]["snapshot"]["id"] == RELEASE
    assert body["meta"]["rule_set"] == {"id": rule_set.id, "checksum": rule_set.checksum}
    assert body["meta"]["evaluation_date"] == RELEASE
    assert [x["nik"] for x in body["results"]] == asked  # request order, not-found in place
    assert body["results"][500] == {"nik": missing, "found": False}
    by_nik = {m["nik"]: m for m in sample}
    for result in body["results"]:
        if not result["found"]:
            continue
        person = by_nik[result["nik"]]
        fam = families[person["no_kk"]]
        expected = evaluate_family(
            _engine_family(fam, members[person["no_kk"]]), rule_set, dt.date.fromisoformat(RELEASE)
        ).for_person(person["nik"])
        assert result["decile"] == _int(fam["desil"])
        assert result["family"] == {
            "no_kk": person["no_kk"],
            "relationship": int(person["hubungan_kk"]),
            "kode_wilayah": fam["kode_wilayah"],
        }
        assert result["decisions"] == [d.to_dict(True) for d in expected]


async def test_families_lookup_lists_members_and_decisions(
    http: httpx.AsyncClient, full_key: str, release_data: ReleaseData
) -> None:
    _, members = release_data
    kks = list(members)[:50]
    r = await http.post("/v1/families/lookup", json={"no_kks": kks}, headers=auth(full_key))
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["no_kk"] for x in results] == kks
    for result in results:
        expected = {m["nik"]: int(m["hubungan_kk"]) for m in members[result["no_kk"]]}
        assert {m["nik"]: m["relationship"] for m in result["members"]} == expected
        assert [d["program"] for d in result["decisions"]] == ["PKH", "BPNT"]
        for m in result["members"]:
            assert [d["program"] for d in m["decisions"]] == ["PBI_JK", "SEKOLAH_RAKYAT"]


async def test_programs_filter_and_pinning(
    http: httpx.AsyncClient, full_key: str, release_data: ReleaseData
) -> None:
    _, members = release_data
    nik = next(iter(members.values()))[0]["nik"]
    r = await http.post(
        "/v1/people/lookup",
        json={
            "niks": [nik],
            "programs": ["PBI_JK"],
            "snapshot": RELEASE,
            "rule_set": "kepmensos-79-2025",
        },
        headers=auth(full_key),
    )
    assert r.status_code == 200, r.text
    decisions = r.json()["results"][0]["decisions"]
    assert [d["program"] for d in decisions] == ["PBI_JK"]
    assert "criteria" not in decisions[0]  # only with explain


async def test_every_answer_writes_one_audit_record_first(
    http: httpx.AsyncClient, full_key: str, engine: AsyncEngine, release_data: ReleaseData
) -> None:
    _, members = release_data
    niks = [m["nik"] for m in list(members.values())[3]]
    r = await http.post("/v1/people/lookup", json={"niks": niks}, headers=auth(full_key))
    assert r.status_code == 200
    audit_id = r.json()["meta"]["audit_id"]
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT operation, purpose, snapshot_id, subject_count, found_count, response_digest "
                    "FROM audit_log WHERE id = :id"
                ),
                {"id": audit_id},
            )
        ).one()
    assert row.operation == "people.lookup"
    assert row.purpose == "pbi-verification"
    assert row.snapshot_id == RELEASE
    assert row.found_count == len(niks)
    assert row.subject_count >= len(niks)
    assert bytes(row.response_digest) == hashlib.sha256(r.content).digest()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/snapshots", 200),
        ("/v1/programs", 200),
        ("/v1/rule-sets", 200),
        ("/v1/rule-sets/kepmensos-79-2025", 200),
        (f"/v1/snapshots/{RELEASE}", 200),
        ("/v1/snapshots/1999-01-01", 404),
        ("/v1/rule-sets/nope", 404),
        ("/healthz", 200),
        ("/readyz", 200),
    ],
)
async def test_metadata_endpoints(http: httpx.AsyncClient, path: str, expected: int) -> None:
    r = await http.get(path)
    assert r.status_code == expected, r.text
    if expected == 404:
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 404
