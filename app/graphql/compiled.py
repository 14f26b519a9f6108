"""Recurring `person` documents compiled once to a projection of the REST answer.

Most GraphQL traffic is one document sent again and again with a different `$nik`: the shape a
ministry's integration was written against. Strawberry executes it field by field, about forty
resolvers a request. A document of that shape (one `person` root field; its fields those the
REST answer of a plain lookup carries) is compiled here, once per distinct text, to a tree of
getters over that answer, so the fast path (app.graphql.fast) answers it from the same stored
decisions and renderer as REST, and shapes the JSON Strawberry would have produced.

Anything outside that shape is not compiled (`compile_document` returns None) and runs through
Strawberry: fragments, directives, other root fields, arguments on `eligibility`, family members
and attributes, criteria, an invalid document. tests/graphql/test_compiled.py checks both paths
answer alike, byte for byte apart from the per-request ids, and audit alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    GraphQLSchema,
    NonNullTypeNode,
    NullValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    StringValueNode,
    VariableNode,
    parse,
    specified_rules,
    validate,
)
from graphql.language import NamedTypeNode
from graphql.validation import ASTValidationRule

from app.graphql.documents import DocumentCache, cacheable
from app.graphql.permissions import REQUIREMENTS, Needs

Getter = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Node:
    """One selected field: its output key (alias or name), how to read it, its selection."""

    key: str
    get: Getter
    children: tuple[Node, ...] | None = None  # an object or a list of objects when set

    def value(self, source: Any) -> Any:
        found = self.get(source)
        if self.children is None or found is None:
            return found
        if type(found) is list:
            return [project(self.children, item) for item in found]
        return project(self.children, found)


def project(nodes: tuple[Node, ...], source: Any) -> dict[str, Any]:
    return {n.key: n.value(source) for n in nodes}


@dataclass(frozen=True, slots=True)
class Argument:
    """A root argument: a variable's name, or a literal value (a string, or None for null)."""

    variable: str | None
    literal: str | None = None

    def bind(self, variables: dict[str, Any]) -> object:
        return variables.get(self.variable) if self.variable is not None else self.literal


@dataclass(frozen=True, slots=True)
class Plan:
    """A compiled `person` document."""

    key: str  # the root field's output key
    nik: Argument
    snapshot: Argument | None
    nodes: tuple[Node, ...]
    needs: Needs  # field groups the document selects, as the Access extension computes them
    required: frozenset[str]  # variables declared String! (a missing one is Strawberry's error)
    declared: frozenset[str]
    eligibility: bool  # decisions selected: the answer reads and discloses them

    def data(self, answer: dict[str, Any]) -> dict[str, Any]:
        """`data` of the response from the person's REST answer (found or not)."""
        return {self.key: project(self.nodes, answer)}


# --- the schema's fields, each read from the REST answer's shape ---------------------------------
#
# Source objects: Person and Family read the person's answer (a Family's fields are the
# person's `family` group and decile), the others read their own sub-object of it. A field in
# a table with a sub-table is an object (or a list of them); None in a table: not compiled.

Table = dict[str, tuple[Getter, "Table | None"]]


def _key(name: str) -> Getter:
    return lambda source: source.get(name)


def _constant(value: str) -> Getter:
    return lambda _: value


_BENEFIT: Table = {
    "monthlyRupiah": (_key("monthly_rupiah"), None),
    "yearlyRupiah": (_key("yearly_rupiah"), None),
    "perTrancheRupiah": (_key("per_tranche_rupiah"), None),
}
_COMPONENT: Table = {
    "nik": (_key("nik"), None),
    "component": (_key("component"), None),
    "yearlyRupiah": (_key("yearly_rupiah"), None),
    "taken": (_key("taken"), None),
    "reason": (_key("reason"), None),
}
_DECISION: Table = {
    "program": (_key("program"), None),
    "unit": (_key("unit"), None),
    "eligible": (_key("eligible"), None),
    "recipient": (_key("recipient"), None),
    "level": (_key("level"), None),
    "priority": (_key("priority"), None),
    "benefit": (_key("benefit"), _BENEFIT),
    "components": (_key("components"), _COMPONENT),
}
_IDENTITY: Table = {
    "name": (_key("name"), None),
    "sex": (_key("sex"), None),
    "birthDate": (_key("birth_date"), None),
}
_PERSON_ATTRIBUTES: Table = {
    "maritalStatus": (_key("marital_status"), None),
    "schoolStatus": (_key("school_status"), None),
    "schoolLevel": (_key("school_level"), None),
    "working": (_key("working"), None),
}
_HEALTH: Table = {
    "disability": (_key("disability"), None),
    "chronicIllness": (_key("chronic_illness"), None),
    "pregnant": (_key("pregnant"), None),
}
_FAMILY: Table = {
    "noKk": (lambda p: p["family"]["no_kk"], None),
    "found": (lambda p: True, None),
    "decile": (_key("decile"), None),
    "kodeWilayah": (lambda p: p["family"]["kode_wilayah"], None),
}
_PERSON: Table = {
    "nik": (_key("nik"), None),
    "found": (_key("found"), None),
    "decile": (_key("decile"), None),
    "relationship": (lambda p: p["family"]["relationship"] if "family" in p else None, None),
    "family": (lambda p: p if "family" in p else None, _FAMILY),
    "identity": (_key("identity"), _IDENTITY),
    "attributes": (_key("attributes"), _PERSON_ATTRIBUTES),
    "health": (_key("health"), _HEALTH),
    "eligibility": (_key("decisions"), _DECISION),
}
_TYPENAMES = {
    id(_PERSON): "Person",
    id(_FAMILY): "Family",
    id(_IDENTITY): "Identity",
    id(_PERSON_ATTRIBUTES): "PersonAttributes",
    id(_HEALTH): "Health",
    id(_DECISION): "Decision",
    id(_BENEFIT): "Benefit",
    id(_COMPONENT): "Component",
}


class _NotCompiled(Exception):
    pass


def _nodes(selection: SelectionSetNode | None, table: Table) -> tuple[Node, ...]:
    if selection is None:
        raise _NotCompiled
    out: list[Node] = []
    for field in selection.selections:
        if not isinstance(field, FieldNode) or field.directives or field.arguments:
            raise _NotCompiled  # fragments, @skip/@include, eligibility(programs: ...)
        name = field.name.value
        key = field.alias.value if field.alias else name
        if name == "__typename":
            out.append(Node(key, _constant(_TYPENAMES[id(table)])))
            continue
        entry = table.get(name)
        if entry is None:
            raise _NotCompiled
        get, sub = entry
        children = None if sub is None else _nodes(field.selection_set, sub)
        out.append(Node(key, get, children))
    return tuple(out)


def _argument(field: FieldNode, name: str) -> Argument | None:
    for arg in field.arguments or ():
        if arg.name.value == name:
            value = arg.value
            if isinstance(value, VariableNode):
                return Argument(value.name.value)
            if isinstance(value, StringValueNode):
                return Argument(None, value.value)
            if isinstance(value, NullValueNode):
                return Argument(None, None)
            raise _NotCompiled
    return None


def _plan(
    schema: GraphQLSchema,
    query: str,
    document: DocumentNode,
    operation_name: str | None,
) -> Plan:
    if len(document.definitions) != 1:
        raise _NotCompiled
    op = document.definitions[0]
    if not isinstance(op, OperationDefinitionNode) or op.operation is not OperationType.QUERY:
        raise _NotCompiled
    if op.directives or (
        operation_name is not None and op.name and op.name.value != operation_name
    ):
        raise _NotCompiled
    if operation_name is not None and op.name is None:
        raise _NotCompiled
    required: set[str] = set()
    declared: set[str] = set()
    for definition in op.variable_definitions or ():
        type_node = definition.type
        non_null = isinstance(type_node, NonNullTypeNode)
        named = type_node.type if isinstance(type_node, NonNullTypeNode) else type_node
        if (
            definition.default_value is not None
            or definition.directives
            or not isinstance(named, NamedTypeNode)
            or named.name.value != "String"
        ):
            raise _NotCompiled
        declared.add(definition.variable.name.value)
        if non_null:
            required.add(definition.variable.name.value)
    roots = op.selection_set.selections
    if len(roots) != 1:
        raise _NotCompiled
    root = roots[0]
    if not isinstance(root, FieldNode) or root.name.value != "person" or root.directives:
        raise _NotCompiled
    nik = _argument(root, "nik")
    if nik is None:
        raise _NotCompiled
    nodes = _nodes(root.selection_set, _PERSON)
    return Plan(
        key=root.alias.value if root.alias else "person",
        nik=nik,
        snapshot=_argument(root, "snapshot"),
        nodes=nodes,
        needs=REQUIREMENTS.of(schema, query, document),
        required=frozenset(required),
        declared=frozenset(declared),
        eligibility=any(
            isinstance(f, FieldNode) and f.name.value == "eligibility"
            for f in root.selection_set.selections  # type: ignore[union-attr]
        ),
    )


def compile_document(
    schema: GraphQLSchema,
    query: str,
    operation_name: str | None,
    rules: tuple[type[ASTValidationRule], ...],
    max_tokens: int,
) -> Plan | None:
    """The plan of a valid document of the compiled shape, else None (Strawberry runs it)."""
    try:
        document = parse(query, max_tokens=max_tokens)
    except GraphQLError:
        return None
    if validate(schema, document, (*specified_rules, *rules)):
        return None
    try:
        return _plan(schema, query, document, operation_name)
    except _NotCompiled:
        return None


class Plans:
    """Compiled plans by (document, operation name): keyed by the text's hash, bounded in bytes
    (app.graphql.documents); a None is remembered too. A document over the size the caches
    take is not compiled at all: it is no `person` lookup, Strawberry answers it."""

    def __init__(
        self,
        schema: GraphQLSchema,
        rules: tuple[type[ASTValidationRule], ...],
        max_tokens: int,
    ) -> None:
        self.schema = schema
        self.rules = rules
        self.max_tokens = max_tokens
        self._plans: DocumentCache[Plan | None] = DocumentCache()

    def get(self, query: str, operation_name: str | None) -> Plan | None:
        if not cacheable(query) or (operation_name is not None and len(operation_name) > 256):
            return None
        return self._plans.get(
            query,
            operation_name,
            lambda: compile_document(
                self.schema, query, operation_name, self.rules, self.max_tokens
            ),
        )
