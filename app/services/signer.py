"""Receipt signatures made in a child process, so their CPU is not spent on the event loop's.

Each server process (each uvicorn worker) starts one signer child: `python -m
app.services.signer`, fed over its stdin and answering on its stdout. The audit writer sends
it a batch's signing inputs while the batch's COMMIT is on its way (app.services.audit.writer),
so a receipt costs the request little more than assembling its bytes. A batch of one or two
receipts (a quiet moment, large requests) is signed in this process instead: cheaper than the
round trip.

Frames: the child first reads the 32-byte Ed25519 seed (never on its command line or in its
environment), then, per batch, a count and that many length-prefixed signing inputs; it answers
the count's 64-byte signatures, concatenated, in order. It exits at the end of its stdin: when
the parent closes it, or dies.

If the child dies, hangs or cannot start, the batch is signed in this process instead (the
same signatures: Ed25519 is deterministic) and a new child is tried at the next batch after
`retry_after` seconds. A receipt is never missing for want of the child.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import struct
import sys
import time
from collections.abc import Sequence

from nacl.signing import SigningKey as NaclSigningKey

SEED_BYTES = 32
SIGNATURE_BYTES = 64
_COUNT = struct.Struct("<I")
# The child's stdin holds a whole batch of answers under load (a 64 KiB pipe took a batch in
# several writes: bench/ P11). Linux lets any process ask for 1 MiB.
PIPE_BYTES = 1 << 20

log = logging.getLogger("tepat.audit")


def frame(inputs: Sequence[bytes]) -> bytes:
    """One batch as the child reads it: a count, then each input with its length."""
    parts = [_COUNT.pack(len(inputs))]
    for item in inputs:
        parts.append(_COUNT.pack(len(item)))
        parts.append(item)
    return b"".join(parts)


class Signer:
    """One signer child for this process, and the in-process fallback (`key`: the seed)."""

    def __init__(
        self, seed: bytes, *, timeout: float = 2.0, retry_after: float = 1.0, inline_up_to: int = 2
    ) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self._seed = seed
        self._local = NaclSigningKey(seed)
        self._timeout = timeout
        self._retry_after = retry_after
        # Batches this small are signed here: a round trip to the child costs this process
        # about as much CPU as one signature, and waking the child adds latency on a busy host.
        self._inline_up_to = inline_up_to
        self._proc: asyncio.subprocess.Process | None = None
        self._failed_at: float | None = None
        self._lock = asyncio.Lock()  # one batch in flight: answers come back in order
        self._closed = False
        self.fallbacks = 0  # batches signed in this process (the child was away)
        self.round_trips = 0  # batches sent to the child
        # sign_one: inputs asked in the same turn of the event loop, signed as one batch.
        self._gathering: list[tuple[bytes, asyncio.Future[bytes]]] = []
        self._batches: set[asyncio.Task[None]] = set()

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs (tests, diagnostics)."""
        proc = self._proc
        return None if proc is None or proc.returncode is not None else proc.pid

    async def start(self) -> None:
        """Start the child now (otherwise it starts with the first batch)."""
        self._closed = False
        async with self._lock:
            await self._child()

    async def sign_many(self, inputs: Sequence[bytes]) -> list[bytes]:
        """The Ed25519 signature of each signing input, in order. What `sign_one` gathered
        meanwhile rides along: one round trip to the child for both (bench/ P11)."""
        if len(inputs) <= self._inline_up_to and not self._gathering:
            return [self._local.sign(i).signature for i in inputs]
        async with self._lock:
            riders, self._gathering = self._gathering, []
            try:
                signed = await self._sign_locked([*inputs, *(data for data, _ in riders)])
            except BaseException as e:  # handed to every rider: none is left hanging
                for _, future in riders:
                    if not future.done():
                        if isinstance(e, asyncio.CancelledError):
                            future.cancel()
                        else:
                            future.set_exception(e)
                raise
        for (_, future), signature in zip(riders, signed[len(inputs) :], strict=True):
            if not future.done():
                future.set_result(signature)
        return signed[: len(inputs)]

    async def _sign_locked(self, inputs: Sequence[bytes]) -> list[bytes]:
        """`sign_many`'s work, the lock held: by the child, else here."""
        proc = await self._child()
        if proc is not None:
            try:
                self.round_trips += 1
                return await asyncio.wait_for(self._ask(proc, inputs), self._timeout)
            except asyncio.CancelledError:
                # Its answer would come back to the next batch: this child is done for.
                self._proc = None
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                raise
            except (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError) as e:
                log.warning("receipt signer child failed (%s); signing here", type(e).__name__)
                await self._end(proc, kill=True)
                self._failed_at = time.monotonic()
        self.fallbacks += 1
        return [self._local.sign(i).signature for i in inputs]

    def sign_one(self, data: bytes) -> asyncio.Future[bytes]:
        """The Ed25519 signature of `data` (a future), signed together with the others asked
        during the same turn of the event loop (concurrent requests): a batch of more than
        `inline_up_to` goes to the child, so answers under load are signed off this process's
        CPU, as receipts are. A plain function: the awaiting request waits on the future
        itself, without a frame of this method in its await chain (bench/ P11)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        self._gathering.append((data, future))
        if len(self._gathering) == 1:
            loop.call_soon(self._send_gathered)
        return future

    def _send_gathered(self) -> None:
        batch, self._gathering = self._gathering, []
        if not batch:
            return  # they rode along with a batch sent meanwhile (sign_many)
        task = asyncio.ensure_future(self._sign_batch(batch))
        self._batches.add(task)  # held until done (the loop keeps only weak references)
        task.add_done_callback(self._batches.discard)

    async def _sign_batch(self, batch: list[tuple[bytes, asyncio.Future[bytes]]]) -> None:
        try:
            signatures = await self.sign_many([data for data, _ in batch])
        except BaseException as e:  # handed to every waiter: none is left hanging
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
            if not isinstance(e, Exception):
                raise
            return
        for (_, future), signature in zip(batch, signatures, strict=True):
            if not future.done():
                future.set_result(signature)

    async def _ask(self, proc: asyncio.subprocess.Process, inputs: Sequence[bytes]) -> list[bytes]:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(frame(inputs))
        await proc.stdin.drain()
        out = await proc.stdout.readexactly(SIGNATURE_BYTES * len(inputs))
        return [out[i : i + SIGNATURE_BYTES] for i in range(0, len(out), SIGNATURE_BYTES)]

    async def _child(self) -> asyncio.subprocess.Process | None:
        """The running child, a new one if it is gone (not more often than retry_after)."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            return proc
        if proc is not None:
            await self._end(proc)
        if self._closed:
            return None
        if self._failed_at is not None and time.monotonic() - self._failed_at < self._retry_after:
            return None
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                __name__,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            assert proc.stdin is not None
            _widen(proc.stdin)
            proc.stdin.write(self._seed)
            await proc.stdin.drain()
        except (OSError, ValueError) as e:
            log.warning("receipt signer child did not start (%s); signing here", e)
            self._failed_at = time.monotonic()
            return None
        self._proc = proc
        self._failed_at = None
        return proc

    async def _end(self, proc: asyncio.subprocess.Process, *, kill: bool = False) -> None:
        """Close the child's stdin (it exits), kill it if it does not (or failed), reap it."""
        if self._proc is proc:
            self._proc = None
        if proc.stdin is not None:
            proc.stdin.close()
        if not kill:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), self._timeout)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def stop(self) -> None:
        """End the child (no orphan is left); later batches are signed in this process."""
        self._closed = True
        async with self._lock:
            if self._proc is not None:
                await self._end(self._proc)


def _widen(stream: asyncio.StreamWriter) -> None:
    """Ask for a pipe of PIPE_BYTES under the child's stdin (else the default stays)."""
    pipe = stream.get_extra_info("pipe")
    with contextlib.suppress(AttributeError, OSError, ValueError):
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _read(stream: object, n: int) -> bytes:
    read = stream.read  # type: ignore[attr-defined]
    data: bytes = read(n)
    while len(data) < n:
        more: bytes = read(n - len(data))
        if not more:
            raise EOFError
        data += more
    return data


def main() -> None:
    """The child: sign each batch read from stdin until it ends."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    try:
        key = NaclSigningKey(_read(stdin, SEED_BYTES))
        while True:
            (count,) = _COUNT.unpack(_read(stdin, _COUNT.size))
            signatures = []
            for _ in range(count):
                (size,) = _COUNT.unpack(_read(stdin, _COUNT.size))
                signatures.append(key.sign(_read(stdin, size)).signature)
            stdout.write(b"".join(signatures))
            stdout.flush()
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        return


if __name__ == "__main__":
    main()
