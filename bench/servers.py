"""Server processes under test: uvicorn (uvloop, httptools) on loopback, watched with psutil."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Usage:
    """What the server processes used during one measurement."""

    peak_rss_mb: float = 0.0  # the largest single process (a worker), the figure P4 bounds
    peak_total_rss_mb: float = 0.0  # all processes of the server together
    cpu: list[float] = field(default_factory=list)  # per worker, share of one core


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def processes(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    @contextlib.contextmanager
    def watch(self, interval: float = 0.05) -> Iterator[Usage]:
        """Samples RSS every `interval` s while the block runs; CPU per process at the end."""
        usage = Usage()
        stop = threading.Event()
        procs = self.processes()
        cpu0 = {}
        for p in procs:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                cpu0[p.pid] = t.user + t.system
        started = time.perf_counter()

        def sample() -> None:
            while not stop.is_set():
                total = 0
                for p in procs:
                    with contextlib.suppress(psutil.Error):
                        rss = p.memory_info().rss
                        total += rss
                        usage.peak_rss_mb = max(usage.peak_rss_mb, rss / 2**20)
                usage.peak_total_rss_mb = max(usage.peak_total_rss_mb, total / 2**20)
                stop.wait(interval)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield usage
        finally:
            stop.set()
            thread.join()
            wall = time.perf_counter() - started
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    used = (t.user + t.system - cpu0.get(p.pid, 0.0)) / wall
                    # uvicorn's supervisor (with --workers > 1) idles; only the workers count.
                    if used > 0.02 or len(procs) == 1:
                        usage.cpu.append(round(used, 2))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(
    name: str,
    app: str,
    *,
    workers: int,
    env: dict[str, str],
    logdir: Path,
    ready_path: str = "/healthz",
    timeout: float = 60.0,
) -> Server:
    """`uvicorn APP --factory` with the service's server settings; returns once it answers."""
    port = free_port()
    log = logdir / f"{name}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                app,
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            env={**os.environ, **env},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    server = Server(name, proc, port, log)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {log.read_text(errors='replace')[-2000:]}")
        if time.monotonic() > deadline:
            server.stop()
            raise TimeoutError(f"{name} did not start in {timeout:g} s")
        with contextlib.suppress(httpx.HTTPError):
            answered = httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=1).status_code
            if answered < 500 and len(server.processes()) >= (1 if workers == 1 else workers + 1):
                break
        time.sleep(0.1)
    if workers > 1:
        time.sleep(2.0)  # the first worker answered; give the others time to finish startup
    return server
