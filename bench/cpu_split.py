"""Where a command's time goes: its own CPU (with its children) and its PostgreSQL backends'.

    python -m bench.cpu_split DATABASE -- tepat eligibility materialize --jobs 1 ...

Runs the command, sampling every 20 ms the CPU times of the command's processes and of every
PostgreSQL backend connected to DATABASE (found by its process title, on this machine), and
prints the wall seconds, the client's CPU seconds and the server's. A diagnosis, not a target:
other sessions on the same database are counted too, so run it alone.
"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        raise SystemExit(__doc__)
    database, command = sys.argv[1], sys.argv[3:]
    backends: dict[int, float] = {}
    own: dict[int, float] = {}
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    parent = psutil.Process(proc.pid)
    while proc.poll() is None:
        for p in psutil.process_iter(["cmdline"]):
            title = " ".join(p.info["cmdline"] or [])
            if title.startswith("postgres:") and f" {database} " in title:
                try:
                    cpu = p.cpu_times()
                    backends[p.pid] = cpu.user + cpu.system
                except psutil.Error:
                    pass
        try:
            for p in [parent, *parent.children(recursive=True)]:
                cpu = p.cpu_times()
                own[p.pid] = cpu.user + cpu.system
        except psutil.Error:
            pass
        time.sleep(0.02)
    wall = time.perf_counter() - started
    print(
        f"wall {wall:.2f} s, client CPU {sum(own.values()):.2f} s, "
        f"server CPU {sum(backends.values()):.2f} s ({len(backends)} backends)"
    )
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
