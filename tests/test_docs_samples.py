"""The integrator docs say what the service does: every request of docs/quickstart.md is sent to
a real app (curl commands parsed, Python samples run, the Java sample compiled and run against a
server process when a JDK is present), and docs/purposes.md is what the code writes."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.auth.principal import FIELD_GROUPS, PROGRAMS
from app.catalogue import FIELD_GROUP_MEANINGS, PROGRAM_MEANINGS, purposes_md
from app.config import Settings
from app.main import create_app
from tests.server import running_server
from tests.support import MakeClient

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "docs" / "quickstart.md"
PURPOSES = ROOT / "docs" / "purposes.md"

# `<!-- sample: NAME key=value ... -->` then a fenced block: what the test runs.
SAMPLE = re.compile(r"<!-- sample: (\S+)((?: \w+=\S+)*) -->\n```(\w*)\n(.*?)\n```", re.DOTALL)
# The NIK the samples look up; the test answers it with a NIK of the test release.
DOC_NIK = "3201014501150001"
BASE = "http://tepat.test"


class Sample:
    def __init__(self, name: str, attrs: str, lang: str, code: str) -> None:
        self.name = name
        self.attrs = dict(a.split("=", 1) for a in attrs.split())
        self.lang = lang
        self.code = code


def samples() -> dict[str, Sample]:
    found = [Sample(*m) for m in SAMPLE.findall(QUICKSTART.read_text(encoding="utf-8"))]
    by_name = {s.name: s for s in found}
    assert len(by_name) == len(found), "two samples share a name"
    return by_name


def test_the_quickstart_has_its_samples() -> None:
    names = set(samples())
    assert {"lookup", "python-client", "python-httpx", "java", "no-purpose", "bulk-stream"} <= names
    assert {"job-submit", "job-status", "job-results", "niks.ndjson"} <= names


# --- curl --------------------------------------------------------------------------------------


class Curl:
    def __init__(self, method: str, url: str, headers: dict[str, str], body: bytes | None):
        self.method, self.url, self.headers, self.body = method, url, headers, body


def parse_curl(code: str, env: dict[str, str], files: dict[str, bytes]) -> Curl:
    """One curl command of the doc, as far as the doc uses curl; any other option fails."""
    command = code.replace("\\\n", " ")
    for name, value in env.items():
        command = command.replace(f"${name}", value)
    assert "$" not in command, f"unknown variable in {command!r}"
    args = shlex.split(command)
    assert args[0] == "curl"
    method, url, headers, body = None, None, {}, None
    i = 1
    while i < len(args):
        a = args[i]
        if a in ("-s", "-S", "-sS", "-i"):
            pass
        elif a == "-X":
            i += 1
            method = args[i]
        elif a == "-H":
            i += 1
            name, value = args[i].split(":", 1)
            headers[name.strip()] = value.strip()
        elif a in ("-d", "--data-binary"):
            i += 1
            value = args[i]
            body = files[value[1:]] if value.startswith("@") else value.encode()
        elif a.startswith("-"):
            raise AssertionError(f"the test does not know curl's {a}: teach it or change the doc")
        else:
            url = a
        i += 1
    assert url is not None
    if method is None:
        method = "GET" if body is None else "POST"
    if body is not None and method == "POST" and "-d" in args and "Content-Type" not in headers:
        headers["Content-Type"] = "application/x-www-form-urlencoded"  # curl's default
    return Curl(method, url, headers, body)


@pytest.fixture(scope="module")
def real_nik(published: Path) -> str:
    with (published / "anggota.csv").open() as f:
        return next(csv.DictReader(f))["nik"]


@pytest.fixture(scope="module")
async def doc_key(make_client: MakeClient) -> str:
    """The client the quickstart has the operator create (programs, fields, purpose, bulk)."""
    return await make_client(
        programs=["PBI_JK", "SEKOLAH_RAKYAT"],
        fields=["decision", "decile", "membership"],
        purposes=["pbi-verification"],
        bulk=True,
    )


def _with_nik(text: str, nik: str) -> str:
    return text.replace(DOC_NIK, nik)


async def _send(
    http: httpx.AsyncClient, name: str, env: dict[str, str], nik: str
) -> httpx.Response:
    all_samples = samples()
    sample = all_samples[name]
    files = {"niks.ndjson": _with_nik(all_samples["niks.ndjson"].code, nik).encode() + b"\n"}
    curl = parse_curl(_with_nik(sample.code, nik), env, files)
    r = await http.request(curl.method, curl.url, headers=curl.headers, content=curl.body)
    assert r.status_code == int(sample.attrs["status"]), (name, r.status_code, r.text[:500])
    if "code" in sample.attrs:
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == sample.attrs["code"]
    return r


async def test_curl_lookup_answers_as_the_doc_shows(
    http: httpx.AsyncClient, doc_key: str, real_nik: str
) -> None:
    env = {"TEPAT_URL": BASE, "TEPAT_KEY": doc_key}
    r = await _send(http, "lookup", env, real_nik)
    answer = r.json()
    assert set(answer["meta"]) >= {
        "snapshot",
        "rule_set",
        "evaluation_date",
        "request_id",
        "audit_id",
    }
    first, second = answer["results"]
    assert first["nik"] == real_nik and first["found"] is True
    assert {"decile", "family", "decisions"} <= set(first)
    assert set(first["family"]) == {"no_kk", "relationship", "kode_wilayah"}
    assert [d["program"] for d in first["decisions"]] == ["PBI_JK"]
    assert {"unit", "eligible", "recipient"} <= set(first["decisions"][0])
    assert second == {"nik": "3201015506880001", "found": False}
    for header in ("Tepat-Receipt", "RateLimit", "RateLimit-Policy", "X-Request-ID"):
        assert header in r.headers, header
    assert (
        '"rate";' in r.headers["RateLimit-Policy"] and 'qu="niks"' in r.headers["RateLimit-Policy"]
    )


async def test_curl_errors_are_the_problems_the_doc_names(
    http: httpx.AsyncClient, doc_key: str, real_nik: str
) -> None:
    env = {"TEPAT_URL": BASE, "TEPAT_KEY": doc_key}
    r = await _send(http, "no-purpose", env, real_nik)
    assert r.json()["detail"] == "state the purpose of this request in X-Purpose"
    r = await _send(http, "bad-nik", env, real_nik)
    problem = r.json()
    assert problem["field"] == "niks[0]" and problem["errors"][0]["rule"] == "nik_date"


@pytest.fixture(scope="module")
async def jobs_app(settings: Settings, published: Path) -> AsyncIterator[FastAPI]:
    """An app whose lifespan runs a bulk job worker (the shared app runs none)."""
    application = create_app(settings.model_copy(update={"jobs_worker": True}))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def jobs_http(jobs_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=jobs_app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE, timeout=60) as client:
        yield client


async def test_curl_bulk_stream_and_job(
    jobs_http: httpx.AsyncClient, doc_key: str, real_nik: str
) -> None:
    http = jobs_http
    env = {"TEPAT_URL": BASE, "TEPAT_KEY": doc_key}
    r = await _send(http, "bulk-stream", env, real_nik)
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert lines[0]["line"] == 1 and lines[0]["found"] is True
    assert lines[1] == {"line": 2, "nik": "3201015506880001", "found": False}
    assert lines[2]["error"]["code"] == "nik_format"
    summary = lines[-1]["summary"]
    assert (summary["lines"], summary["found"], summary["not_found"], summary["errors"]) == (
        3,
        1,
        1,
        1,
    )
    assert len(summary["audit_ids"]) == len(summary["receipts"]) == 1

    r = await _send(http, "job-submit", env, real_nik)
    job = r.json()
    assert r.headers["location"] == f"/v1/bulk/jobs/{job['id']}"
    assert job["status"] in {"queued", "running", "succeeded"}
    env["JOB"] = job["id"]
    for _ in range(300):
        r = await _send(http, "job-status", env, real_nik)
        if r.json()["status"] not in {"queued", "running"}:
            break
        await asyncio.sleep(0.2)
    assert r.json()["status"] == "succeeded", r.json()
    r = await _send(http, "job-results", env, real_nik)
    results = [json.loads(line) for line in r.text.splitlines()]
    assert [line.get("line") for line in results[:3]] == [1, 2, 3]
    assert "summary" in results[-1]


def test_curl_parser_reads_what_the_doc_writes() -> None:
    curl = parse_curl(
        "curl -sS \"$U/x\" \\\n  -H 'A: b' \\\n  -d '{\"k\": 1}'", {"U": "http://h"}, {}
    )
    assert (curl.method, curl.url, curl.headers, curl.body) == (
        "POST", "http://h/x", {"A": "b", "Content-Type": "application/x-www-form-urlencoded"},
        b'{"k": 1}',
    )  # fmt: skip
    with pytest.raises(AssertionError):
        parse_curl("curl --compressed http://h/", {}, {})


# --- Python: the samples run as written, over a transport that reaches the test app ------------


class _Bridge(httpx.BaseTransport):
    """Sync httpx (the samples run in a thread) to the async test client on the test's loop."""

    def __init__(self, http: httpx.AsyncClient, loop: asyncio.AbstractEventLoop) -> None:
        self.http, self.loop = http, loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def go() -> httpx.Response:
            r = await self.http.request(
                request.method, str(request.url), headers=request.headers, content=request.read()
            )
            headers = [
                (k, v) for k, v in r.headers.multi_items()
                if k.lower() not in {"content-encoding", "content-length", "transfer-encoding"}
            ]  # fmt: skip
            return httpx.Response(r.status_code, headers=headers, content=r.content)

        return asyncio.run_coroutine_threadsafe(go(), self.loop).result(timeout=60)


async def _python(
    name: str, http: httpx.AsyncClient, nik: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    real_client = httpx.Client

    class Client(real_client):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if kwargs.get("transport") is None:
                kwargs["transport"] = _Bridge(http, loop)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(httpx, "Client", Client)
    code = compile(_with_nik(samples()[name].code, nik), f"docs/quickstart.md:{name}", "exec")
    namespace: dict[str, Any] = {"__name__": "sample"}
    await asyncio.to_thread(exec, code, namespace)
    return namespace


async def test_python_client_sample(
    http: httpx.AsyncClient, doc_key: str, real_nik: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEPAT_URL", BASE)
    monkeypatch.setenv("TEPAT_KEY", doc_key)
    ns = await _python("python-client", http, real_nik, monkeypatch)
    assert [p["found"] for p in ns["answer"].results] == [True, False]
    assert ns["claims"]["audit_id"] == ns["answer"].meta["audit_id"]
    assert ns["claims"]["snapshot"]["id"] == ns["answer"].meta["snapshot"]["id"]


async def test_python_httpx_sample(
    http: httpx.AsyncClient, doc_key: str, real_nik: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tepat_client import verify_receipt

    monkeypatch.setenv("TEPAT_URL", BASE)
    monkeypatch.setenv("TEPAT_KEY", doc_key)
    ns = await _python("python-httpx", http, real_nik, monkeypatch)
    assert ns["r"].status_code == 200
    assert ns["answer"]["results"][0]["nik"] == real_nik
    jwks = (await http.get("/.well-known/jwks.json")).json()
    claims = verify_receipt(ns["receipt"], ns["signed_body"], jwks)
    assert claims["audit_id"] == ns["answer"]["meta"]["audit_id"]


# --- Java: compiled and run against a server process ------------------------------------------


@pytest.mark.skipif(shutil.which("java") is None, reason="no JDK")
async def test_java_sample(database_url: str, doc_key: str, real_nik: str, tmp_path: Path) -> None:
    source = tmp_path / "Quickstart.java"
    source.write_text(_with_nik(samples()["java"].code, real_nik))

    def run() -> subprocess.CompletedProcess[str]:
        with running_server(database_url, tmp_path / "server.log") as server:
            env = {**os.environ, "TEPAT_URL": server.base_url, "TEPAT_KEY": doc_key}
            return subprocess.run(
                ["java", str(source)], env=env, capture_output=True, text=True, timeout=120
            )

    done = await asyncio.to_thread(run)
    assert done.returncode == 0, done.stderr
    body, receipt, left = done.stdout.rstrip("\n").rsplit("\n", 2)
    assert json.loads(body)["results"][0]["nik"] == real_nik
    assert receipt.startswith("receipt: ey") and left.startswith('allowance left: "rate";')


# --- the purpose catalogue -------------------------------------------------------------------


def test_purposes_doc_is_what_the_code_writes() -> None:
    assert PURPOSES.read_text(encoding="utf-8") == purposes_md(), (
        "docs/purposes.md differs from the code: run `python -m app.contracts`"
    )


def test_purposes_doc_describes_every_grant() -> None:
    assert tuple(PROGRAM_MEANINGS) == PROGRAMS and tuple(FIELD_GROUP_MEANINGS) == FIELD_GROUPS
    text = PURPOSES.read_text(encoding="utf-8")
    for name in (*PROGRAMS, *FIELD_GROUPS, "operator", "operator-bulk", "demo"):
        assert f"| `{name}` |" in text, name


def test_quickstart_operator_command_matches_the_cli() -> None:
    from typer.testing import CliRunner

    from app.cli import app as cli

    block = next(
        b for b in re.findall(r"```sh\n(.*?)```", QUICKSTART.read_text(), re.DOTALL)
        if b.startswith("tepat client create")
    )  # fmt: skip
    args = shlex.split(block.replace("\\\n", " "))[1:]
    help_text = CliRunner().invoke(cli, [*args[:2], "--help"]).output
    for option in (a for a in args if a.startswith("--")):
        assert option in help_text, option
