"""A full-duplex NDJSON client over a plain socket: sends the body while reading the answer.

Most HTTP/1.1 clients (httpx, requests) send the whole body before reading the response. The
bulk endpoint reads the next input only after its output was taken (backpressure), so such a
client stalls once the unread answers fill the socket buffers; a job of any size needs a client
that reads while it sends, like this one (or parts small enough to fit those buffers).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from urllib.parse import urlencode


def stream_job(
    port: int,
    headers: dict[str, str],
    body: Iterable[bytes],
    on_line: Callable[[bytes], None],
    params: dict[str, str] | None = None,
    path: str = "/v1/bulk/eligibility",
) -> int:
    """POST `body` (chunked) to 127.0.0.1:port, calling on_line for each answer line; the status."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    target = path + ("?" + urlencode(params) if params else "")
    head = [
        f"POST {target} HTTP/1.1",
        "Host: 127.0.0.1",
        "Transfer-Encoding: chunked",
        "Content-Type: application/x-ndjson",
        "Connection: close",
    ]
    head += [f"{k}: {v}" for k, v in headers.items()]
    failure: list[BaseException] = []

    def send() -> None:
        try:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            for piece in body:
                if piece:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sock.sendall(b"0\r\n\r\n")
        except OSError as e:  # the server may answer (401) and close before the body is sent
            failure.append(e)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        f = sock.makefile("rb")
        status = int(f.readline().split()[1])
        chunked, length = False, None
        while (line := f.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name.lower() == "content-length":
                length = int(value)
        tail = b""
        for data in _chunks(f) if chunked else [f.read(length or 0)]:
            parts = (tail + data).split(b"\n")
            tail = parts.pop()
            for part in parts:
                on_line(part)
        if tail:
            on_line(tail)
    finally:
        sock.close()
        sender.join(timeout=10)
    return status


def _chunks(f: object) -> Iterable[bytes]:
    read = f.read  # type: ignore[attr-defined]
    readline = f.readline  # type: ignore[attr-defined]
    while True:
        size = int(readline().split(b";")[0], 16)
        if size == 0:
            return
        yield read(size)
        read(2)
