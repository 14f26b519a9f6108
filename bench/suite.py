"""P1-P6 in one run: baselines and the service side by side on one release and one database."""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from app import db
from app.config import Settings
from app.services import receipts, roles
from bench import changes, import_bench, materialize_bench, servers
from bench.common import emit, server_url
from bench.prepare import PURPOSE, Prepared, log, prepare

TARGETS = ("P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9", "P11")
# The lines a complete run prints (some targets have two goals, hence two lines).
LINES = (
    "P1", "P1-p99", "P2", "P3", "P4", "P4-rss", "P5", "P5-rss", "P6", "P7", "P7-rss", "P8",
    "P8-rss", "P9", "P9-rss", "P11",
)  # fmt: skip

GRAPHQL_PERSON = """
query Person($nik: String!, $snapshot: String) {
  person(nik: $nik, snapshot: $snapshot) {
    nik found decile relationship
    family { noKk kodeWilayah }
    identity { name sex birthDate }
    attributes { maritalStatus schoolStatus schoolLevel working }
    health { disability chronicIllness pregnant }
    eligibility {
      program unit eligible recipient level priority
      benefit { monthlyRupiah yearlyRupiah perTrancheRupiah }
      components { nik component yearlyRupiah taken }
    }
  }
}
"""


@dataclass(frozen=True)
class Mode:
    name: str
    people: int  # the release every HTTP target reads
    duration: float  # seconds measured per load, after the warm-up
    warmup: float
    bulk_niks: int  # P4's job size
    import_people: int  # P5's release
    bodies: int  # distinct request bodies per load (P1/P2 single NIK: x 50)
    bulk_limit: float  # seconds P4's job may run; past it the rate is what was answered
    changes_people: int = 100_000  # P8: the size of the first of the two quarters


MODES = {
    "smoke": Mode("smoke", 20_000, 1.0, 0.3, 5_000, 5_000, 4, 30.0, 5_000),
    "quick": Mode("quick", 20_000, 5.0, 1.0, 100_000, 200_000, 40, 60.0, 100_000),
    "full": Mode("full", 1_000_000, 20.0, 3.0, 1_000_000, 1_000_000, 100, 300.0, 1_000_000),
}
# P11's adjacent REST and DCI loads; its ratio is the median pair's.
P11_PAIRS = 3
# The service without receipts, beside "service" in one run (bench.receipts: what they cost).
PLAIN = "service-plain"
CONNECTIONS_SMALL = 32  # P1, P2 (the P1 target: p99 at 32 connections)
CONNECTIONS_BATCH = 8  # P3
BATCH = 1000


class Unavailable(Exception):
    """The endpoint a target needs is absent or broken: the target is reported, not measured."""


@dataclass
class Measured:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    result: dict[str, Any]
    usage: servers.Usage

    def fields(self, prefix: str) -> dict[str, Any]:
        return {
            f"{prefix}_p50_ms": round(self.p50_ms, 2),
            f"{prefix}_p99_ms": round(self.p99_ms, 2),
            f"{prefix}_requests": self.requests,
            f"{prefix}_errors": self.errors,
            f"{prefix}_peak_rss_mb": round(self.usage.peak_rss_mb, 1),
            f"{prefix}_cpu_per_worker": self.usage.cpu,
            f"{prefix}_generator_cpu": round(float(self.result["generator_cpu"]), 2),
        }


def unavailable(target: str, what: str, reason: str) -> dict[str, Any]:
    line = {
        "target": target,
        "what": what,
        "available": False,
        "reason": reason,
        "service": None,
        "baseline": None,
        "ratio": None,
        "goal": None,
        "met": None,
    }
    print(json.dumps(line), flush=True)
    print(f"{target:<7} {what:<58} not available: {reason}", file=sys.stderr)
    return line


SERVICE_LOGIN = "tepat_bench_api"


class Run:
    def __init__(
        self,
        mode: Mode,
        workers: int,
        workdir: Path,
        url: str,
        data: Prepared,
        *,
        receipts: bool = True,
        jobs: int | None = None,
    ) -> None:
        self.mode = mode
        self.jobs = jobs
        self.receipts = receipts
        self.workers = workers
        self.workdir = workdir
        self.url = url
        self.data = data
        self.logdir = workdir / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.servers: dict[str, servers.Server] = {}
        self.cache: dict[str, Measured] = {}
        self.lines: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self.headers = {
            "Authorization": f"Bearer {data.api_key}",
            "X-Purpose": PURPOSE,
            "Content-Type": "application/json",
        }
        self.rng = random.Random(7)
        self.extra_env: dict[str, str] = {}  # more settings of the service (bench.replicas)

    # --- servers ------------------------------------------------------------------------------

    def server(self, name: str) -> servers.Server:
        """Started on first use, kept for the run (idle servers cost no CPU)."""
        if name in self.servers:
            return self.servers[name]
        common = {"PYTHONUNBUFFERED": "1"}
        if name in ("service", PLAIN):
            signs = self.receipts and name == "service"
            env = {
                **common,
                # As production runs: a login role that cannot rewrite the audit trail, and a
                # receipt signing key of its own.
                "TEPAT_DATABASE_URL": self.service_login(),
                "TEPAT_AUDIT_SIGNING_KEY": str(self.signing_key()),
                "TEPAT_ENV": "production",
                "TEPAT_AUDIT_HMAC_KEY": "bench-only-audit-key-not-a-secret",
                # The rate limiter would cap P3/P4 at 20,000 NIK/s; the bench measures the
                # service's capacity, not the per-client limit (tested in tests/).
                "TEPAT_RATE_LIMIT_NIKS_PER_SECOND": "0",
                "TEPAT_AUDIT_RECEIPTS": "true" if signs else "false",
                # Each process runs a bulk job worker, as `tepat serve` does (P9).
                "TEPAT_JOBS_WORKER": "true",
                **self.extra_env,
            }
            app, ready = "app.main:create_app", "/healthz"
        elif name == "fixed":
            app, ready, env = "bench.baselines:fixed_app", "/", common
        else:
            env = {
                **common,
                "BENCH_DSN": db.asyncpg_dsn(self.url),
                "BENCH_SNAPSHOT_KEY": str(self.data.snapshot_key),
                "BENCH_POOL_SIZE": str(Settings().db_pool_size),
            }
            app, ready = "bench.baselines:any_app", "/"
        server = servers.start(
            name, app, workers=self.workers, env=env, logdir=self.logdir, ready_path=ready
        )
        self.servers[name] = server
        return server

    def service_login(self) -> str:
        """The bench database's URL as the service's own login role (`tepat db service-role`)."""

        async def make() -> None:
            conn = await asyncpg.connect(db.asyncpg_dsn(self.url))
            try:
                await roles.make_service_login(conn, SERVICE_LOGIN, None)
            finally:
                await conn.close()

        asyncio.run(make())
        url = db.sqlalchemy_url(self.url).set(username=SERVICE_LOGIN, password=None)
        return url.render_as_string(hide_password=False)

    def signing_key(self) -> Path:
        receipts.dev_key(self.workdir)  # made once, kept with the bench's releases
        return self.workdir / receipts.DEV_KEY_FILE

    def stop_all(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.servers.clear()

    # --- requests -----------------------------------------------------------------------------

    def niks(self, n: int) -> list[str]:
        """n NIKs of the release with NOT_FOUND_SHARE absent ones mixed in."""
        out = []
        for _ in range(n):
            pool = self.data.missing if self.rng.random() < 0.02 else self.data.found
            out.append(pool[self.rng.randrange(len(pool))])
        return out

    def lookup_bodies(self, count: int, size: int) -> list[str]:
        snapshot = self.data.release
        return [
            orjson.dumps({"niks": self.niks(size), "snapshot": snapshot}).decode()
            for _ in range(count)
        ]

    def graphql_bodies(self, count: int) -> list[str]:
        return [
            orjson.dumps(
                {
                    "query": GRAPHQL_PERSON,
                    "variables": {"nik": nik, "snapshot": self.data.release},
                }
            ).decode()
            for nik in self.niks(count)
        ]

    def probe(self, server: str, path: str, body: str, what: str) -> dict[str, Any]:
        """One request before a load: an absent or failing endpoint makes the target unavailable."""
        port = self.server(server).port
        try:
            response = httpx.post(
                f"http://127.0.0.1:{port}{path}", content=body, headers=self.headers, timeout=30
            )
        except httpx.HTTPError as e:
            raise Unavailable(f"{what}: {type(e).__name__}: {e}") from None
        if response.status_code in (404, 405):
            raise Unavailable(f"{what} is absent (POST {path}: {response.status_code})")
        if response.status_code != 200:
            raise Unavailable(f"{what}: {response.status_code} {response.text[:300]}")
        answer: dict[str, Any] = response.json()
        if answer.get("errors"):
            raise Unavailable(f"{what}: {json.dumps(answer['errors'])[:300]}")
        return answer

    def load(
        self, key: str, server: str, path: str, bodies: list[str], connections: int
    ) -> Measured:
        """A bounded load in a separate process; cached so a target's reference is measured once."""
        if key in self.cache:
            return self.cache[key]
        target = self.server(server)
        spec = {
            "kind": "requests",
            "port": target.port,
            "connections": connections,
            "duration": self.mode.duration,
            "warmup": self.mode.warmup,
            "requests": [
                {"method": "POST", "path": path, "headers": self.headers, "body": b} for b in bodies
            ],
        }
        result = self._run_load(spec, target, self.mode.warmup + self.mode.duration + 60)
        measured = Measured(
            rps=float(result["rps"]),
            p50_ms=float(result["p50_ms"]),
            p99_ms=float(result["p99_ms"]),
            requests=int(result["requests"]),
            errors=int(result["requests"]) - int(result["ok"]),
            result=result,
            usage=result.pop("usage"),
        )
        if measured.requests == 0 or measured.errors == measured.requests:
            raise Unavailable(f"{key}: no successful request: {result['first_error'][:300]}")
        if measured.errors > 0.01 * measured.requests:
            self.failures.append(f"{key}: {measured.errors} of {measured.requests} failed")
        log(
            f"{key:<9} {measured.rps:>9,.0f} req/s  p50 {measured.p50_ms:6.2f} ms  "
            f"p99 {measured.p99_ms:6.2f} ms  errors {measured.errors}  "
            f"server cpu {measured.usage.cpu}  generator cpu {result['generator_cpu']:.2f}"
        )
        self.cache[key] = measured
        return measured

    def _run_load(self, spec: dict[str, Any], target: servers.Server, timeout: float) -> Any:
        with tempfile.NamedTemporaryFile("w", suffix=".json", dir=self.logdir, delete=False) as f:
            json.dump(spec, f)
        try:
            with target.watch() as usage:
                done = subprocess.run(
                    [sys.executable, "-m", "bench.load", f.name],
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    check=False,
                )
        finally:
            os.unlink(f.name)
        if done.returncode != 0:
            raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
        result = json.loads(done.stdout)
        result["usage"] = usage
        return result

    # --- targets ------------------------------------------------------------------------------

    def single_bodies(self) -> list[str]:
        return self.lookup_bodies(self.mode.bodies * 50, 1)

    def rest_single(self) -> Measured:
        bodies = self.single_bodies()
        self.probe("service", "/v1/people/lookup", bodies[0], "REST people/lookup")
        return self.load("rest-1", "service", "/v1/people/lookup", bodies, CONNECTIONS_SMALL)

    def any_batch(self) -> Measured:
        bodies = self.lookup_bodies(self.mode.bodies, BATCH)
        return self.load("any-1000", "any", "/people", bodies, CONNECTIONS_BATCH)

    def p1(self) -> None:
        fixed = self.load("fixed", "fixed", "/fixed", self.single_bodies(), CONNECTIONS_SMALL)
        rest = self.rest_single()
        # Context, not a goal: what one asyncpg query per request costs on this machine.
        any1 = self.load("any-1", "any", "/people", self.single_bodies(), CONNECTIONS_SMALL)
        extra = {
            "workers": self.workers,
            "connections": CONNECTIONS_SMALL,
            **rest.fields("service"),
            **fixed.fields("baseline"),
            "any1_req_s": round(any1.rps, 1),
            "any1_p99_ms": round(any1.p99_ms, 2),
            "service_vs_any1": round(rest.rps / any1.rps, 3),
        }
        what = f"REST 1 NIK, 4 decisions, auth+audit, req/s vs bare FastAPI ({self.workers}w)"
        self.lines.append(emit("P1", what, rest.rps, fixed.rps, 0.5, unit="req/s", extra=extra))
        self.lines.append(
            emit(
                "P1-p99",
                f"REST 1 NIK p99 latency at {CONNECTIONS_SMALL} connections",
                rest.p99_ms,
                25,
                None,
                unit="ms",
                lower_is_better=True,
                extra={"service_p50_ms": round(rest.p50_ms, 2)},
            )
        )

    def p2(self) -> None:
        what = f"GraphQL person + eligibility req/s vs P1 REST ({self.workers}w)"
        bodies = self.graphql_bodies(self.mode.bodies * 50)
        try:
            answer = self.probe("service", "/graphql", bodies[0], "GraphQL /graphql")
            if not isinstance(answer.get("data", {}).get("person"), dict):
                raise Unavailable(f"GraphQL answered without data.person: {str(answer)[:300]}")
            rest = self.rest_single()
            gql = self.load("graphql-1", "service", "/graphql", bodies, CONNECTIONS_SMALL)
        except Unavailable as e:
            self.lines.append(unavailable("P2", what, str(e)))
            return
        extra = {"workers": self.workers, **gql.fields("service"), **rest.fields("baseline")}
        self.lines.append(emit("P2", what, gql.rps, rest.rps, 0.5, unit="req/s", extra=extra))

    def dci_bodies(self, count: int) -> list[str]:
        """DCI sync searches of one NIK each (idtype-value), the same NIKs as P1's."""
        out = []
        for nik in self.niks(count):
            item = {
                "reference_id": "r1",
                "timestamp": "2026-03-01T09:30:00+07:00",
                "search_criteria": {
                    "query_type": "idtype-value",
                    "query": {"type": "NIK", "value": nik},
                },
            }
            header = {
                "message_id": "m1",
                "message_ts": "2026-03-01T09:30:00+07:00",
                "action": "search",
                "sender_id": "bench",
                "total_count": 1,
                "meta": {"snapshot": self.data.release},
            }
            message = {"transaction_id": "t1", "search_request": [item]}
            out.append(orjson.dumps({"header": header, "message": message}).decode())
        return out

    def p11(self) -> None:
        what = f"DCI sync/search 1 NIK req/s vs REST people/lookup, paired ({self.workers}w)"
        bodies = self.dci_bodies(self.mode.bodies * 50)
        rest_bodies = self.single_bodies()
        path = "/dci/registry/sync/search"
        rest_path = "/v1/people/lookup"
        try:
            answer = self.probe("service", path, bodies[0], "DCI sync/search")
            if answer.get("message", {}).get("search_response", [{}])[0].get("status") != "succ":
                raise Unavailable(f"DCI search not answered: {str(answer)[:300]}")
            self.probe("service", rest_path, rest_bodies[0], "REST people/lookup")
            # The two faces in adjacent loads, in turn, the order swapped pair by pair: a shared
            # 2-core machine's speed drifts by a third within a minute (bench/README.md), which
            # set P1's REST load, a minute earlier, against this one.
            pairs: list[tuple[Measured, Measured]] = []
            for i in range(P11_PAIRS):
                faces = ("rest", "dci") if i % 2 == 0 else ("dci", "rest")
                got = {
                    face: self.load(
                        f"p11-{face}-{i}",
                        "service",
                        path if face == "dci" else rest_path,
                        bodies if face == "dci" else rest_bodies,
                        CONNECTIONS_SMALL,
                    )
                    for face in faces
                }
                pairs.append((got["dci"], got["rest"]))
        except Unavailable as e:
            self.lines.append(unavailable("P11", what, str(e)))
            return
        ratios = [dci.rps / rest.rps for dci, rest in pairs]
        dci, rest = pairs[sorted(range(len(pairs)), key=ratios.__getitem__)[len(pairs) // 2]]
        extra: dict[str, Any] = {
            "workers": self.workers,
            "pairs": [
                {"dci_req_s": round(d.rps, 1), "rest_req_s": round(r.rps, 1), "ratio": round(x, 3)}
                for (d, r), x in zip(pairs, ratios, strict=True)
            ],
            **dci.fields("service"),
            **rest.fields("baseline"),
        }
        p1 = self.cache.get("rest-1")
        if p1 is not None:  # the figure as P11 was first defined: against P1's REST load
            extra["vs_p1_rest"] = round(dci.rps / p1.rps, 3)
        self.lines.append(emit("P11", what, dci.rps, rest.rps, 0.7, unit="req/s", extra=extra))

    def p3(self) -> None:
        bodies = self.lookup_bodies(self.mode.bodies, BATCH)
        self.probe("service", "/v1/people/lookup", bodies[0], "REST people/lookup")
        rest = self.load("rest-1000", "service", "/v1/people/lookup", bodies, CONNECTIONS_BATCH)
        base = self.any_batch()
        extra = {
            "workers": self.workers,
            "connections": CONNECTIONS_BATCH,
            "niks_per_request": BATCH,
            **rest.fields("service"),
            **base.fields("baseline"),
        }
        what = f"people/lookup 1,000 NIKs NIK/s vs one ANY() query ({self.workers}w)"
        self.lines.append(
            emit("P3", what, rest.rps * BATCH, base.rps * BATCH, 0.5, unit="NIK/s", extra=extra)
        )

    def p4(self) -> None:
        n = self.mode.bulk_niks
        what = f"bulk NDJSON {n:,} NIKs NIK/s vs one ANY() query per 1,000"
        rss_what = f"bulk NDJSON {n:,} NIKs, server peak RSS"
        service = self.server("service")
        try:
            body_file = self.bulk_file(n)
        except (Unavailable, httpx.HTTPError) as e:
            self.lines.append(unavailable("P4", what, str(e)))
            self.lines.append(unavailable("P4-rss", rss_what, str(e)))
            return
        rss_before = max((p.memory_info().rss for p in service.processes()), default=0) / 2**20
        result = self.bulk_stream("service", body_file)
        usage: servers.Usage = result.pop("usage")
        log(f"bulk      {json.dumps(result)}  server cpu {usage.cpu}")
        if result["timed_out"]:
            # Still a figure (NIKs answered per second), flagged: the job did not finish.
            self.failures.append(
                f"P4: the bulk job did not finish in {self.mode.bulk_limit:g} s "
                f"({result['lines']:,} of {n:,} lines answered)"
            )
            n = int(result["lines"])
        elif result["status"] != 200 or not result["complete"]:
            reason = f"bulk job incomplete: status {result['status']}: {result['last_line']}"
            self.failures.append(reason)
            self.lines.append(unavailable("P4", what, reason))
            self.lines.append(unavailable("P4-rss", rss_what, reason))
            return
        base = self.any_batch()
        rate = n / float(result["seconds"])
        extra = {
            "workers": self.workers,
            "niks": n,
            "complete": result["complete"],
            "seconds": result["seconds"],
            "first_byte_s": result["first_byte_s"],
            "summary": result["summary"],
            "service_cpu_per_worker": usage.cpu,
            "generator_cpu": round(float(result["generator_cpu"]), 2),
            **base.fields("baseline"),
        }
        self.lines.append(emit("P4", what, rate, base.rps * BATCH, 0.5, unit="NIK/s", extra=extra))
        self.lines.append(
            emit(
                "P4-rss",
                rss_what,
                usage.peak_rss_mb,
                250,
                None,
                unit="MB",
                lower_is_better=True,
                extra={
                    "rss_before_job_mb": round(rss_before, 1),
                    "peak_total_rss_mb": round(usage.peak_total_rss_mb, 1),
                },
            )
        )

    def p8(self) -> None:
        """The change list between two quarters (POST /v1/changes, read to its summary) against
        the bare FULL OUTER JOIN of the same two decision partitions copied out, same run."""
        pair = changes.prepare_pair(self.url, self.mode.changes_people, self.workdir)
        what = f"change list, {pair.people:,} people in either quarter, vs bare join COPY"
        service = self.server("service")
        body = orjson.dumps({"from": pair.before, "to": pair.after})
        base_seconds, base_bytes = changes.baseline(self.url, pair)  # warms the cache too
        with (
            service.watch() as usage,
            httpx.Client(timeout=600, headers=self.headers) as client,
        ):
            # Best of two, as the baseline: the first also warms the server.
            runs = [self._changes_list(client, service.port, body) for _ in range(2)]
        seconds, size, summary = min(runs, key=lambda run: run[0])
        base_seconds = min(base_seconds, changes.baseline(self.url, pair)[0])  # best of two
        log(
            f"changes   {summary['listed']:,} listed of {pair.people:,} in {seconds:.2f} s "
            f"({size:,} bytes, {len(summary['audit_ids']):,} audit records); bare join "
            f"{base_seconds:.2f} s ({base_bytes:,} bytes); server cpu {usage.cpu}"
        )
        extra = {
            "people": pair.people,
            "listed": summary["listed"],
            "seconds": round(seconds, 3),
            "baseline_seconds": round(base_seconds, 3),
            "answer_bytes": size,
            "baseline_bytes": base_bytes,
            "audit_records": len(summary["audit_ids"]),
            "service_cpu_per_worker": usage.cpu,
        }
        self.lines.append(
            emit(
                "P8",
                what,
                pair.people / seconds,
                pair.people / base_seconds,
                0.5,
                unit="NIK/s",
                extra=extra,
            )
        )
        self.lines.append(
            emit(
                "P8-rss",
                f"change list, {pair.people:,} people, server peak RSS",
                usage.peak_rss_mb,
                250,
                None,
                unit="MB",
                lower_is_better=True,
                extra={"peak_total_rss_mb": round(usage.peak_total_rss_mb, 1)},
            )
        )

    @staticmethod
    def _changes_list(
        client: httpx.Client, port: int, body: bytes
    ) -> tuple[float, int, dict[str, Any]]:
        """One change list read to its summary: (seconds, bytes, the summary)."""
        began = time.perf_counter()
        size, last = 0, b""
        # The client carries the bench client's key, purpose and JSON content type.
        with client.stream("POST", f"http://127.0.0.1:{port}/v1/changes", content=body) as r:
            if r.status_code != 200:
                r.read()
                raise Unavailable(f"POST /v1/changes: {r.status_code} {r.text[:300]}")
            for data in r.iter_bytes():
                size += len(data)
                last = (last + data)[-(1 << 20) :]
        seconds = time.perf_counter() - began
        tail = last.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        summary: dict[str, Any] | None = orjson.loads(tail).get("summary")
        if summary is None:
            raise Unavailable(f"P8: the list ended without its summary: {tail[:300]!r}")
        return seconds, size, summary

    def p9(self) -> None:
        """A bulk job (upload, poll, download) against the stream, same input, same run."""
        n = self.mode.bulk_niks
        what = f"bulk job {n:,} NIKs, upload to last answer byte, vs the stream's wall time"
        rss_what = f"bulk job {n:,} NIKs, server peak RSS"
        service = self.server("service")
        body_file = self.workdir / f"bulk-{n}.ndjson"
        if not body_file.exists():
            with body_file.open("w") as f:
                for nik in self.niks(n):
                    f.write(f'{{"nik": "{nik}"}}\n')
        path = f"/v1/bulk/eligibility?snapshot={self.data.release}"
        spec = {
            "kind": "bulk",
            "port": service.port,
            "path": path,
            "headers": {k: v for k, v in self.headers.items() if k != "Content-Type"},
            "body_file": str(body_file),
            "limit": self.mode.bulk_limit,
        }
        stream = self._run_load(spec, service, timeout=self.mode.bulk_limit + 60)
        stream.pop("usage")
        if stream["timed_out"] or not stream["complete"]:
            raise Unavailable(f"P9: the stream did not complete: {stream['last_line']}")
        base = f"http://127.0.0.1:{service.port}/v1/bulk/jobs"
        # Like for like: the stream's client (bench/load.py) asks for no compression, so the
        # job's does not either (httpx would ask gzip, and the server would gzip ~766 MB).
        headers = {k: v for k, v in self.headers.items() if k != "Content-Type"}
        headers["Accept-Encoding"] = "identity"

        def pieces() -> Iterator[bytes]:
            with body_file.open("rb") as f:
                while data := f.read(256 * 1024):
                    yield data

        with service.watch() as usage, httpx.Client(timeout=60) as client:
            began = time.perf_counter()
            r = client.post(
                f"{base}?snapshot={self.data.release}",
                content=pieces(),
                headers={**headers, "Content-Type": "application/x-ndjson"},
            )
            if r.status_code != 202:
                raise Unavailable(f"POST /v1/bulk/jobs: {r.status_code} {r.text[:300]}")
            uploaded = time.perf_counter() - began
            location = f"http://127.0.0.1:{service.port}{r.headers['location']}"
            # As a client reads a large job: the answers as they are committed (?wait=true).
            size = 0
            tail: collections.deque[bytes] = collections.deque()
            kept = 0
            with client.stream(
                "GET", location + "/results?wait=true", headers=headers, timeout=None
            ) as got:
                for data in got.iter_bytes():
                    size += len(data)
                    # The last ~2 MB (the summary: ~450 B a chunk), without copying them anew
                    # for every piece read.
                    tail.append(data)
                    kept += len(data)
                    while kept - len(tail[0]) >= 2 << 20:
                        kept -= len(tail.popleft())
            last = b"".join(tail)
            job = client.get(location, headers=headers).json()
            answered = (
                dt.datetime.fromisoformat(job["finished_at"])
                - dt.datetime.fromisoformat(job["created_at"])
            ).total_seconds()
            seconds = time.perf_counter() - began
        if job["status"] != "succeeded" or b'"summary"' not in last:
            raise Unavailable(f"P9: the job ended {job['status']}: {job.get('error')}")
        log(
            f"bulk job  upload {uploaded:.1f} s, answered at {answered:.1f} s, downloaded "
            f"{size:,} bytes at {seconds:.1f} s; stream {stream['seconds']:.1f} s; "
            f"server cpu {usage.cpu}"
        )
        extra = {
            "niks": n,
            "job_seconds": round(seconds, 2),
            "upload_seconds": round(uploaded, 2),
            "answered_seconds": round(answered, 2),
            "stream_seconds": stream["seconds"],
            "answer_bytes": size,
            "job_lines_per_second": job["progress"]["lines_per_second"],
            "service_cpu_per_worker": usage.cpu,
        }
        self.lines.append(
            emit(
                "P9",
                what,
                n / seconds,
                n / float(stream["seconds"]),
                0.7,
                unit="NIK/s",
                extra=extra,
            )
        )
        self.lines.append(
            emit(
                "P9-rss",
                rss_what,
                usage.peak_rss_mb,
                250,
                None,
                unit="MB",
                lower_is_better=True,
                extra={"peak_total_rss_mb": round(usage.peak_total_rss_mb, 1)},
            )
        )

    def bulk_path(self) -> str:
        return f"/v1/bulk/eligibility?snapshot={self.data.release}"

    def bulk_file(self, n: int, server: str = "service") -> Path:
        """n NIKs as the bulk NDJSON body, once the endpoint answered a probe of 3."""
        probe = httpx.post(
            f"http://127.0.0.1:{self.server(server).port}{self.bulk_path()}",
            content="\n".join(f'{{"nik": "{x}"}}' for x in self.niks(3)),
            headers={**self.headers, "Content-Type": "application/x-ndjson"},
            timeout=30,
        )
        if probe.status_code != 200:
            raise Unavailable(f"POST /v1/bulk/eligibility: {probe.status_code} {probe.text[:300]}")
        body_file = self.workdir / f"bulk-{n}.ndjson"
        with body_file.open("w") as f:
            for nik in self.niks(n):
                f.write(f'{{"nik": "{nik}"}}\n')
        return body_file

    def bulk_stream(self, server: str, body_file: Path) -> Any:
        """The bulk load (P4) against `server`: bench.load's result and the server's usage."""
        target = self.server(server)
        spec = {
            "kind": "bulk",
            "port": target.port,
            "path": self.bulk_path(),
            "headers": {k: v for k, v in self.headers.items() if k != "Content-Type"},
            "body_file": str(body_file),
            "limit": self.mode.bulk_limit,
        }
        return self._run_load(spec, target, timeout=self.mode.bulk_limit + 60)

    def p5_p6(self) -> None:
        self.stop_all()  # the import has the machine to itself, as the baseline COPY does
        self.lines.extend(import_bench.run(self.url, self.mode.import_people, self.workdir))

    def p7(self) -> None:
        self.stop_all()  # materialize and its baseline have the machine to themselves
        self.lines.extend(
            materialize_bench.run(self.url, self.mode.import_people, self.workdir, self.jobs)
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=(__doc__ or "").splitlines()[0]
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="CI scale (default): ~2-3 minutes")
    size.add_argument("--full", action="store_true", help="1 M people, 20 s per load")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, ~1 s per load; exit 1 unless every target printed a figure",
    )
    parser.add_argument("--only", default="", help="comma-separated targets, e.g. P1,P3")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers, every server")
    parser.add_argument("--people", type=int, default=0, help="override the release size")
    parser.add_argument(
        "--jobs", type=int, default=0, help="P7's materialize processes (default: the cores)"
    )
    parser.add_argument("--duration", type=float, default=0, help="override seconds per load")
    parser.add_argument("--workdir", type=Path, default=Path(".tepat/bench"))
    parser.add_argument(
        "--no-receipts",
        action="store_true",
        help="the service signs no receipts (TEPAT_AUDIT_RECEIPTS=false): what receipts cost",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = MODES["smoke" if args.smoke else "full" if args.full else "quick"]
    if args.people or args.duration:
        mode = Mode(
            mode.name,
            args.people or mode.people,
            args.duration or mode.duration,
            mode.warmup,
            mode.bulk_niks,
            mode.import_people,
            mode.bodies,
            mode.bulk_limit,
            mode.changes_people,
        )
    only = [t.strip().upper() for t in args.only.split(",") if t.strip()] or list(TARGETS)
    unknown = sorted(set(only) - set(TARGETS))
    if unknown:
        raise SystemExit(f"unknown targets {unknown}; choose from {', '.join(TARGETS)}")

    started = time.perf_counter()
    url = server_url(Settings())
    args.workdir.mkdir(parents=True, exist_ok=True)
    log(
        f"mode {mode.name}: {mode.people:,} people, {mode.duration:g} s per load, "
        f"{args.workers} worker(s), targets {','.join(only)}, database "
        f"{db.sqlalchemy_url(url).render_as_string(hide_password=True)}"
    )
    data = prepare(url, mode.people, args.workdir)
    log(f"prepared {data.release} in {time.perf_counter() - started:.1f} s")
    run = Run(
        mode,
        args.workers,
        args.workdir,
        url,
        data,
        receipts=not args.no_receipts,
        jobs=args.jobs or None,
    )
    steps = {
        "P1": run.p1, "P2": run.p2, "P3": run.p3, "P4": run.p4, "P8": run.p8, "P9": run.p9,
        "P11": run.p11,
    }  # fmt: skip
    try:
        for target in ("P1", "P2", "P3", "P4", "P8", "P9", "P11"):
            if target in only:
                try:
                    steps[target]()
                except (Unavailable, RuntimeError, subprocess.TimeoutExpired) as e:
                    # One broken target must not cost the others their figures.
                    run.failures.append(f"{target}: {e}")
                    run.lines.append(unavailable(target, "(see reason)", str(e)[-500:]))
        if "P5" in only or "P6" in only:
            run.p5_p6()
        if "P7" in only:
            run.p7()
    finally:
        run.stop_all()

    expected = [line for line in LINES if line.split("-")[0] in only]
    printed = {line["target"] for line in run.lines if line.get("available", True)}
    missing = [t for t in expected if t not in printed]
    log(f"done in {time.perf_counter() - started:.0f} s")
    for failure in run.failures:
        log(f"problem: {failure}")
    if missing:
        log(f"no figure for: {', '.join(missing)}")
    if args.smoke and (missing or run.failures):
        return 1
    return 0
