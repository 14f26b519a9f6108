"""Bulk jobs: upload a file of NIKs of any size, wait for it, download the answers (resumable).
Change lists run as jobs the same way (`submit_changes`, `run_changes`).

For clients that cannot read while they send (the streaming endpoint's requirement), or jobs that
must survive a deploy or a network cut: the job lives on the server, its answers are kept for
days, and a cut download resumes where the file ends.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import httpx

from tepat_client import receipts
from tepat_client._client import TepatError, raise_for_problem

ENDED = ("succeeded", "failed", "cancelled")
Progress = Callable[[Mapping[str, Any]], None]


class JobFailed(TepatError):
    """The job ended `failed` or `cancelled`: its status document says why."""


def _media_type(path: Path) -> str:
    return "text/csv" if path.name.lower().endswith(".csv") else "application/x-ndjson"


def _progress_printer() -> tuple[Progress, Callable[[], None]]:
    """A rich progress bar when rich is installed, else one line on stderr now and then."""
    try:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    except ImportError:
        last = [0.0]

        def line(job: Mapping[str, Any]) -> None:
            now = time.monotonic()
            if now - last[0] < 5 and job.get("status") not in ENDED:
                return
            last[0] = now
            p = job.get("progress") or {}
            done = (
                f"{p.get('answered', 0):,} people listed"
                if job.get("kind") == "changes"
                else f"{p.get('answered', 0):,} of {p.get('lines_read', 0):,} lines answered"
            )
            print(f"job {job.get('status')}: {done}", file=sys.stderr)

        return line, lambda: None

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} lines"),
        TimeRemainingColumn(),
    )
    task = bar.add_task("bulk job", total=None)
    bar.start()

    def update(job: Mapping[str, Any]) -> None:
        p = job.get("progress") or {}
        total = (job.get("input") or {}).get("lines") or p.get("lines_read") or None
        what = "bulk job"
        if job.get("kind") == "changes":  # a list's length is known only at its end
            total = p.get("answered") if job.get("status") in ENDED else None
            what = "change list job (people listed)"
        bar.update(
            task,
            completed=p.get("answered", 0),
            total=total,
            description=f"{what} {job.get('status')}",
        )

    return update, bar.stop


class Jobs:
    """`tepat.jobs`: the bulk job resource (`/v1/bulk/jobs`)."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def submit(
        self,
        source: str | os.PathLike[str] | bytes | Iterable[bytes],
        *,
        media_type: str | None = None,
        snapshot: str | None = None,
        rule_set: str | None = None,
        programs: Iterable[str] | None = None,
        explain: bool = False,
    ) -> dict[str, Any]:
        """Upload a file (a path: streamed, never read whole into memory), bytes or an iterable
        of byte pieces; the job's status document (its `id`, `status`, `input.sha256`)."""
        params: dict[str, Any] = {"explain": "true"} if explain else {}
        if snapshot:
            params["snapshot"] = snapshot
        if rule_set:
            params["rule_set"] = rule_set
        if programs:
            params["programs"] = ",".join(programs)
        f: IO[bytes] | None = None
        content: Any
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            media_type = media_type or _media_type(path)
            f = path.open("rb")
            content = f
        else:
            content = source
        try:
            r = self.http.post(
                "/v1/bulk/jobs",
                content=content,
                params=params,
                headers={"Content-Type": media_type or "application/x-ndjson"},
                timeout=httpx.Timeout(None, connect=10.0),
            )
        finally:
            if f is not None:
                f.close()
        raise_for_problem(r)
        job: dict[str, Any] = r.json()
        return job

    def submit_changes(
        self,
        from_snapshot: str,
        to_snapshot: str,
        *,
        rule_set: str | None = None,
        programs: Iterable[str] | None = None,
        kinds: Iterable[str] | None = None,
        kode_wilayah: str | None = None,
    ) -> dict[str, Any]:
        """`POST /v1/changes/jobs`: the change list between two releases as a job (kind
        `changes`); its status document. Then `wait` and `download` as any job: the NDJSON
        is the list `Tepat.changes` streams (in NIK order), `media_type="text/csv"` the
        mutation list (nik, program, change, reasons, effective_date)."""
        body: dict[str, Any] = {"from": from_snapshot, "to": to_snapshot}
        optional = {
            "rule_set": rule_set,
            "programs": list(programs) if programs else None,
            "kinds": list(kinds) if kinds else None,
            "kode_wilayah": kode_wilayah,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        r = self.http.post("/v1/changes/jobs", json=body)
        raise_for_problem(r)
        job: dict[str, Any] = r.json()
        return job

    def run_changes(
        self,
        from_snapshot: str,
        to_snapshot: str,
        out: str | os.PathLike[str],
        *,
        media_type: str = "application/x-ndjson",
        progress: bool | Progress = False,
        poll: float = 2.0,
        **filters: Any,
    ) -> dict[str, Any]:
        """submit_changes, wait and download in one call; the final status document.
        `filters` are submit_changes's (rule_set, programs, kinds, kode_wilayah)."""
        job = self.submit_changes(from_snapshot, to_snapshot, **filters)
        done = self.wait(job["id"], progress=progress, poll=poll)
        self.download(job["id"], out, media_type=media_type)
        return done

    def status(self, job_id: str) -> dict[str, Any]:
        r = self.http.get(f"/v1/bulk/jobs/{job_id}")
        raise_for_problem(r)
        job: dict[str, Any] = r.json()
        return job

    def wait(
        self,
        job_id: str,
        *,
        progress: bool | Progress = False,
        poll: float = 2.0,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Poll until the job ends; its final status document. JobFailed if it failed or was
        cancelled. `progress=True` shows a bar (rich) or stderr lines; a callable gets every
        status document."""
        report: Progress | None
        stop: Callable[[], None] = lambda: None  # noqa: E731
        if progress is True:
            report, stop = _progress_printer()
        else:
            report = progress or None
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                job = self.status(job_id)
                if report is not None:
                    report(job)
                if job["status"] in ENDED:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")
                time.sleep(poll)
        finally:
            stop()
        if job["status"] != "succeeded":
            raise JobFailed(200, {"code": f"job_{job['status']}", "detail": json.dumps(job)})
        return job

    def download(
        self, job_id: str, out: str | os.PathLike[str], *, media_type: str = "application/x-ndjson"
    ) -> Path:
        """Write the answers to `out`. If `out` already holds the start of them (a cut
        download), only the rest is asked for (`Range: bytes=N-`) and appended. NDJSON answers
        are checked to end with the summary line."""
        path = Path(out)
        have = path.stat().st_size if path.exists() else 0
        headers = {"Accept": media_type}
        if have:
            headers["Range"] = f"bytes={have}-"
        with self.http.stream(
            "GET",
            f"/v1/bulk/jobs/{job_id}/results",
            headers=headers,
            timeout=httpx.Timeout(None, connect=10.0),
        ) as r:
            if r.status_code == 416 and have:  # already whole
                return path
            raise_for_problem(r)
            mode = "ab" if r.status_code == 206 else "wb"
            with path.open(mode) as f:
                for piece in r.iter_bytes():
                    f.write(piece)
        if media_type == "application/x-ndjson":
            last = _last_line(path)
            if "summary" not in json.loads(last or b"{}"):
                raise TepatError(200, {"code": "truncated", "detail": "no summary line at the end"})
        return path

    def cancel(self, job_id: str) -> None:
        """Cancel a queued or running job, or delete a finished one with its answers."""
        r = self.http.delete(f"/v1/bulk/jobs/{job_id}")
        raise_for_problem(r)

    def run(
        self,
        source: str | os.PathLike[str] | bytes | Iterable[bytes],
        out: str | os.PathLike[str],
        *,
        progress: bool | Progress = False,
        poll: float = 2.0,
        **options: Any,
    ) -> dict[str, Any]:
        """submit, wait and download in one call; the final status document. `options` are
        submit's (snapshot, rule_set, programs, explain, media_type)."""
        job = self.submit(source, **options)
        done = self.wait(job["id"], progress=progress, poll=poll)
        self.download(job["id"], out)
        return done


def _last_line(path: Path) -> bytes:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 1_000_000))
        tail = f.read().rstrip(b"\n")
    return tail.rsplit(b"\n", 1)[-1]


def verify_file(
    path: str | os.PathLike[str], jwks: Mapping[str, Any], *, chunk: int = receipts.CHUNK_LINES
) -> list[dict[str, Any]]:
    """Every chunk of a downloaded NDJSON answer against the receipts in its summary line
    (`chunk`: lines a chunk; a change list job's is its status's `request.chunk`)."""
    with Path(path).open("rb") as f:
        lines = f.readlines()
    summary = json.loads(lines[-1])["summary"]
    return receipts.verify_chunks(lines[:-1], summary["receipts"], jwks, chunk)
