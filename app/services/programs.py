"""The four programs described in words (docs/rules.md); their numbers live in rule sets."""

from __future__ import annotations

from app.schemas.meta import ProgramInfo

PROGRAMS = [
    ProgramInfo(
        id="PKH",
        name="Program Keluarga Harapan (conditional cash transfer)",
        unit="family",
        benefit="Sum of the taken components a year, paid in 4 tranches",
        criteria=[
            "The family's decile is within pkh.deciles (1-4) and the family is not ASN/TNI/Polri",
            "At least one member has a component: pregnant, age 0-6, severe disability, elderly, "
            "or attending SD/SMP/SMA aged 6-21; caps per component and at most 4 members",
        ],
    ),
    ProgramInfo(
        id="BPNT",
        name="Sembako / Bantuan Pangan Non Tunai (food card)",
        unit="family",
        benefit="A monthly amount (Rp200,000 in kepmensos-79-2025)",
        criteria=["The family's decile is within bpnt.deciles (1-5) and it is not ASN/TNI/Polri"],
    ),
    ProgramInfo(
        id="PBI_JK",
        name="Penerima Bantuan Iuran Jaminan Kesehatan (state-paid BPJS health premium)",
        unit="person",
        benefit="A monthly premium per person (Rp42,000 in kepmensos-79-2025)",
        criteria=[
            "The person's family decile is within pbi.deciles (1-5) and the family is not "
            "ASN/TNI/Polri"
        ],
    ),
    ProgramInfo(
        id="SEKOLAH_RAKYAT",
        name="Sekolah Rakyat (free boarding school)",
        unit="person",
        benefit="A place; priority 1 for decile 1, 2 for decile 2",
        criteria=[
            "The family's decile is within sekolah_rakyat.deciles (1-2)",
            "The child is 6-18 on the evaluation date; level from attendance (SD, SMP, SMA) or, "
            "if not attending, from age; a PT student is not eligible",
        ],
    ),
]
