"""`tepat serve` and `tepat demo`: the API under uvicorn, alone or with everything it needs."""

from __future__ import annotations

import os
import shutil
from typing import Annotated

import typer

from app import logs
from app.config import get_settings


def serve(
    host: Annotated[str | None, typer.Option(help="Default: TEPAT_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Default: TEPAT_PORT")] = None,
    workers: Annotated[int, typer.Option(min=1)] = 1,
    worker: Annotated[
        bool,
        typer.Option(
            help="Run a bulk job worker in each process (else only `tepat worker` runs jobs). "
            "Default: TEPAT_JOBS_WORKER (on)."
        ),
    ] = True,
    graceful_timeout: Annotated[
        float | None,
        typer.Option(
            help="SIGTERM: seconds in-flight requests may finish in. "
            "Default: TEPAT_SHUTDOWN_TIMEOUT (30)"
        ),
    ] = None,
) -> None:
    """Serve the API with uvicorn. SIGTERM stops accepting, lets requests finish, then exits."""
    import uvicorn

    settings = get_settings()
    if not worker:
        os.environ["TEPAT_JOBS_WORKER"] = "false"  # read by each process's settings
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # /metrics sums every process's figures (prometheus-client's multiprocess mode): they
        # share a fresh folder, emptied at each start (docs/operations.md).
        folder = settings.data_dir.expanduser().resolve() / "metrics"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        access_log=False,  # app.main logs requests itself, without identifiers
        log_level=settings.log_level.lower(),
        # uvicorn's own lines (tracebacks too) through the project's formatter and scrubbing.
        log_config=logs.uvicorn_log_config(
            settings.log_level, settings.log_json or settings.is_production
        ),
        lifespan="on",
        # Bounded drain on SIGTERM; the lifespan then flushes the audit writer and closes pools.
        timeout_graceful_shutdown=round(graceful_timeout or settings.shutdown_timeout),
    )


def demo(
    people: Annotated[int, typer.Option(min=100, help="Size of the generated release.")] = 20_000,
    port: Annotated[int | None, typer.Option(help="Default: TEPAT_PORT (8000)")] = None,
    seed: Annotated[int, typer.Option()] = 1,
) -> None:
    """Everything at once: database, a generated release, imported, served with /docs."""
    from app.demo import run_demo

    run_demo(get_settings(), people=people, port=port, seed=seed)
