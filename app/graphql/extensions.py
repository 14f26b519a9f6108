"""Schema extensions: limits checked before execution, and access control plus audit around it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from graphql import ExecutionResult as CoreResult
from graphql.validation import ASTValidationRule, NoSchemaIntrospectionCustomRule
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, SchemaExtension
from strawberry.extensions.max_aliases import create_validator as aliases_rule
from strawberry.extensions.query_depth_limiter import create_validator as depth_rule
from strawberry.types import ExecutionResult

from app.graphql.context import GraphContext
from app.graphql.documents import ParseCache, ValidateCache
from app.graphql.permissions import REQUIREMENTS

# The deepest useful query is people > family > members > eligibility > criteria > observed.
MAX_DEPTH = 6
MAX_ALIASES = 10
# A query spelling out 1,000 NIKs inline would pass 2,000 tokens: lists go in variables.
MAX_TOKENS = 2000

# The rules are classes made once: ValidationCache keys on the rule tuple, so a new class per
# request (what QueryDepthLimiter/MaxAliasesLimiter build in __init__) would never hit.
LIMIT_RULES: list[type[ASTValidationRule]] = [
    depth_rule(MAX_DEPTH, None, None),
    aliases_rule(MAX_ALIASES),
]


class Limits(AddValidationRules):
    """Depth and alias limits as validation rules: a document over them never executes."""

    def __init__(self) -> None:
        super().__init__(LIMIT_RULES)


class NoIntrospection(AddValidationRules):
    def __init__(self) -> None:
        super().__init__([NoSchemaIntrospectionCustomRule])


class Access(SchemaExtension):
    """The one place for who may run a document and what its answer leaves behind.

    Before execution: a document selecting personal fields needs a valid key, a registered
    purpose and every field group it selects (refused as a whole, before any SQL). After
    execution: the read connection is returned, then the audit record is written and must be
    durable before the answer leaves; `extensions.meta` pins the answer.
    """

    async def on_execute(self) -> AsyncIterator[None]:
        ec = self.execution_context
        context = ec.context
        if isinstance(context, GraphContext) and ec.graphql_document is not None:
            needs = REQUIREMENTS.of(ec.schema._schema, ec.query or "", ec.graphql_document)
            if needs.personal:
                await context.authorize(needs.groups)
        yield

    async def on_operation(self) -> AsyncIterator[None]:
        context = self.execution_context.context
        if not isinstance(context, GraphContext):
            yield
            return
        try:
            yield
        finally:
            await context.session.close()
        result = self.execution_context.result
        if isinstance(result, CoreResult | ExecutionResult):
            await context.record(result.data)

    def get_results(self) -> dict[str, Any]:
        context = self.execution_context.context
        if isinstance(context, GraphContext):
            return {"meta": context.meta}
        return {}


def extensions(production: bool) -> list[Callable[[], SchemaExtension] | type[SchemaExtension]]:
    """Factories: a fresh instance per request (the caches, app.graphql.documents, are
    module-level: keyed by the document's hash, bounded in bytes)."""
    out: list[Callable[[], SchemaExtension] | type[SchemaExtension]] = [
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
        ParseCache,
        Limits,
    ]
    if production:
        out.append(NoIntrospection)
    out += [ValidateCache, Access]
    return out
