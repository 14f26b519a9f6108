"""A client generated from the committed openapi.json, as an integrator would make one, works
against a real server: typed answers parse, problems parse into `Problem`, and
`raise_on_unexpected_status` raises only for statuses the document does not name."""

from __future__ import annotations

import csv
import importlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.contracts import ROOT
from tests.server import Server, running_server
from tests.support import PURPOSE

pytestmark = pytest.mark.slow

PACKAGE = "tepat_generated"
# The only warnings allowed: the streamed bodies (NDJSON, CSV) a generator cannot model.
STREAMING = re.compile(r"Unsupported content type (application/x-ndjson|text/csv)")
# A JSON request whose answer streams (POST /v1/changes): the operation is generated, its NDJSON
# answer left to the caller (the generator then dumps that response's document: skipped too).
STREAMED_ANSWER = re.compile(
    r"Cannot parse response for status code .* \(Unsupported content_type "
    r"(application/x-ndjson|text/csv)\), response will be omitted from generated client"
)


def _generate(where: Path) -> str:
    config = where / "config.json"
    config.write_text(json.dumps({"package_name_override": PACKAGE}))
    tool = Path(sys.executable).with_name("openapi-python-client")
    result = subprocess.run(
        [str(tool), "generate", "--path", str(ROOT / "openapi.json"), "--meta", "none",
         "--config", str(config), "--output-path", str(where / PACKAGE)],
        capture_output=True, text=True, timeout=300, cwd=where,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def _warnings(output: str) -> list[str]:
    """Every line the generator prints under a WARNING that is not about streaming bodies."""
    found = []
    block = False
    for line in output.splitlines():
        if line.startswith("WARNING"):
            block = True
            continue
        if line.startswith("If you believe") or line.startswith("Generating"):
            block = False
        if block and STREAMED_ANSWER.fullmatch(line.strip()):
            block = False  # the rest of this block is the streamed response's document
            continue
        if block and line.strip() and not STREAMING.fullmatch(line.strip()):
            found.append(line)
    return found


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    where = tmp_path_factory.mktemp("generated")
    output = _generate(where)
    assert "Warning" not in output or not _warnings(output), _warnings(output)
    sys.path.insert(0, str(where))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(where))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def server(
    database_url: str, published: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(database_url, log) as running:
        yield running


def test_the_generator_warns_only_of_streaming_bodies() -> None:
    assert _warnings("WARNING parsing POST /x\n\nUnsupported content type text/csv\n") == []
    assert _warnings("WARNING parsing GET /y\n\nCannot parse response for status 404\n")


def test_a_lookup_parses_into_typed_models(
    generated: Any, server: Server, full_key: str, published: Path
) -> None:
    from tepat_generated import AuthenticatedClient  # type: ignore[import-not-found]
    from tepat_generated.api.lookup import lookup_people  # type: ignore[import-not-found]
    from tepat_generated.models import PeopleAnswer, PeopleLookup  # type: ignore[import-not-found]

    with (published / "anggota.csv").open() as f:
        nik = next(csv.DictReader(f))["nik"]
    client = AuthenticatedClient(
        base_url=server.base_url, token=full_key, raise_on_unexpected_status=True
    )
    with client:
        r = lookup_people.sync_detailed(
            client=client, body=PeopleLookup(niks=[nik], explain=True), x_purpose=PURPOSE
        )
    assert r.status_code == 200
    answer = r.parsed
    assert isinstance(answer, PeopleAnswer)
    (person,) = answer.results
    assert person.nik == nik and person.found is True
    assert answer.meta.snapshot.id == "2026-01-23"
    programs = {d.program for d in person.decisions}
    assert {str(p) for p in programs} == {"PKH", "BPNT", "PBI_JK", "SEKOLAH_RAKYAT"}
    assert r.headers["ratelimit-policy"].startswith('"rate"')


def test_problems_parse_into_the_problem_models(
    generated: Any, server: Server, full_key: str
) -> None:
    from tepat_generated import AuthenticatedClient, Client
    from tepat_generated.api.health import check_liveness  # type: ignore[import-not-found]
    from tepat_generated.api.lookup import lookup_people
    from tepat_generated.api.metadata import get_rule_set  # type: ignore[import-not-found]
    from tepat_generated.errors import UnexpectedStatus  # type: ignore[import-not-found]
    from tepat_generated.models import (
        PeopleLookup,
        Problem,
        ValidationProblem,
    )

    body = PeopleLookup(niks=["3201014501900001"])
    with AuthenticatedClient(
        base_url=server.base_url, token=full_key, raise_on_unexpected_status=True
    ) as client:
        refused = lookup_people.sync_detailed(client=client, body=body, x_purpose="unregistered")
        assert refused.status_code == 403
        assert isinstance(refused.parsed, Problem)
        assert refused.parsed.code == "purpose_required"
        assert refused.parsed.request_id == refused.headers["x-request-id"]

        bad = PeopleLookup(niks=["0000000000000000"])
        invalid = lookup_people.sync_detailed(client=client, body=bad, x_purpose=PURPOSE)
        assert invalid.status_code == 422
        assert isinstance(invalid.parsed, ValidationProblem)
        assert invalid.parsed.field == "niks[0]"
        assert invalid.parsed.errors[0].rule == "nik_date"

        missing = get_rule_set.sync(client=client, rule_set_id="no-such-rule-set")
        assert isinstance(missing, Problem) and missing.code == "rule_set_not_found"

    with AuthenticatedClient(
        base_url=server.base_url, token="tepat_" + "x" * 40, raise_on_unexpected_status=True
    ) as client:
        unauthenticated = lookup_people.sync_detailed(client=client, body=body, x_purpose=PURPOSE)
        assert unauthenticated.status_code == 401
        assert isinstance(unauthenticated.parsed, Problem)
        assert unauthenticated.parsed.code == "unauthenticated"
        assert "invalid_token" in unauthenticated.headers["www-authenticate"]

    # A status the document does not name for the operation raises, as asked.
    with Client(base_url=server.base_url + "/nowhere", raise_on_unexpected_status=True) as bare:
        with pytest.raises(UnexpectedStatus) as raised:
            check_liveness.sync(client=bare)
        assert raised.value.status_code == 404
        assert json.loads(raised.value.content)["code"] == "not_found"
