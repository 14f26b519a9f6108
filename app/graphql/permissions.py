"""What a document needs before it runs: a key and purpose for personal fields, field groups."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLSchema,
    TypeInfo,
    TypeInfoVisitor,
    Visitor,
    get_named_type,
    visit,
)
from strawberry.schema.schema_converter import GraphQLCoreConverter

from app.graphql.documents import DocumentCache
from app.graphql.types import GROUP, PERSONAL


@dataclass(frozen=True, slots=True)
class Needs:
    """`groups`: each field group the document selects, with the first field that needs it."""

    personal: bool = False
    groups: dict[str, str] = field(default_factory=dict)


class _Collect(Visitor):
    def __init__(self, type_info: TypeInfo) -> None:
        super().__init__()
        self.type_info = type_info
        self.personal = False
        self.groups: dict[str, str] = {}

    def enter_field(self, node: FieldNode, *_: Any) -> None:
        definition = self.type_info.get_field_def()
        parent = self.type_info.get_parent_type()
        if definition is None or parent is None:
            return
        strawberry_field = definition.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
        metadata = getattr(strawberry_field, "metadata", None) or {}
        if metadata.get(PERSONAL):
            self.personal = True
        for group in metadata.get(GROUP, ()):
            self.groups.setdefault(group, f"{get_named_type(parent).name}.{node.name.value}")


class Requirements:
    """Walks a (valid) document once per distinct query text; the result does not depend on
    the caller, so it is cached (by the text's hash, bounded in bytes: app.graphql.documents)
    and each request only compares it with its grants."""

    def __init__(self) -> None:
        self._cache: DocumentCache[Needs] = DocumentCache()

    def of(self, schema: GraphQLSchema, query: str, document: DocumentNode) -> Needs:
        def walk() -> Needs:
            type_info = TypeInfo(schema)
            collect = _Collect(type_info)
            visit(document, TypeInfoVisitor(type_info, collect))
            return Needs(collect.personal, collect.groups)

        return self._cache.get(query, id(schema), walk)


REQUIREMENTS = Requirements()
