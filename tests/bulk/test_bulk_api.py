"""POST /v1/bulk/eligibility in-process: lines in place, the summary, options, scopes, auth."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson

from app.errors import AuditUnavailable, RateLimited
from app.http import limits
from app.services.audit import AuditWriter, nik_subject
from tests.bulk.conftest import NDJSON, absent_nik, ndjson, parse, pieces, post_bulk
from tests.support import PURPOSE, RELEASE, MakeClient, auth


def _compact(result: dict[str, Any]) -> dict[str, Any]:
    for d in result.get("decisions", ()):
        d.pop("components", None)
    return result


async def _lookup(http: httpx.AsyncClient, key: str, niks: list[str], **extra: Any) -> list[Any]:
    r = await http.post("/v1/people/lookup", json={"niks": niks, **extra}, headers=auth(key))
    assert r.status_code == 200, r.text
    results: list[Any] = r.json()["results"]
    return results


async def test_one_line_per_input_line_in_place(
    http: httpx.AsyncClient, full_key: str, release_niks: list[str]
) -> None:
    a, b, c = release_niks[0], release_niks[1234], release_niks[3999]
    missing = absent_nik(1)
    body = ndjson(
        [
            {"nik": a},  # 1
            b,  # 2: a bare NIK
            "",  # 3: blank, skipped
            '{"nik": "3201014501900001"',  # 4: bad JSON
            {"id": c},  # 5: no nik
            {"nik": c[:15]},  # 6: 15 digits
            {"nik": c[:12] + "0000"},  # 7: serial 0000
            {"nik": missing},  # 8: valid, not in the release
            f'"{c}"',  # 9: a JSON string
            {"nik": a},  # 10: asked again
        ]
    )
    # Cut the body into 7-byte pieces: lines cross the pieces the server reads.
    r = await post_bulk(http, full_key, pieces(body, 7))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(NDJSON)
    lines = parse(r.content)
    *answers, last = lines
    assert [x["line"] for x in answers] == [1, 2, 4, 5, 6, 7, 8, 9, 10]
    expected = [_compact(x) for x in await _lookup(http, full_key, [a, b, missing, c, a])]
    by_line = {x["line"]: x for x in answers}
    for line, want in zip([1, 2, 8, 9, 10], expected, strict=True):
        got = dict(by_line[line])
        del got["line"]
        assert got == want
    assert by_line[8] == {"line": 8, "nik": missing, "found": False}
    assert by_line[1]["found"] is True
    assert "criteria" not in orjson.dumps(by_line[1]).decode()
    codes = {line: by_line[line]["error"]["code"] for line in (4, 5, 6, 7)}
    assert codes == {4: "malformed_json", 5: "nik_missing", 6: "nik_format", 7: "nik_serial"}
    assert by_line[6]["error"]["nik"] == c[:4] + "*" * 7 + c[11:15]
    assert c[:12] not in r.text.replace(c, "")  # the malformed NIKs are masked

    summary = last["summary"]
    assert summary["lines"] == 9
    assert (summary["found"], summary["not_found"], summary["errors"], summary["blank"]) == (
        4,
        1,
        4,
        1,
    )
    assert summary["snapshot"]["id"] == RELEASE
    assert summary["rule_set"]["id"]
    assert summary["evaluation_date"] == RELEASE
    assert summary["request_id"] == r.headers["x-request-id"]
    assert len(summary["audit_ids"]) == 1


async def test_several_chunks_keep_the_order(
    http: httpx.AsyncClient, full_key: str, release_niks: list[str]
) -> None:
    asked = [n if i % 3 else absent_nik(i) for i, n in enumerate(release_niks[:2500])]
    r = await post_bulk(http, full_key, pieces(ndjson(asked), 4096))
    *answers, last = parse(r.content)
    assert [x["nik"] for x in answers] == asked
    assert [x["line"] for x in answers] == list(range(1, 2501))
    assert all(x["found"] == (i % 3 != 0) for i, x in enumerate(answers))
    assert len(last["summary"]["audit_ids"]) == 3  # chunks of 1,000


async def test_an_empty_body_gives_only_the_summary(http: httpx.AsyncClient, full_key: str) -> None:
    r = await post_bulk(http, full_key, b"\n\n")
    (only,) = parse(r.content)
    assert only["summary"]["lines"] == 0
    assert only["summary"]["blank"] == 2
    assert only["summary"]["audit_ids"] == []


async def test_explain_gives_full_decisions(
    http: httpx.AsyncClient, full_key: str, release_niks: list[str]
) -> None:
    niks = release_niks[:50]
    r = await post_bulk(http, full_key, ndjson(niks), explain="true")
    answers = parse(r.content)[:-1]
    expected = await _lookup(http, full_key, niks, explain=True)
    assert [{k: v for k, v in x.items() if k != "line"} for x in answers] == expected
    assert all("criteria" in d for x in answers for d in x["decisions"])


async def test_programs_filter(
    http: httpx.AsyncClient, full_key: str, release_niks: list[str]
) -> None:
    body = ndjson(release_niks[:20])
    r = await post_bulk(http, full_key, body, programs="PBI_JK")
    answers = parse(r.content)[:-1]
    assert {d["program"] for x in answers for d in x["decisions"]} == {"PBI_JK"}
    r = await post_bulk(http, full_key, body, programs="SEKOLAH_RAKYAT,PKH")
    assert {d["program"] for x in parse(r.content)[:-1] for d in x["decisions"]} == {
        "PKH",
        "SEKOLAH_RAKYAT",
    }
    r = await post_bulk(http, full_key, body, programs=["BPNT", "PKH"])
    assert {d["program"] for x in parse(r.content)[:-1] for d in x["decisions"]} == {"PKH", "BPNT"}


async def test_field_groups_are_respected(
    http: httpx.AsyncClient, make_client: MakeClient, release_niks: list[str]
) -> None:
    body = ndjson(release_niks[:20])
    key = await make_client(programs=["PBI_JK"], fields=["decision"], bulk=True)
    answers = parse((await post_bulk(http, key, body)).content)[:-1]
    assert {k for x in answers for k in x} == {"line", "nik", "found", "decisions"}
    assert {d["program"] for x in answers for d in x["decisions"]} == {"PBI_JK"}

    key = await make_client(fields=["decile", "identity"], bulk=True)
    answers = parse((await post_bulk(http, key, body)).content)[:-1]
    assert {k for x in answers for k in x} == {"line", "nik", "found", "decile", "identity"}


async def _problem(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == code


async def test_refusals_are_problems_before_any_line(
    http: httpx.AsyncClient, full_key: str, make_client: MakeClient, release_niks: list[str]
) -> None:
    body = ndjson(release_niks[:5])
    r = await http.post("/v1/bulk/eligibility", content=body, headers={"Content-Type": NDJSON})
    await _problem(r, 401, "unauthenticated")
    r = await http.post(
        "/v1/bulk/eligibility", content=body, headers=auth("tepat_not-a-key", PURPOSE)
    )
    await _problem(r, 401, "unauthenticated")
    await _problem(
        await post_bulk(http, full_key, body, headers={"X-Purpose": "x"}), 403, "purpose_required"
    )
    expired = await make_client(expired=True)
    await _problem(await post_bulk(http, expired, body), 401, "unauthenticated")
    narrow = await make_client(programs=["PBI_JK"], bulk=True)
    await _problem(await post_bulk(http, narrow, body, programs="PKH"), 403, "forbidden")
    await _problem(await post_bulk(http, full_key, body, programs="NOPE"), 422, "validation_failed")
    await _problem(
        await post_bulk(http, full_key, body, snapshot="2001-01-01"), 404, "snapshot_not_found"
    )
    await _problem(
        await post_bulk(http, full_key, body, rule_set="nope"), 404, "rule_set_not_found"
    )
    for r in [await post_bulk(http, full_key, body, snapshot="2001-01-01")]:
        assert release_niks[0] not in r.text


async def test_an_audit_failure_before_the_first_chunk_is_a_503(
    http: httpx.AsyncClient, full_key: str, release_niks: list[str], monkeypatch: Any, app: Any
) -> None:
    async def refuse(self: AuditWriter, entry: Any, *claims: Any) -> None:
        raise AuditUnavailable("the audit log is saturated; retry later")

    monkeypatch.setattr(AuditWriter, "record", refuse)
    monkeypatch.setattr(AuditWriter, "record_signed", refuse)  # with a receipt: chunks
    r = await post_bulk(http, full_key, ndjson(release_niks[:10]))
    await _problem(r, 503, "audit_unavailable")
    assert release_niks[0] not in r.text


async def test_an_audit_failure_mid_job_ends_the_stream_without_summary(
    http: httpx.AsyncClient, full_key: str, release_niks: list[str], monkeypatch: Any
) -> None:
    real = AuditWriter.record_signed
    first = nik_subject(release_niks[0])

    async def flaky(self: AuditWriter, entry: Any, claims: Any) -> tuple[int, str | None]:
        # Chunks are answered concurrently: the first chunk's record is written, no other.
        if first not in entry.subjects:
            raise AuditUnavailable("the access could not be recorded in time")
        return await real(self, entry, claims)

    monkeypatch.setattr(AuditWriter, "record_signed", flaky)  # chunks are recorded with receipts
    r = await post_bulk(http, full_key, ndjson(release_niks[:3000]))
    assert r.status_code == 200  # already sent with the first chunk
    *answers, last = parse(r.content)
    assert len(answers) == 1000  # the first chunk only: nothing unaudited leaves
    assert last == {
        "error": {
            "code": "audit_unavailable",
            "message": "the access could not be recorded in time",
        }
    }
    assert release_niks[1000] not in r.text


async def test_the_request_id_names_the_job(http: httpx.AsyncClient, full_key: str) -> None:
    rid = uuid.uuid4().hex
    r = await post_bulk(http, full_key, ndjson([absent_nik(5)]), headers={"X-Request-ID": rid})
    assert parse(r.content)[-1]["summary"]["request_id"] == rid


async def test_the_openapi_document_describes_the_ndjson_stream(http: httpx.AsyncClient) -> None:
    r = await http.get("/openapi.json")
    assert r.status_code == 200
    op = r.json()["paths"]["/v1/bulk/eligibility"]["post"]
    assert NDJSON in op["requestBody"]["content"]
    assert NDJSON in op["responses"]["200"]["content"]
    assert {p["name"] for p in op["parameters"]} >= {"snapshot", "rule_set", "programs", "explain"}


async def test_the_rate_limit_is_charged_per_chunk_of_niks(
    http: httpx.AsyncClient, full_key: str, release_niks: list[str], monkeypatch: Any
) -> None:
    charged: list[int] = []

    async def throttle(request: Any, client_id: str, n: int, **_: Any) -> None:
        charged.append(n)
        if len(charged) > 1:
            raise RateLimited("the stream is over the client's rate limit", retry_after=60)

    monkeypatch.setattr(limits, "throttle", throttle)
    r = await post_bulk(http, full_key, ndjson([*release_niks[:1500], "bad"]))
    *answers, last = parse(r.content)
    assert charged == [1000, 500]  # malformed lines are not lookups
    assert len(answers) == 1000
    assert last["error"]["code"] == "rate_limited"
