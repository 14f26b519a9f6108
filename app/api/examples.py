"""Answer examples for the OpenAPI docs (shaped like a generated release's answers)."""

from __future__ import annotations

from typing import Any

_META = {
    "snapshot": {
        "id": "2026-01-23",
        "checksum": "sha256:6478675d50a2076377770d5b6a78bf1cb01677e96a7163dbd6ab682a7cd0163e",
    },
    "rule_set": {
        "id": "kepmensos-79-2025",
        "checksum": "sha256:d951a67927d9143a5e0855c2e0f2e252f94e8af2d63cd25b3ad18bff91353a07",
    },
    "evaluation_date": "2026-01-23",
    "request_id": "0f5c8e2a9b1d4c7e",
    "audit_id": "019a4f2c-7d1e-7a3b-9c2d-5e6f7a8b9c0d",
}

PEOPLE_EXAMPLE: dict[str, Any] = {
    "meta": _META,
    "results": [
        {
            "nik": "3201014501150001",
            "found": True,
            "decile": 3,
            "family": {
                "no_kk": "3201010101200001",
                "relationship": 3,
                "kode_wilayah": "3201012001",
            },
            "decisions": [
                {
                    "program": "PKH",
                    "unit": "family",
                    "eligible": True,
                    "recipient": True,
                    "benefit": {"yearly_rupiah": 3900000, "per_tranche_rupiah": 975000},
                    "components": [
                        {
                            "nik": "3201015506880001",
                            "component": "HAMIL",
                            "yearly_rupiah": 3000000,
                            "taken": True,
                            "reason": None,
                        },
                        {
                            "nik": "3201014501150001",
                            "component": "SD",
                            "yearly_rupiah": 900000,
                            "taken": True,
                            "reason": None,
                        },
                    ],
                },
                {
                    "program": "BPNT",
                    "unit": "family",
                    "eligible": True,
                    "recipient": True,
                    "benefit": {"monthly_rupiah": 200000},
                },
                {
                    "program": "PBI_JK",
                    "unit": "person",
                    "eligible": True,
                    "recipient": True,
                    "benefit": {"monthly_rupiah": 42000},
                },
                {
                    "program": "SEKOLAH_RAKYAT",
                    "unit": "person",
                    "eligible": False,
                    "benefit": None,
                    "level": None,
                    "priority": None,
                },
            ],
        },
        {"nik": "3201011203850009", "found": False},
    ],
}

FAMILIES_EXAMPLE: dict[str, Any] = {
    "meta": _META,
    "results": [
        {
            "no_kk": "3201010101200001",
            "found": True,
            "decile": 3,
            "kode_wilayah": "3201012001",
            "members": [
                {
                    "nik": "3201011203850001",
                    "relationship": 1,
                    "decisions": [
                        {
                            "program": "PBI_JK",
                            "unit": "person",
                            "eligible": True,
                            "recipient": True,
                            "benefit": {"monthly_rupiah": 42000},
                        }
                    ],
                },
            ],
            "decisions": [
                {
                    "program": "BPNT",
                    "unit": "family",
                    "eligible": True,
                    "recipient": True,
                    "benefit": {"monthly_rupiah": 200000},
                },
            ],
        }
    ],
}
