"""`tepat generate`: a synthetic DTSEN release."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.markup import escape

from app.console import err, row_progress


def generate(
    out_dir: Annotated[Path, typer.Argument(help="The release folder to write (new or empty).")],
    people: Annotated[int, typer.Option(min=1, help="How many people.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 1,
    release: Annotated[str | None, typer.Option(help="Release id YYYY-MM-DD[-rN].")] = None,
    from_dir: Annotated[
        Path | None, typer.Option("--from", help="A previous release: make the next quarter.")
    ] = None,
    file_format: Annotated[str, typer.Option("--format", help="csv, csv.gz or parquet")] = "csv",
) -> None:
    """Write a synthetic DTSEN release (docs/snapshot-format.md) for demos, tests and benchmarks."""
    from app.synth.generate import generate_release

    if file_format not in ("csv", "csv.gz", "parquet"):
        raise typer.BadParameter("must be csv, csv.gz or parquet", param_hint="--format")
    fmt: Literal["csv", "csv.gz", "parquet"] = file_format  # type: ignore[assignment]
    with row_progress() as progress:
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            progress.update("people", done, None if from_dir else people)

        try:
            manifest = generate_release(
                out_dir,
                people=people,
                seed=seed,
                release=release,
                from_dir=from_dir,
                file_format=fmt,
                progress=tick,
            )
        except ValueError as e:
            err.print(f"[red]error:[/red] {escape(str(e))}")
            raise typer.Exit(2) from None
    files = manifest["files"]
    counts = ", ".join(f"{name}: {f['rows']:,} rows" for name, f in files.items())
    err.print(f"wrote release {manifest['release']} to {out_dir} ({counts})")
