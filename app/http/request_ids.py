"""Request ids are ours: a client's `X-Request-ID` is kept only when it has a safe shape.

The id is echoed in a header and in problem bodies, written to the access log and stored in
`audit_log.request_id`, which is never erased. So a client's id is kept only if it is 8 to 64
of `[A-Za-z0-9._-]` and holds no run of 16 digits (a NIK or a No. KK); else the service makes
its own. Every reader takes the id from here (`request_id_of`), never from the header.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Any

from starlette.types import Scope

SAFE = re.compile(r"[A-Za-z0-9._-]{8,64}")
_IDENTIFIER = re.compile(r"[0-9]{16}")
# Request ids need to be unique, not secret: a random prefix per process and a counter.
_PREFIX = os.urandom(3).hex()
_COUNTER = itertools.count(1)


def is_safe(value: str) -> bool:
    """A client's id the service may keep: the safe shape, and no 16 consecutive digits."""
    return SAFE.fullmatch(value) is not None and _IDENTIFIER.search(value) is None


def new_id() -> str:
    """Ours: the prefix and the counter apart, so it is never a run of 16 digits itself."""
    return f"{_PREFIX}-{next(_COUNTER):010x}"


def assign(scope: Scope, given: bytes | None) -> str:
    """The request's id (the client's if safe, else a new one), stored in the scope's state."""
    text = given.decode("latin-1") if given else ""
    rid = text if text and is_safe(text) else new_id()
    scope.setdefault("state", {})["request_id"] = rid
    return rid


def request_id_of(scope: Scope) -> str:
    """The id `assign` gave this request; a request that bypassed it gets one of ours now."""
    state: dict[str, Any] = scope.setdefault("state", {})
    rid = state.get("request_id")
    if isinstance(rid, str):
        return rid
    rid = state["request_id"] = new_id()
    return rid
