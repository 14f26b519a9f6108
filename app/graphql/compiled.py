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

import operator
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
from strawberry.schema.config import StrawberryConfig
from strawberry.types.private import is_private

from app.graphql import types
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
# person's `family` group and decile), the others read their own sub-object of it. The tables
# are generated from the Strawberry types themselves (app.graphql.types: each field's Python
# name is the answer's key, its GraphQL name the table's), so a renamed field renames the key
# it reads, and tests/graphql/test_compiled.py checks every key is one the answer has. A key is
# read strictly (`source[key]`: a missing one is an error, never a silent null) unless the
# answer leaves it out by definition (`optional`: recipient when unknown, a program's benefit
# amounts...). A field in a table with a sub-table is an object (or a list of them); a field
# left out of a table is not compiled.


@dataclass(frozen=True, slots=True)
class Served:
    """How the compiled path serves one field: a getter, a sub-table for an object, and the
    answer's keys it reads (a path from its source object; () when it reads none)."""

    get: Getter
    table: Table | None
    path: tuple[str, ...]
    optional: bool = False  # the answer may leave the key out: read as null


Table = dict[str, Served]
_NAMES = StrawberryConfig().name_converter
_TYPENAMES: dict[int, str] = {}


def _constant(value: str) -> Getter:
    return lambda _: value


def _strict(name: str) -> Getter:
    return operator.itemgetter(name)


def _optional(name: str) -> Getter:
    return lambda source: source.get(name)


def _inner(type_: object) -> object:
    while hasattr(type_, "of_type"):  # Optional[...], list[...]
        type_ = type_.of_type
    return type_


def _table(
    cls: type,
    *,
    optional: frozenset[str] = frozenset(),
    subs: dict[str, Table] | None = None,
    special: dict[str, Served] | None = None,
    skip: frozenset[str] = frozenset(),
    found_only: bool = False,
) -> Table:
    """The table of a Strawberry type's fields, by GraphQL name: each reads the answer's key of
    its Python name, unless `special` says how (or `skip`: not compiled). Every name given here
    must be one of the type's fields, and every object field must have a sub-table or be
    skipped: a renamed field fails at import, it cannot silently read nothing. `found_only`:
    every field but nik and found is null when the answer says not found."""
    definition = cls.__strawberry_definition__  # type: ignore[attr-defined]
    subs, special = subs or {}, special or {}
    fields = {f.python_name: f for f in definition.fields if not is_private(f.type)}
    unknown = (set(subs) | set(special) | optional | skip) - set(fields)
    if unknown:
        raise TypeError(f"{definition.name} has no field(s) {sorted(unknown)}")
    table: Table = {}
    for python_name, field in fields.items():
        if python_name in skip:
            continue
        sub = subs.get(python_name)
        if sub is not None and _TYPENAMES[id(sub)] != _inner(field.type).__name__:  # type: ignore[attr-defined]
            raise TypeError(f"{definition.name}.{python_name}: the sub-table is of another type")
        served = special.get(python_name)
        if served is None:
            if sub is None and hasattr(_inner(field.type), "__strawberry_definition__"):
                raise TypeError(f"{definition.name}.{python_name} is an object: give a table")
            is_optional = python_name in optional
            get = _optional(python_name) if is_optional else _strict(python_name)
            served = Served(get, sub, (python_name,), is_optional)
        elif sub is not None:
            served = Served(served.get, sub, served.path, served.optional)
        if found_only and python_name not in ("nik", "found"):
            served = _found(served)
        table[_NAMES.get_graphql_name(field)] = served
    _TYPENAMES[id(table)] = definition.name
    return table


def _found(served: Served) -> Served:
    """A Person field: null when the NIK is not found (the answer then has nik and found only)."""
    get = served.get
    return Served(
        lambda p: get(p) if p["found"] else None, served.table, served.path, served.optional
    )


_BENEFIT = _table(
    types.Benefit, optional=frozenset({"monthly_rupiah", "yearly_rupiah", "per_tranche_rupiah"})
)
_COMPONENT = _table(types.Component)
_DECISION = _table(
    types.Decision,
    # recipient: left out when the snapshot has no flag; level and priority: Sekolah Rakyat's;
    # components: with explain only (never compiled).
    optional=frozenset({"recipient", "level", "priority", "components"}),
    subs={"benefit": _BENEFIT, "components": _COMPONENT},
    skip=frozenset({"criteria"}),
)
_IDENTITY = _table(types.Identity)
_PERSON_ATTRIBUTES = _table(types.PersonAttributes)
_HEALTH = _table(types.Health)
_FAMILY = _table(
    types.Family,
    special={
        "no_kk": Served(lambda p: p["family"]["no_kk"], None, ("family", "no_kk")),
        "found": Served(lambda p: True, None, ()),
        "kode_wilayah": Served(
            lambda p: p["family"]["kode_wilayah"], None, ("family", "kode_wilayah")
        ),
        "relationship": Served(
            lambda p: p["family"]["relationship"], None, ("family", "relationship")
        ),
    },
    skip=frozenset({"attributes", "members", "decisions", "eligibility"}),
)
_PERSON = _table(
    types.Person,
    special={
        "relationship": Served(
            lambda p: p["family"]["relationship"], None, ("family", "relationship")
        ),
        "family": Served(lambda p: p, None, ()),  # its fields read the person's answer
        "decisions": Served(_strict("decisions"), None, ("decisions",)),
        "eligibility": Served(_strict("decisions"), None, ("decisions",)),  # deprecated name
    },
    subs={
        "family": _FAMILY,
        "identity": _IDENTITY,
        "attributes": _PERSON_ATTRIBUTES,
        "health": _HEALTH,
        "decisions": _DECISION,
        "eligibility": _DECISION,
    },
    found_only=True,
)


DECISIONS = frozenset({"decisions", "eligibility"})  # the field and its deprecated name


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
        served = table.get(name)
        if served is None:
            raise _NotCompiled
        sub = served.table
        children = None if sub is None else _nodes(field.selection_set, sub)
        out.append(Node(key, served.get, children))
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
            isinstance(f, FieldNode) and f.name.value in DECISIONS
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
