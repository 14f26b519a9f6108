"""The public contracts as committed files: `python -m app.contracts [--check]`.

Writes openapi.json and schema.graphql from the code; with --check, exits 1 and shows a diff
when a committed file differs from what the code generates.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable
from pathlib import Path

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


CONTRACTS: dict[str, Callable[[], str]] = {
    "openapi.json": openapi_json,
    "schema.graphql": schema_sdl,
}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    failed = False
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
