"""Terminal output for the CLI: progress bars on a terminal, silence in a pipe, JSON for machines."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)


def print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:>9,.0f} rows/s" if speed else "", style="cyan")


class RowProgress:
    """One bar per named task (rows, rate, ETA); does nothing when stderr is not a terminal."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}

    def update(self, name: str, done: int, total: int | None = None) -> None:
        if self._progress is None:
            return
        task = self._tasks.get(name)
        if task is None:
            task = self._tasks[name] = self._progress.add_task(name, total=total)
        self._progress.update(task, completed=done, total=total)


@contextmanager
def row_progress(enabled: bool = True) -> Iterator[RowProgress]:
    if not (enabled and err.is_terminal):
        yield RowProgress(None)
        return
    progress = Progress(
        TextColumn("[bold]{task.description:>10}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )
    with progress:
        yield RowProgress(progress)
