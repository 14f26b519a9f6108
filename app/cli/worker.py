"""`tepat worker`: a bulk job worker alone (`tepat serve` runs one in each of its processes)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Annotated

import typer

from app import db, logs
from app.cli.common import run
from app.config import Settings
from app.console import err
from app.services.allowance import Allowance
from app.services.audit import AuditWriter, running
from app.services.receipts import open_keyring
from app.services.worker import Worker


def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, help="Jobs at once. Default: TEPAT_JOBS_CONCURRENCY (2)."),
    ] = None,
) -> None:
    """Run bulk jobs from the queue until SIGTERM or SIGINT (a running job stops at its next
    chunk and is queued again; the next worker resumes it there)."""

    async def go(settings: Settings) -> None:
        if concurrency is not None:
            settings = settings.model_copy(update={"jobs_concurrency": concurrency})
        logs.configure(settings.log_level, settings.log_json or settings.is_production)
        url = db.resolve_url(settings)
        engine = db.create_engine(settings, url=url, role=settings.db_role)
        key = settings.audit_hmac_key.get_secret_value().encode()
        keyring = open_keyring(settings) if settings.audit_receipts else None
        try:
            async with running(AuditWriter(engine, key, keyring=keyring)) as audit:
                allowance = Allowance(
                    engine,
                    rate=settings.rate_limit_niks_per_second,
                    burst=settings.rate_limit_burst,
                    lease_seconds=settings.rate_limit_lease_seconds,
                    quota=settings.daily_quota,
                    quota_bulk=settings.daily_quota_bulk,
                )
                job_worker = Worker(settings, url, engine, audit, allowance)
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    with contextlib.suppress(NotImplementedError):
                        loop.add_signal_handler(sig, job_worker.stop.set)
                err.print(
                    f"bulk job worker: {settings.jobs_concurrency} job(s) at once; "
                    "SIGTERM or Ctrl-C to stop"
                )
                await job_worker.run()
        finally:
            await engine.dispose()

    run(go)
