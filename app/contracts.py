"""The public contracts as committed files: `python -m app.contracts [--check]`.

Writes openapi.json, schema.graphql and docs/purposes.md (the purpose-code catalogue) from
the code; with --check, exits 1 and shows a diff
when a committed file differs from what the code generates.

Operation ids are what generated clients name their functions after, so they are held apart:
each must be snake_case verb_noun (`lookup_people`, `get_snapshot`), unique, and an operation
the committed openapi.json already publishes keeps its id. Renaming one fails both the check
and the write, unless `--rename-operations` says it is meant (a breaking change for every
generated client: docs/api.md).
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent


def openapi_json() -> str:
    from app.config import Settings
    from app.main import create_app

    spec = create_app(Settings(env="dev", database_url="postgresql://unused/unused")).openapi()
    return orjson.dumps(spec, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"


def schema_sdl() -> str:
    from app.graphql.schema import sdl

    return sdl()


# The first word of an operation id: what the operation does.
VERBS = frozenset(
    {"bulk", "cancel", "check", "create", "delete", "get", "list", "lookup", "prove", "stream",
     "submit", "update", "follow", "download", "verify", "poll"}
)  # fmt: skip
OPERATION_ID = re.compile(r"[a-z]+(?:_[a-z0-9]+)+")


def operation_ids(spec: dict[str, Any]) -> dict[str, str]:
    """`METHOD /path` -> operationId, for every operation of a document."""
    return {
        f"{method.upper()} {path}": op.get("operationId", "")
        for path, ops in spec.get("paths", {}).items()
        for method, op in ops.items()
        if isinstance(op, dict)
    }


def check_operation_ids(committed: dict[str, Any], fresh: dict[str, Any]) -> list[str]:
    """What is wrong with the fresh document's operation ids (empty: nothing)."""
    problems = []
    ids = operation_ids(fresh)
    seen: dict[str, str] = {}
    for where, op_id in ids.items():
        if not OPERATION_ID.fullmatch(op_id) or op_id.split("_", 1)[0] not in VERBS:
            problems.append(
                f"{where}: operation id {op_id!r} is not snake_case verb_noun (a verb of "
                f"{', '.join(sorted(VERBS))}, then what it acts on): rename the handler"
            )
        if op_id in seen:
            problems.append(f"{where}: operation id {op_id!r} is also {seen[op_id]}'s")
        seen[op_id] = where
    for where, was in operation_ids(committed).items():
        now = ids.get(where)
        if now is not None and now != was:
            problems.append(
                f"{where}: operation id {was!r} became {now!r}; published ids do not change "
                "(generated clients are named after them). Keep the handler's name, or pass "
                "--rename-operations if the break is meant."
            )
    return problems


def purposes_md() -> str:
    from app.catalogue import purposes_md as render

    return render()


CONTRACTS: dict[str, Callable[[], str]] = {
    "openapi.json": openapi_json,
    "schema.graphql": schema_sdl,
    "docs/purposes.md": purposes_md,
}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    failed = False
    openapi_path = ROOT / "openapi.json"
    committed = orjson.loads(openapi_path.read_bytes()) if openapi_path.exists() else {}
    found = check_operation_ids(committed, orjson.loads(openapi_json()))
    if "--rename-operations" in argv:
        found = [f for f in found if "became" not in f]
    if found:
        print("operation ids:\n  " + "\n  ".join(found))
        return 1
    for name, render in CONTRACTS.items():
        path = ROOT / name
        fresh = render()
        if check:
            current = path.read_text() if path.exists() else ""
            if current != fresh:
                failed = True
                sys.stdout.writelines(
                    list(
                        difflib.unified_diff(
                            current.splitlines(keepends=True),
                            fresh.splitlines(keepends=True),
                            f"{name} (committed)",
                            f"{name} (from the code)",
                            n=2,
                        )
                    )[:200]
                )
                print(
                    f"\n{name} differs from the code: run `python -m app.contracts` and commit it."
                )
        else:
            path.write_text(fresh)
            print(f"wrote {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
