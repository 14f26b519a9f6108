"""Caches of what is derived from a GraphQL document's text, keyed by its hash, bounded in bytes.

A cache keyed by the text itself holds the text as long as the entry lives, and one bounded
by a count of entries holds any number of bytes: 280 distinct 1 MB documents grew a process by
800 MB. Here every cache is keyed by the SHA-256 of the text (and whatever else the value
depends on), each entry is charged an estimate of what it holds, the total is bounded, and a
document over MAX_CACHED_CHARS is never cached (it is parsed and checked each time it comes:
bodies are capped by app.graphql.gate, so each time is bounded too).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cachetools import LRUCache
from graphql import GraphQLError, parse
from strawberry.extensions import SchemaExtension

# Real documents are a few hundred bytes; the IDE's introspection query is about 2 KiB.
MAX_CACHED_CHARS = 8192
# What one cache may hold, by the estimate below.
BUDGET_BYTES = 16 * 1024 * 1024
# A parsed document (graphql-core nodes, locations, tokens) takes tens of bytes per character
# of text; a validation result or a plan is smaller. An estimate, charged per entry.
BYTES_PER_CHAR = 64
ENTRY_BYTES = 1024

V = TypeVar("V")


def digest(query: str) -> bytes:
    return hashlib.sha256(query.encode("utf-8", "surrogatepass")).digest()


def cacheable(query: str) -> bool:
    return len(query) <= MAX_CACHED_CHARS


@dataclass(frozen=True, slots=True)
class _Entry(Generic[V]):
    value: V
    cost: int


class DocumentCache(Generic[V]):
    """An LRU cache of values derived from a document's text, bounded in (estimated) bytes."""

    def __init__(self, budget: int = BUDGET_BYTES) -> None:
        self._entries: LRUCache[Hashable, _Entry[V]] = LRUCache(
            maxsize=budget, getsizeof=lambda entry: entry.cost
        )
        self.computed = 0  # how many values were computed (misses and uncacheable documents)

    def get(self, query: str, extra: Hashable, compute: Callable[[], V]) -> V:
        if not cacheable(query):
            self.computed += 1
            return compute()
        key = (digest(query), extra)
        entry = self._entries.get(key)
        if entry is not None:
            return entry.value
        self.computed += 1
        value = compute()
        self._entries[key] = _Entry(value, ENTRY_BYTES + BYTES_PER_CHAR * len(query))
        return value

    @property
    def size(self) -> int:
        """The estimated bytes held."""
        return int(self._entries.currsize)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()


PARSED: DocumentCache[Any] = DocumentCache()
VALIDATED: DocumentCache[Any] = DocumentCache()


class ParseCache(SchemaExtension):
    """Strawberry's ParserCache, keyed by the document's hash and bounded in bytes."""

    def on_parse(self) -> Iterator[None]:
        ec = self.execution_context
        query = ec.query or ""
        options = ec.parse_options
        extra = tuple(sorted(options.items()))
        ec.graphql_document = PARSED.get(query, extra, lambda: parse(query, **options))
        yield


class ValidateCache(SchemaExtension):
    """Strawberry's ValidationCache, keyed by the document's hash and bounded in bytes."""

    def on_validate(self) -> Iterator[None]:
        from strawberry.schema.schema import validate_document  # a cycle at import time

        ec = self.execution_context
        schema = ec.schema._schema
        document = ec.graphql_document
        rules = tuple(ec.validation_rules)
        assert document is not None

        def compute() -> list[GraphQLError]:
            return list(validate_document(schema, document, rules))

        ec.pre_execution_errors = VALIDATED.get(ec.query or "", (id(schema), rules), compute)
        yield
