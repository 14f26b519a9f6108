"""The catalogue of purpose codes (`X-Purpose`): what each is for, in English and Indonesian.

UU 27/2022 binds every processing of personal data to a stated purpose. A client is registered
with the purposes it may state (`tepat client create --purpose`), and every request names one;
the audit trail records it. This table is the catalogue an operator registers from: a code
outside it can still be registered (a new programme needs no release), but should be added
here first. docs/purposes.md is generated from it (`python -m app.contracts`).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.auth.principal import PURPOSE_PATTERN


@dataclass(frozen=True, slots=True)
class Purpose:
    code: str
    english: str
    indonesian: str
    who: str  # the kind of client that states it
    operations: str  # the operations it usually goes with


PURPOSES: tuple[Purpose, ...] = (
    Purpose(
        "pbi-verification",
        "Checking who qualifies for state-paid health insurance contributions (PBI JK)",
        "Verifikasi kelayakan Penerima Bantuan Iuran Jaminan Kesehatan (PBI JK)",
        "BPJS Kesehatan, Dinas Sosial",
        "people/lookup, bulk eligibility, bulk jobs",
    ),
    Purpose(
        "pkh-verification",
        "Checking a family's eligibility for the Family Hope Programme (PKH) and its components",
        "Verifikasi kelayakan keluarga untuk Program Keluarga Harapan (PKH) dan komponennya",
        "Kementerian Sosial (PKH directorate), PKH facilitators",
        "people/lookup, families/lookup",
    ),
    Purpose(
        "bpnt-verification",
        "Checking a family's eligibility for the staple-food programme (Sembako / BPNT)",
        "Verifikasi kelayakan keluarga untuk Program Sembako / BPNT",
        "Kementerian Sosial, Dinas Sosial",
        "people/lookup, families/lookup",
    ),
    Purpose(
        "sekolah-rakyat-selection",
        "Selecting and ranking children for a place in Sekolah Rakyat",
        "Seleksi dan pemeringkatan calon siswa Sekolah Rakyat",
        "Kementerian Sosial (Sekolah Rakyat), school committees",
        "people/lookup, families/lookup",
    ),
    Purpose(
        "bansos-targeting",
        "Targeting a regional social-assistance programme by decile and eligibility",
        "Penargetan bantuan sosial daerah berdasarkan desil dan kelayakan",
        "Provincial and district governments (Pemda)",
        "bulk jobs, families/lookup",
    ),
    Purpose(
        "change-review",
        "Reviewing who gained or lost eligibility between two releases, to update payrolls",
        "Peninjauan perubahan kelayakan antara dua rilis untuk pemutakhiran data penerima",
        "Programme administrators, BPJS Kesehatan",
        "changes",
    ),
    Purpose(
        "referral",
        "Referring a person to a programme they appear to qualify for (case work)",
        "Rujukan seseorang ke program yang tampaknya layak baginya (pendampingan kasus)",
        "Social workers (pendamping sosial), Dinas Sosial",
        "people/lookup",
    ),
    Purpose(
        "operator-bulk",
        "An operator's own bulk run from the command line (`tepat bulk`)",
        "Pemrosesan massal oleh operator melalui baris perintah (`tepat bulk`)",
        "The operator (registered automatically by `tepat bulk`)",
        "bulk eligibility",
    ),
    Purpose(
        "demo",
        "The local demonstration (`tepat demo`): synthetic data only",
        "Demonstrasi lokal (`tepat demo`): data sintetis saja",
        "A developer's machine",
        "any",
    ),
)


def catalogue_markdown() -> str:
    """docs/purposes.md, from PURPOSES."""
    lines = [
        "# Purpose codes",
        "",
        "<!-- Generated from app/auth/purposes.py by `python -m app.contracts`; do not edit. -->",
        "",
        "Every data request names its purpose in the `X-Purpose` header (UU 27/2022: personal data",
        "is processed only for a stated purpose). The operator registers a client with the codes it",
        "may state (`tepat client create NAME ... --purpose CODE`); any other code gets 403",
        "`purpose_required`. The audit trail records the purpose of every request.",
        "",
        "Ask the operator for the code that matches what you do; a purpose not listed here is added",
        "to the catalogue (a change of the code, reviewed) before it is registered. A code is 2 to",
        f"64 characters: `{PURPOSE_PATTERN.pattern}`.",
        "",
        "| code | purpose | tujuan | who states it | usual operations |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| `{p.code}` | {p.english} | {p.indonesian} | {p.who} | {p.operations} |"
        for p in PURPOSES
    ]
    return "\n".join(lines) + "\n"
