"""Read-node settings and choice (app.services.nodes): the parts that need no second server.

The routing itself is proven against a real streaming replica in tests/faults/test_replica.py.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import Settings
from app.services.nodes import describe

PRIMARY = "postgresql://tepat:secret@db1:5432/tepat"


def test_replica_urls_are_a_json_list_or_comma_separated() -> None:
    as_json = Settings(
        database_url=PRIMARY,
        database_replica_urls='["postgresql://r1/tepat", "postgresql://r2/tepat"]',
    )
    as_commas = Settings(
        database_url=PRIMARY,
        database_replica_urls="postgresql://r1/tepat, postgresql://r2/tepat",
    )
    assert as_json.database_replica_urls == as_commas.database_replica_urls
    assert as_json.database_replica_urls == ["postgresql://r1/tepat", "postgresql://r2/tepat"]


def test_replicas_without_their_primary_are_refused() -> None:
    with pytest.raises(ValidationError, match="TEPAT_DATABASE_URL"):
        Settings(database_url=None, database_replica_urls=["postgresql://r1/tepat"])


def test_a_node_is_named_without_its_credentials() -> None:
    assert describe(PRIMARY) == "db1:5432"
    assert "secret" not in describe("postgresql://u:secret@10.0.0.9:6432/tepat")
    assert describe("postgresql://postgres@/tepat?host=/run/pg&port=5433") == "/run/pg:5433"
