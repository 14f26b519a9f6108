"""The purpose-code catalogue as a document: docs/purposes.md, written from the code.

A purpose (`X-Purpose`) is not a scope: it grants nothing by itself. What a client may see is
what it was granted (programs and field groups, `app.auth.principal`); its purposes are the
reasons it may state, one of which every data request must name, and which the audit trail
records with each access (UU 27/2022, purpose limitation). This module renders the format a
purpose must have, the purposes the service itself writes into the audit trail, and what each
program and field group allows, from the constants the code enforces. The contracts check
(`python -m app.contracts --check`) fails when docs/purposes.md differs from it.
"""

from __future__ import annotations

from app.auth.principal import FIELD_GROUPS, PROGRAMS, PURPOSE_PATTERN

# What a grant of each program lets a client see. Keys must be exactly PROGRAMS.
PROGRAM_MEANINGS: dict[str, str] = {
    "PKH": "Program Keluarga Harapan decisions (per family): eligibility, recipient flag, "
    "yearly and per-tranche benefit, and with `explain` the components",
    "BPNT": "BPNT / Sembako decisions (per family): eligibility, recipient flag, monthly benefit",
    "PBI_JK": "PBI JK (subsidised national health insurance) decisions (per person): "
    "eligibility, recipient flag, monthly premium",
    "SEKOLAH_RAKYAT": "Sekolah Rakyat decisions (per person): eligibility, school level, "
    "priority (the priority also needs `decile`)",
}

# What a grant of each field group lets a client see. Keys must be exactly FIELD_GROUPS.
FIELD_GROUP_MEANINGS: dict[str, str] = {
    "decision": "the decisions of the granted programs: `eligible`, `recipient`, `benefit`, "
    "Sekolah Rakyat `level`, and with `explain` each criterion's `required` and `passed`",
    "decile": "the family's welfare decile (1-10), a criterion's observed decile, "
    "Sekolah Rakyat `priority`",
    "membership": "the family: No. KK, relationship to the head, region code, the members "
    "of a family lookup, PKH components naming another member",
    "identity": "name, sex, birth date; observed ages; PKH age components "
    "(`USIA_DINI`, `LANSIA`, and with `attributes` the school components)",
    "attributes": "marital status, school status and level, work; family housing and "
    "ASN/TNI/Polri flag; the observed values computed from them",
    "health": "disability, chronic illness, pregnancy; PKH components `HAMIL` and "
    "`DISABILITAS_BERAT`",
}


def _reserved() -> dict[str, str]:
    """Purposes the service writes into the audit trail for its own operators' actions."""
    from app.cli.bulk import PURPOSE as OPERATOR_BULK
    from app.demo import DEMO_PURPOSE
    from app.services.clients import OPERATOR_PURPOSE

    return {
        OPERATOR_PURPOSE: "an operator lifting a client's suspension (`tepat client reinstate`)",
        OPERATOR_BULK: "`tepat bulk` and `tepat changes list` run by an operator from the CLI",
        DEMO_PURPOSE: "the client `./run demo` creates; not for production",
    }


def _check_tables() -> None:
    if tuple(PROGRAM_MEANINGS) != PROGRAMS:
        raise AssertionError(f"PROGRAM_MEANINGS must describe exactly {PROGRAMS}")
    if tuple(FIELD_GROUP_MEANINGS) != FIELD_GROUPS:
        raise AssertionError(f"FIELD_GROUP_MEANINGS must describe exactly {FIELD_GROUPS}")


def purposes_md() -> str:
    """docs/purposes.md."""
    _check_tables()
    lines = [
        "# Purpose codes",
        "",
        "<!-- Written by `python -m app.contracts` from app/catalogue.py and the constants",
        "     it reads; do not edit by hand. `python -m app.contracts --check` fails when it differs. -->",
        "",
        "Every data request names its purpose in `X-Purpose`. The purpose must be one the operator",
        "registered for the client (`tepat client create ... --purpose CODE`, repeatable); any",
        "other, or none, is 403 `purpose_required`. The purpose is written into the audit record",
        "of every access (UU 27/2022, purpose limitation): it says *why* the data was read.",
        "",
        "**A purpose grants nothing by itself.** What a client may see is set by its grants, the",
        "programs and field groups below; the same grants apply whichever registered purpose a",
        "request states. There is no fixed list of purpose codes: the operator agrees one code",
        "per legal basis with each consuming institution and registers it for that client only.",
        "",
        "## Format",
        "",
        f"A purpose code matches `{PURPOSE_PATTERN.pattern}`: 2 to 64 characters, lower-case",
        "letters, digits, `-` and `_`, starting with a letter or digit. The service refuses to",
        "register any other (`tepat client create` exits with a validation error). Examples:",
        "`pbi-verification`, `bansos-targeting`, `sekolah-rakyat-admission`.",
        "",
        "## Purposes the service records for itself",
        "",
        "Audit records of operators' own actions carry these purposes. Do not register them for",
        "a client: its accesses would be mistaken for an operator's in the audit trail.",
        "",
        "| purpose | recorded for |",
        "|---|---|",
    ]
    lines += [f"| `{code}` | {meaning} |" for code, meaning in _reserved().items()]
    lines += [
        "",
        "## What a client's grants allow",
        "",
        "`--programs` (comma-separated) chooses the programs whose decisions the client sees;",
        "asking for another is 403 `forbidden`.",
        "",
        "| program | allows |",
        "|---|---|",
    ]
    lines += [f"| `{p}` | {PROGRAM_MEANINGS[p]} |" for p in PROGRAMS]
    lines += [
        "",
        "`--fields` (comma-separated) chooses the field groups. A value is shown only if the",
        "client holds the group of every field it was computed from ([disclosure.md](disclosure.md)).",
        "",
        "| field group | allows |",
        "|---|---|",
    ]
    lines += [f"| `{g}` | {FIELD_GROUP_MEANINGS[g]} |" for g in FIELD_GROUPS]
    lines += [
        "",
        "`--bulk` adds `POST /v1/bulk/eligibility`, `POST /v1/bulk/jobs` and `POST /v1/changes`",
        "(403 `bulk_not_granted` without it). `--daily-quota N` sets the NIKs a day",
        "([quotas.md](quotas.md)).",
        "",
        "## Asking for a client",
        "",
        "Send the operator: the consuming system's name, the purpose code(s) and the legal basis",
        "of each, the programs and the smallest set of field groups the purpose needs, whether it",
        "needs bulk, and the NIKs a day it expects. The operator runs, for example:",
        "",
        "```sh",
        "tepat client create 'Kemenkes SISRUTE' --programs PBI_JK --fields decision,decile \\",
        "  --purpose pbi-verification",
        "```",
        "",
        "and hands over the key it prints once ([quickstart.md](quickstart.md)).",
        "",
    ]
    return "\n".join(lines)
