"""The purpose-code catalogue: docs/purposes.md is the table in code, and the purposes the code
itself states are in it."""

from __future__ import annotations

from app.auth.principal import PURPOSE_PATTERN
from app.auth.purposes import PURPOSES, catalogue_markdown
from app.cli.bulk import PURPOSE as OPERATOR_BULK
from app.contracts import ROOT
from app.demo import DEMO_PURPOSE


def test_docs_purposes_md_is_generated_from_the_table() -> None:
    assert (ROOT / "docs" / "purposes.md").read_text(encoding="utf-8") == catalogue_markdown()


def test_every_code_is_one_a_client_can_be_registered_with() -> None:
    codes = [p.code for p in PURPOSES]
    assert len(codes) == len(set(codes))
    assert all(PURPOSE_PATTERN.fullmatch(c) for c in codes)
    assert all(p.english and p.indonesian and p.who and p.operations for p in PURPOSES)


def test_the_purposes_the_code_states_are_catalogued() -> None:
    codes = {p.code for p in PURPOSES}
    assert {OPERATOR_BULK, DEMO_PURPOSE, "pbi-verification"} <= codes
    for code in codes:
        assert f"| `{code}` |" in catalogue_markdown()
