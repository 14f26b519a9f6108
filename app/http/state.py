"""The app's shared state: built once by the lifespan, read by every request of both faces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import Scope

from app.config import Settings
from app.services.audit import AuditWriter
from app.services.catalog import Reads
from app.services.clients import Authenticator
from app.services.receipts import Keyring


@dataclass
class AppState:
    """Everything a request needs that outlives it."""

    settings: Settings
    engine: AsyncEngine
    authenticator: Authenticator
    audit: AuditWriter
    reads: Reads
    keyring: Keyring


def state_of(scope: Scope) -> AppState:
    """The state of the app serving this request (`scope["app"]`, set by Starlette)."""
    app: Any = scope["app"]
    state: AppState = app.state.tepat
    return state
