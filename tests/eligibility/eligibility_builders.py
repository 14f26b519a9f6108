"""Compact builders of engine inputs for the eligibility tests."""

from __future__ import annotations

from datetime import date

from app.eligibility import Family, Member

EVALUATION_DATE = date(2026, 1, 23)


def born(age: int, on: date = EVALUATION_DATE) -> date:
    """A birth date giving exactly `age` on `on` (born the same day `age` years before)."""
    return on.replace(year=on.year - age)


def member(
    nik: str = "3201010101900001",
    *,
    age: int = 30,
    birth_date: date | None = None,
    pregnant: bool | None = None,
    school_status: int | None = None,
    school_level: str | None = None,
    disability: int | None = None,
    pbi_recipient: bool | None = None,
    relationship: int = 1,
) -> Member:
    return Member(
        nik=nik,
        relationship=relationship,
        sex=2,
        birth_date=birth_date or born(age),
        pregnant=pregnant,
        school_status=school_status,
        school_level=school_level,
        disability=disability,
        pbi_recipient=pbi_recipient,
    )


def family(
    *members: Member,
    decile: int | None = 1,
    excluded: bool = False,
    pkh_recipient: bool | None = None,
    bpnt_recipient: bool | None = None,
) -> Family:
    return Family(
        no_kk="3201010101200001",
        decile=decile,
        asn_tni_polri=excluded,
        pkh_recipient=pkh_recipient,
        bpnt_recipient=bpnt_recipient,
        members=members or (member(),),
    )
