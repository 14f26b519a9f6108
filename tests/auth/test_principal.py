"""Scopes and purposes of an authenticated client."""

from __future__ import annotations

import pytest

from app.auth.principal import Principal
from app.errors import Forbidden, PurposeRequired, ValidationFailed


@pytest.fixture
def principal() -> Principal:
    return Principal(
        client_id="kemenkes-abc123",
        name="Kemenkes",
        programs=frozenset({"PBI_JK", "PKH"}),
        field_groups=frozenset({"decision", "decile"}),
        purposes=frozenset({"pbi-verification"}),
        expires_at=None,
    )


def test_purpose_must_be_stated_and_registered(principal: Principal) -> None:
    assert principal.require_purpose("pbi-verification") == "pbi-verification"
    for missing in (None, ""):
        with pytest.raises(PurposeRequired, match="X-Purpose"):
            principal.require_purpose(missing)
    with pytest.raises(PurposeRequired) as caught:
        principal.require_purpose("3201014501900001")
    # The header is never echoed: a caller could put a NIK there.
    assert "3201014501900001" not in caught.value.detail
    assert "3201014501900001" not in str(caught.value.problem())


def test_all_granted_programs_by_default_in_canonical_order(principal: Principal) -> None:
    assert principal.allowed_programs(None) == ("PKH", "PBI_JK")
    assert principal.allowed_programs(["PBI_JK", "PKH", "PBI_JK"]) == ("PKH", "PBI_JK")
    assert principal.allowed_programs([]) == ()


def test_a_program_not_granted_is_forbidden_by_name(principal: Principal) -> None:
    with pytest.raises(Forbidden, match="BPNT") as caught:
        principal.allowed_programs(["PKH", "BPNT"])
    assert caught.value.status == 403
    assert caught.value.extra["program"] == "BPNT"


def test_an_unknown_program_is_a_validation_error(principal: Principal) -> None:
    with pytest.raises(ValidationFailed) as caught:
        principal.allowed_programs(["KIP"])
    assert caught.value.extra["field"] == "programs"


def test_field_groups(principal: Principal) -> None:
    assert principal.can_see("decile")
    assert not principal.can_see("identity")
    assert not principal.can_see("health")
    with pytest.raises(ValueError, match="unknown field group"):
        principal.can_see("deciles")
