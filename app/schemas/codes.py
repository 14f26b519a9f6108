"""The code tables (app.codes) as integer enums of the contract: each a named schema with its
codes (`enum`), their names for generated clients (`x-enum-varnames`) and their meanings in
English and Indonesian (`description`). Answers carry the bare integers."""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING, Any

from pydantic import GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from app import codes
from app.codes import CodeTable


class CodedEnum(IntEnum):
    """Base of the code tables' enums; its schema names and describes every code."""

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        table = TABLE_OF[cls.__name__]
        target["description"] = table.describe()
        target["x-enum-varnames"] = [c.name for c in table.codes]
        target["x-enum-descriptions"] = [f"{c.english} ({c.indonesian})" for c in table.codes]
        return schema


def _enum(table: CodeTable) -> Any:
    make: Any = CodedEnum  # the functional API: Enum(name, members)
    return make(table.title, [(c.name, c.value) for c in table.codes])


TABLE_OF: dict[str, CodeTable] = {t.title: t for t in codes.CODE_TABLES}

# Built from the tables at import; to the type checker, the integers they are.
if TYPE_CHECKING:
    HomeOwnership = int
    DrinkingWater = int
    Toilet = int
    Lighting = int
    Relationship = int
    Sex = int
    MaritalStatus = int
    SchoolStatus = int
    Disability = int
else:
    HomeOwnership = _enum(codes.HOME_OWNERSHIP)
    DrinkingWater = _enum(codes.DRINKING_WATER)
    Toilet = _enum(codes.TOILET)
    Lighting = _enum(codes.LIGHTING)
    Relationship = _enum(codes.RELATIONSHIP)
    Sex = _enum(codes.SEX)
    MaritalStatus = _enum(codes.MARITAL_STATUS)
    SchoolStatus = _enum(codes.SCHOOL_STATUS)
    Disability = _enum(codes.DISABILITY)
