"""`generate_release`: the public entry point that writes one synthetic DTSEN release folder."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.synth.families import FamilyFactory
from app.synth.population import Identities
from app.synth.reference import DEFAULT_RELEASE, add_months, label_for
from app.synth.release_io import FILE_FORMATS, RELEASE_RE, FileFormat, ReleaseWriter, read_manifest

PROGRESS_EVERY = 10_000  # people between progress callbacks


def parse_release(release: str) -> tuple[str, dt.date]:
    """`YYYY-MM-DD` or `YYYY-MM-DD-rN` -> (release id, cut-off date)."""
    match = RELEASE_RE.match(release)
    if not match:
        raise ValueError(f"release must be YYYY-MM-DD or YYYY-MM-DD-rN, not {release!r}")
    return release, dt.date.fromisoformat(match.group(1))


def generate_release(
    out_dir: Path,
    *,
    people: int,
    seed: int,
    release: str | None = None,
    from_dir: Path | None = None,
    file_format: FileFormat = "csv",
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write a release folder and return its manifest.

    Fresh: exactly `people` people (the last family may be cut short, its head kept).
    With `from_dir`: the next quarter of that release with churn (births, deaths, marriages,
    splits, moves, re-ranking); `people` is ignored there because the size follows the churn,
    and the default release is the previous cut-off + 3 months.
    """
    if file_format not in FILE_FORMATS:
        raise ValueError(f"file_format must be one of {FILE_FORMATS}")
    if from_dir is not None:
        from app.synth.churn import next_quarter

        previous = read_manifest(from_dir)
        if release is None:
            release = add_months(dt.date.fromisoformat(previous["cutoff_date"]), 3).isoformat()
        release_id, cutoff = parse_release(release)
        return next_quarter(
            from_dir, out_dir, release_id, cutoff, seed=seed, file_format=file_format,
            progress=progress,
        )  # fmt: skip
    if people < 1:
        raise ValueError("people must be at least 1")
    release_id, cutoff = parse_release(release or DEFAULT_RELEASE)
    writer = ReleaseWriter(out_dir, file_format)
    rng = random.Random(seed)
    factory = FamilyFactory(rng, cutoff, Identities())
    written = 0
    reported = 0
    while written < people:
        keluarga, members = factory.family()
        if len(members) > people - written:
            del members[people - written :]  # the head is first, so it always survives
        writer.write_family(keluarga, members)
        written += len(members)
        if progress is not None and written - reported >= PROGRESS_EVERY:
            progress(written - reported)
            reported = written
    if progress is not None and written > reported:
        progress(written - reported)
    return writer.finish(
        release_id,
        cutoff.isoformat(),
        label_for(cutoff),
        f"BPS (synthetic: tepat generate, seed {seed})",
    )
