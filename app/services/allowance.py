"""What a client may look up: a NIK rate limit and a daily quota shared by every process.

Both live in one PostgreSQL row per client (client_usage, the initial migration): a token bucket and
the day's count (the day in WIB). No process spends from it directly. Each process LEASES a
slice of permits with one atomic statement (`client_lease`: the row is locked while it settles
what the process gives back, refills the bucket and grants), then spends the slice locally, with
no database round trip, until it is gone or older than `lease_seconds`; the next lease returns
what was left. Concurrent requests of one client that find the slice spent wait for one lease
together. Every permit spent anywhere was first granted by that statement, which grants only
what the bucket and the quota still hold, so the sum over processes stays within the bucket
and the quota whatever the number of processes or workers (docs/quotas.md).

A cost known only after the answer (families/lookup: the members it discloses) is taken with
`debit`, which may run the local slice into debt; the debt is paid at the next lease, before
anything new is granted.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.principal import Principal
from app.errors import ClientSuspended, QuotaExceeded, RateLimited, TepatError, Unavailable
from app.repositories import allowance as repo
from app.resilience import DATABASE_ERRORS

log = logging.getLogger("tepat.allowance")

WIB = dt.timezone(dt.timedelta(hours=7), "WIB")  # Asia/Jakarta: no daylight saving
SUSPENDED = "the client is suspended; an operator must reinstate it (tepat client reinstate)"
# Without a rate limit, a lease takes a slice of the quota at least this large, and at most
# QUOTA_SLICE_MAX (a process that spends faster asks for what it spent in a lease's time).
QUOTA_SLICE = 10_000
QUOTA_SLICE_MAX = 1_000_000


def seconds_until_midnight_wib(now: dt.datetime | None = None) -> int:
    """Whole seconds (at least 1) until the next 00:00 WIB, when daily quotas start again."""
    local = (now or dt.datetime.now(dt.UTC)).astimezone(WIB)
    midnight = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(), WIB)
    return max(1, math.ceil((midnight - local).total_seconds()))


@dataclass(slots=True)
class _Lease:
    """A process's slice of one client's permits."""

    balance: int = 0  # permits left to spend here; negative: a debt to pay at the next lease
    day: dt.date | None = None  # the WIB day the permits were counted on
    expires: float = 0.0  # monotonic: after it, the slice is settled and a new one leased
    refused: str | None = None  # "rate", "quota" or "suspended": the last lease's refusal
    refused_need: int = 0  # requests of at least this many are refused until refused_until
    refused_until: float = 0.0
    inflight: asyncio.Future[None] | None = None  # the lease being taken, shared by waiters
    granted: int = 0  # the last slice's size and when it was taken: this process's demand
    taken_at: float | None = None
    # What the last lease said of the client's whole allowance, for the RateLimit headers: the
    # bucket after it (monotonic time `seen_at`), the day's count, when the day ends (WIB).
    bucket: float = 0.0
    used: int = 0
    seen_at: float | None = None
    day_ends: float = 0.0


class Allowance:
    """One per process. `charge` before a lookup, `debit` after one whose cost was unknown."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        rate: float,
        burst: int,
        lease_seconds: float = 1.0,
        quota: int = 0,
        quota_bulk: int = 0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        on_suspended: Callable[[str], None] | None = None,
        on_active: Callable[[str], None] | None = None,
    ) -> None:
        self._engine = engine
        self.rate = rate
        self.burst = max(burst, 1)
        self.lease_seconds = lease_seconds
        self.quota = quota
        self.quota_bulk = quota_bulk
        self._max_clients = max_clients
        self._clock = clock
        self._on_suspended = on_suspended
        self._on_active = on_active
        self._leases: dict[str, _Lease] = {}
        self._policies: dict[int, bytes] = {}  # RateLimit-Policy by quota
        self.leases_taken = 0  # statements run: tests and /metrics-style introspection
        # NIKs (and No. KKs) charged and given back per client id, for /metrics (never NIKs).
        self.charged: collections.Counter[str] = collections.Counter()
        self.refunded: collections.Counter[str] = collections.Counter()
        self.refusals: collections.Counter[str] = collections.Counter()  # by why (rate, quota)

    def quota_of(self, principal: Principal) -> int:
        """The client's NIKs a day (0: no quota): its own, else the default for its kind."""
        if principal.daily_quota is not None:
            return principal.daily_quota
        return self.quota_bulk if principal.bulk else self.quota

    def _limited(self, principal: Principal) -> bool:
        return self.rate > 0 or self.quota_of(principal) > 0

    def _lease(self, client_id: str) -> _Lease:
        lease = self._leases.get(client_id)
        if lease is None:
            if len(self._leases) >= self._max_clients:
                # Unspent slices are dropped, never re-spent: the limits only get stricter.
                self._leases = {k: v for k, v in self._leases.items() if v.inflight is not None}
            lease = self._leases[client_id] = _Lease()
        return lease

    # --- spending ----------------------------------------------------------------------------

    def try_spend(self, principal: Principal, n: int) -> bool:
        """Spend `n` from this process's slice if it holds them (no await); False otherwise."""
        if n <= 0 or not self._limited(principal):
            self.charged[principal.client_id] += max(n, 0)
            return True
        lease = self._leases.get(principal.client_id)
        if lease is not None and lease.balance >= n and self._clock() < lease.expires:
            lease.balance -= n
            self.charged[principal.client_id] += n
            return True
        return False

    async def charge(self, principal: Principal, n: int) -> None:
        """Take `n` permits or raise RateLimited / QuotaExceeded (429) or ClientSuspended (403)."""
        if self.try_spend(principal, n):
            return
        await self._charge(principal, n)
        self.charged[principal.client_id] += n

    def debit(self, principal: Principal, n: int) -> None:
        """Take `n` more after the fact (the answer is sent): into debt if need be."""
        self.charged[principal.client_id] += max(n, 0)
        if n > 0 and self._limited(principal):
            self._lease(principal.client_id).balance -= n

    def refund(self, principal: Principal, n: int) -> None:
        """Give back `n` taken for work that did not happen."""
        self.refunded[principal.client_id] += max(n, 0)
        if n > 0 and self._limited(principal):
            lease = self._leases.get(principal.client_id)
            if lease is not None:
                lease.balance += n

    async def throttle(self, principal: Principal, n: int, *, max_wait: float = 30.0) -> None:
        """For streams: wait until `n` more fit the client's rate (at most `max_wait` seconds).

        Over the quota or suspended: raised at once; over the rate for longer than max_wait:
        RateLimited.
        """
        deadline = self._clock() + max_wait
        while True:
            try:
                await self.charge(principal, n)
                return
            except RateLimited:
                lease = self._lease(principal.client_id)
                wait = max(0.001, lease.refused_until - self._clock())
                if self._clock() + wait > deadline:
                    raise
                await asyncio.sleep(wait)

    def suspended(self, client_id: str) -> None:
        """This process just suspended the client: refuse it here at once, without a lease."""
        lease = self._lease(client_id)
        lease.balance = min(lease.balance, 0)
        self._refuse(lease, "suspended", 0, self.lease_seconds)
        if self._on_suspended is not None:
            self._on_suspended(client_id)

    # --- the RateLimit headers (IETF draft-ietf-httpapi-ratelimit-headers) -------------------

    def policy(self, principal: Principal) -> bytes | None:
        """`RateLimit-Policy` of the client: the same bytes on every answer (cached by quota)."""
        quota = self.quota_of(principal)
        found = self._policies.get(quota)
        if found is None:
            items = []
            if self.rate > 0:
                window = max(1, math.ceil(self.burst / self.rate))  # the bucket refills in it
                items.append(b'"rate";q=%d;qu="niks";w=%d' % (self.burst, window))
            if quota > 0:
                items.append(b'"daily";q=%d;qu="niks";w=86400' % quota)
            found = self._policies[quota] = b", ".join(items)
        return found or None

    def remaining(
        self, principal: Principal, status: int = 200, retry_after: int | None = None
    ) -> bytes | None:
        """`RateLimit`: what is left under each policy, as this process knows it (its last
        lease, what it spent since, the refill). On a 429 the refused policy alone, `r=0` and
        `t` = `Retry-After`."""
        quota = self.quota_of(principal)
        if self.rate <= 0 and quota <= 0:
            return None
        lease = self._leases.get(principal.client_id)
        now = self._clock()
        if status == 429 and lease is not None and lease.refused in ("rate", "quota"):
            name = b"rate" if lease.refused == "rate" else b"daily"
            return b'"%s";r=0;t=%d' % (name, max(1, retry_after or 1))
        items = []
        balance = lease.balance if lease is not None else 0
        if self.rate > 0:
            if lease is None or lease.seen_at is None:
                left = float(self.burst)
            else:
                refilled = lease.bucket + (now - lease.seen_at) * self.rate
                left = min(float(self.burst), refilled) + balance
            r = max(0, min(self.burst, math.floor(left)))
            items.append(b'"rate";r=%d;t=%d' % (r, math.ceil((self.burst - r) / self.rate)))
        if quota > 0:
            if lease is None or lease.seen_at is None or now >= lease.day_ends:
                r, t = quota, seconds_until_midnight_wib()
            else:
                r = max(0, min(quota, quota - lease.used + balance))
                t = max(1, math.ceil(lease.day_ends - now))
            items.append(b'"daily";r=%d;t=%d' % (r, t))
        return b", ".join(items)

    # --- leasing -----------------------------------------------------------------------------

    def _refuse(self, lease: _Lease, why: str, need: int, seconds: float) -> None:
        self.refusals[why] += 1
        lease.refused = why
        lease.refused_need = need
        lease.refused_until = self._clock() + max(seconds, 0.001)

    def _refusal(self, principal: Principal, lease: _Lease, n: int) -> TepatError:
        if lease.refused == "suspended":
            return ClientSuspended(SUSPENDED)
        if lease.refused == "quota":
            retry = seconds_until_midnight_wib()
            return QuotaExceeded(
                f"the daily quota of {self.quota_of(principal):,} NIK lookups is used up for "
                f"today; it starts again at 00:00 WIB, in {retry} s",
                retry_after=retry,
            )
        # Whole seconds, rounded up: the detail says what Retry-After says.
        retry = max(1, math.ceil(lease.refused_until - self._clock()))
        return RateLimited(
            f"the limit is {self.rate:g} NIK lookups a second (bursts of {self.burst:g}); "
            f"this request of {n} NIKs fits in {retry} s",
            retry_after=retry,
        )

    async def _charge(self, principal: Principal, n: int) -> None:
        lease = self._lease(principal.client_id)
        while True:
            now = self._clock()
            if lease.balance >= n and now < lease.expires:
                lease.balance -= n
                return
            if (
                lease.refused is not None
                and now < lease.refused_until
                and n >= lease.refused_need  # a smaller request may still fit
            ):
                raise self._refusal(principal, lease, n)
            if lease.inflight is not None:
                await asyncio.shield(lease.inflight)  # one lease for all who wait
                continue
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            lease.inflight = done
            try:
                await self._take(principal, lease, n)
            finally:
                lease.inflight = None
                done.set_result(None)
            if lease.refused is not None and self._clock() < lease.refused_until:
                raise self._refusal(principal, lease, n)
            lease.balance -= n
            return

    async def _take(self, principal: Principal, lease: _Lease, n: int) -> None:
        """One lease: give back the slice's rest (or its debt), take a new slice of >= n."""
        quota = self.quota_of(principal)
        now = self._clock()
        returned, lease.balance = lease.balance, 0
        # A lease's worth of the rate, or of what this process spent in the last slice's time
        # if more: a busy process then leases about once per lease_seconds, not per slice.
        size = math.ceil(self.rate * self.lease_seconds) if self.rate > 0 else QUOTA_SLICE
        if lease.taken_at is not None:
            spent = lease.granted - returned
            size = max(
                size, math.ceil(spent * self.lease_seconds / max(now - lease.taken_at, 0.01))
            )
        want = max(n, min(size, self.burst if self.rate > 0 else QUOTA_SLICE_MAX))
        try:
            async with self._engine.begin() as conn:
                got = await repo.lease(
                    conn,
                    principal.client_id,
                    rate=self.rate,
                    burst=self.burst,
                    quota=quota,
                    need=n,
                    want=want,
                    returned=returned if lease.day is not None else min(returned, 0),
                    returned_day=lease.day,
                )
        except DATABASE_ERRORS:
            # What was given back may or may not be settled: it is dropped, never re-spent.
            raise Unavailable("cannot check the client's allowance now; retry later") from None
        self.leases_taken += 1
        seen = self._clock()
        lease.bucket = got.bucket if got.bucket is not None else float(self.burst)
        lease.used, lease.seen_at = got.used, seen
        lease.day_ends = seen + seconds_until_midnight_wib()
        lease.day = got.today
        lease.refused = None
        if got.suspended:
            self._refuse(lease, "suspended", 0, self.lease_seconds)
            if self._on_suspended is not None:
                self._on_suspended(principal.client_id)
            return
        if self._on_active is not None:
            self._on_active(principal.client_id)
        if got.over_quota:
            # Checked again after lease_seconds: an operator may raise the quota meanwhile.
            self._refuse(lease, "quota", n, self.lease_seconds)
        elif got.granted <= 0:
            self._refuse(lease, "rate", n, got.wait)
        else:
            lease.balance += got.granted
            lease.granted, lease.taken_at = got.granted, now
            lease.expires = self._clock() + self.lease_seconds


__all__ = ["WIB", "Allowance", "seconds_until_midnight_wib"]
