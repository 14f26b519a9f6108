"""Examples of the DCI face for the OpenAPI docs (docs/dci.md), true to their schemas."""

from __future__ import annotations

from typing import Any

from app.api.examples import _META

_HEADER = {
    "version": "1.0.0",
    "message_id": "msg-20260301-0001",
    "message_ts": "2026-03-01T09:30:00+07:00",
    "action": "search",
    "sender_id": "spmis.kemensos.go.id",
    "sender_uri": "https://spmis.kemensos.go.id/dci/callback",
    "receiver_id": "tepat",
    "total_count": 3,
    "is_msg_encrypted": False,
    "meta": {"snapshot": "2026-01-23"},
}

DCI_SEARCH_EXAMPLE: dict[str, Any] = {
    "signature": None,
    "header": _HEADER,
    "message": {
        "transaction_id": "txn-20260301-0001",
        "search_request": [
            {
                "reference_id": "ref-1",
                "timestamp": "2026-03-01T09:30:00+07:00",
                "search_criteria": {
                    "version": "1.0.0",
                    "query_type": "idtype-value",
                    "query": {"type": "NIK", "value": "3201014501150001"},
                },
                "locale": "ind",
            },
            {
                "reference_id": "ref-2",
                "timestamp": "2026-03-01T09:30:00+07:00",
                "search_criteria": {
                    "query_type": "idtype-value",
                    "query": {"type": "KK", "value": "3201010101200001"},
                },
            },
            {
                "reference_id": "ref-3",
                "timestamp": "2026-03-01T09:30:00+07:00",
                "search_criteria": {
                    "query_type": "predicate",
                    "query": [
                        {
                            "seq_num": 1,
                            "expression1": {
                                "attribute_name": "poverty_score",
                                "operator": "le",
                                "attribute_value": 2,
                            },
                            "condition": "and",
                            "expression2": {
                                "attribute_name": "region_code",
                                "operator": "eq",
                                "attribute_value": "3201",
                            },
                        },
                        {
                            "seq_num": 2,
                            "expression1": {
                                "attribute_name": "age",
                                "operator": "ge",
                                "attribute_value": 60,
                            },
                        },
                    ],
                    "pagination": {"page_size": 10, "page_number": 1},
                },
            },
        ],
    },
}

_PERSON = {
    "@type": "Person",
    "identifier": {
        "@type": "Identifier",
        "identifier_type": "NIK",
        "identifier_value": "3201014501150001",
    },
    "household_identifier": {
        "@type": "Identifier",
        "identifier_type": "KK",
        "identifier_value": "3201010101200001",
    },
    "household_status": "3",
    "address": {"@type": "Address", "region_code": "3201012001"},
    "poverty_score": "3",
    "additional_attributes": [
        {
            "name": "decisions",
            "value": [
                {
                    "program": "PBI_JK",
                    "unit": "person",
                    "eligible": True,
                    "recipient": True,
                    "benefit": {"monthly_rupiah": 42000},
                }
            ],
        }
    ],
}

_GROUP = {
    "@type": "Group",
    "group_identifier": {
        "@type": "Identifier",
        "identifier_type": "KK",
        "identifier_value": "3201010101200001",
    },
    "group_type": "household",
    "address": {"@type": "Address", "region_code": "3201012001"},
    "poverty_score": "3",
    "group_size": 1,
    "members": [
        {
            "@type": "Member",
            "member_identifier": {
                "@type": "Identifier",
                "identifier_type": "NIK",
                "identifier_value": "3201011203850001",
            },
            "relationship_to_head": "1",
        }
    ],
}

_CALLBACK_HEADER = {
    "version": "1.0.0",
    "message_id": "5b0e7d2c-3f1a-4c8e-9a6b-2d4f6e8a0c1e",
    "message_ts": "2026-03-01T02:30:00.120000+00:00",
    "action": "on-search",
    "status": "succ",
    "total_count": 3,
    "completed_count": 3,
    "sender_id": "tepat",
    "receiver_id": "spmis.kemensos.go.id",
    "is_msg_encrypted": False,
}

DCI_SEARCH_ANSWER_EXAMPLE: dict[str, Any] = {
    "header": {**_CALLBACK_HEADER, "meta": _META},
    "message": {
        "transaction_id": "txn-20260301-0001",
        "correlation_id": "9c1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6",
        "search_response": [
            {
                "reference_id": "ref-1",
                "timestamp": "2026-03-01T02:30:00.118000+00:00",
                "status": "succ",
                "data": {"version": "1.0.0", "reg_record_type": "Person", "reg_records": [_PERSON]},
                "locale": "ind",
            },
            {
                "reference_id": "ref-2",
                "timestamp": "2026-03-01T02:30:00.118000+00:00",
                "status": "succ",
                "data": {"version": "1.0.0", "reg_record_type": "Group", "reg_records": [_GROUP]},
            },
            {
                "reference_id": "ref-3",
                "timestamp": "2026-03-01T02:30:00.118000+00:00",
                "status": "rjct",
                "status_reason_code": "rjct.search_criteria.invalid",
                "status_reason_message": "searching on age needs the field group identity, "
                "not granted to this client",
            },
        ],
    },
}

DCI_ACK_EXAMPLE: dict[str, Any] = {
    "message": {
        "ack_status": "ACK",
        "timestamp": "2026-03-01T02:30:00.050000+00:00",
        "correlation_id": "9c1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6",
    }
}

DCI_TXN_STATUS_EXAMPLE: dict[str, Any] = {
    "header": {**_HEADER, "action": "txn-status", "total_count": 1, "meta": None},
    "message": {
        "transaction_id": "txn-20260301-0002",
        "txnstatus_request": {
            "reference_id": "ref-status-1",
            "txn_type": "search",
            "attribute_type": "transaction_id",
            "attribute_value": "txn-20260301-0001",
        },
    },
}

DCI_TXN_STATUS_ANSWER_EXAMPLE: dict[str, Any] = {
    "header": {
        **_CALLBACK_HEADER,
        "action": "txn-on-status",
        "total_count": 1,
        "completed_count": 1,
    },
    "message": {
        "transaction_id": "txn-20260301-0002",
        "correlation_id": "9c1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6",
        "txnstatus_response": {
            "txn_type": "search",
            "txn_status": {
                "transaction_id": "txn-20260301-0001",
                "correlation_id": "9c1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6",
                "search_response": [
                    {
                        "reference_id": "ref-1",
                        "timestamp": "2026-03-01T02:30:00+00:00",
                        "status": "succ",
                    },
                    {
                        "reference_id": "ref-3",
                        "timestamp": "2026-03-01T02:30:00+00:00",
                        "status": "rjct",
                        "status_reason_code": "rjct.search_criteria.invalid",
                    },
                ],
            },
        },
    },
}

DCI_SUBSCRIBE_EXAMPLE: dict[str, Any] = {
    "signature": None,
    "header": {**_HEADER, "action": "subscribe", "total_count": 1, "meta": None},
    "message": {
        "transaction_id": "txn-20260301-0002",
        "subscribe_request": [
            {
                "reference_id": "sub-1",
                "timestamp": "2026-03-01T09:30:00+07:00",
                "subscribe_criteria": {
                    "version": "1.0.0",
                    "reg_event_type": "eligibility_changed",
                    "filter_type": "predicate",
                    "filter": [
                        {
                            "seq_num": 1,
                            "expression1": {
                                "attribute_name": "program",
                                "operator": "in",
                                "attribute_value": ["PKH", "BPNT"],
                            },
                            "condition": "and",
                            "expression2": {
                                "attribute_name": "region_code",
                                "operator": "eq",
                                "attribute_value": "3201",
                            },
                        }
                    ],
                    "notify_record_type": "Person",
                },
            }
        ],
    },
}

DCI_UNSUBSCRIBE_EXAMPLE: dict[str, Any] = {
    "signature": None,
    "header": {**_HEADER, "action": "unsubscribe", "total_count": 1, "meta": None},
    "message": {
        "transaction_id": "txn-20260401-0001",
        "timestamp": "2026-04-01T08:00:00+07:00",
        "subscription_codes": ["5b0f3c52-52d4-4bb5-9a49-2f1f4f0e7f0a"],
    },
}
