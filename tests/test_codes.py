"""The code tables (app.codes) are the one source: docs/codes.md, the importer's checks and the
OpenAPI enums all say what they say."""

from __future__ import annotations

import json
import re

import pytest

from app.codes import CODE_TABLES, CodeTable
from app.contracts import ROOT
from app.ingest.columns import TABLES, FieldError

DOC = (ROOT / "docs" / "codes.md").read_text(encoding="utf-8")
SPEC = json.loads((ROOT / "openapi.json").read_text())
SECTION = re.compile(r"^### `(\w+)` \((\w+)\)\n(.*?)(?=^##|\Z)", re.MULTILINE | re.DOTALL)
ROW = re.compile(r"^\| (\d+) \| ([^|]+?) \| ([^|]+?) \|$", re.MULTILINE)


def _documented() -> dict[tuple[str, str], list[tuple[int, str, str]]]:
    """Each section of docs/codes.md with an `| code | Indonesian | English |` table."""
    out = {}
    for column, field, body in SECTION.findall(DOC):
        if "| code | Indonesian | English |" in body:
            out[(column, field)] = [(int(v), i, e) for v, i, e in ROW.findall(body)]
    return out


def test_docs_codes_md_holds_every_table_and_no_other() -> None:
    documented = _documented()
    assert set(documented) == {(t.column, t.field) for t in CODE_TABLES}


@pytest.mark.parametrize("table", CODE_TABLES, ids=lambda t: t.field)
def test_docs_codes_md_matches_the_table(table: CodeTable) -> None:
    rows = _documented()[(table.column, table.field)]
    assert rows == [(c.value, c.indonesian, c.english) for c in table.codes]


def _parser(column: str):  # type: ignore[no-untyped-def]
    for spec in TABLES:
        for col in spec.columns:
            if col.source == column:
                return col.parse
    raise LookupError(column)


@pytest.mark.parametrize("table", CODE_TABLES, ids=lambda t: t.field)
def test_the_importer_accepts_exactly_the_codes(table: CodeTable) -> None:
    parse = _parser(table.column)
    accepted, refused = [], []
    for value in range(-1, max(table.values) + 3):
        try:
            accepted.append(int(parse(str(value))))
        except FieldError as e:
            refused.append(e.rule)
    assert accepted == list(table.values)
    assert refused and set(refused) == {"value_invalid"}


@pytest.mark.parametrize("table", CODE_TABLES, ids=lambda t: t.field)
def test_the_contract_declares_each_code_with_its_meaning(table: CodeTable) -> None:
    schema = SPEC["components"]["schemas"][table.title]
    assert schema["type"] == "integer" and schema["enum"] == list(table.values)
    assert schema["x-enum-varnames"] == [c.name for c in table.codes]
    for code in table.codes:
        assert f"{code.value}: {code.english} ({code.indonesian})" in schema["description"]
    ref = {"$ref": f"#/components/schemas/{table.title}"}
    users = [
        name
        for name, model in SPEC["components"]["schemas"].items()
        for prop, sub in model.get("properties", {}).items()
        if prop == table.field and (sub == ref or ref in sub.get("anyOf", []))
    ]
    assert users, table.field


def test_no_coded_field_of_the_contract_is_a_bare_integer() -> None:
    coded = {t.field for t in CODE_TABLES}
    bare = [
        f"{name}.{prop}"
        for name, model in SPEC["components"]["schemas"].items()
        for prop, sub in model.get("properties", {}).items()
        if prop in coded
        and "integer" in {sub.get("type"), *(s.get("type") for s in sub.get("anyOf", []))}
    ]
    assert bare == []
