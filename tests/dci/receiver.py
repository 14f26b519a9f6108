"""A callback receiver for the DCI tests: a local HTTP server that records every callback it
gets (failing the first `fail` ones) and holds each body to the standard's schema for its path
(tests/dci/spec.py) when the standard's YAML is at hand."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from tests.dci import spec


class Receiver:
    """Records `(path, body, status answered)`; fails the first `fail` callbacks with 500."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.bodies: list[tuple[str, bytes, int]] = []
        self.invalid: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if spec.documents() is not None:
                    try:
                        spec.check_callback(self.path, orjson.loads(body))
                    except (AssertionError, ValueError) as e:
                        receiver.invalid.append(f"{self.path}: {e}")
                status = 500 if receiver.fail > 0 else 200
                receiver.fail -= 1
                receiver.bodies.append((self.path, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    async def wait(self, n: int, limit: float = 60.0) -> list[tuple[str, bytes, int]]:
        """The callbacks once there are `n` (a bounded wait), each valid for the standard."""
        for _ in range(int(limit / 0.05)):  # a bounded wait for the worker's deliveries
            if len(self.bodies) >= n:
                break
            await asyncio.sleep(0.05)
        assert not self.invalid, self.invalid
        return self.bodies

    def close(self) -> None:
        self.server.shutdown()
        assert not self.invalid, self.invalid
