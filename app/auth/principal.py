"""Who is calling: the scope vocabulary, a client's record and the authenticated Principal."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.errors import Forbidden, PurposeRequired, ValidationFailed

PROGRAMS = ("PKH", "BPNT", "PBI_JK", "SEKOLAH_RAKYAT")
FIELD_GROUPS = ("decision", "decile", "membership", "identity", "attributes", "health")
PURPOSE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{1,63}$")


class ClientInfo(BaseModel):
    """A consumer system (a ministry's application) as the operator sees it; never its key."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(examples=["kemenkes-sisrute-3k9x2q"])
    name: str = Field(examples=["Kemenkes SISRUTE"])
    programs: list[str] = Field(description="Programs whose decisions it may see")
    field_groups: list[str] = Field(description="Field groups it may see")
    purposes: list[str] = Field(description="Purposes (X-Purpose) registered for it")
    key_prefix: str = Field(description="First characters of its key, to tell keys apart")
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    bulk: bool = Field(False, description="May call /v1/bulk/eligibility")
    daily_quota: int | None = Field(None, description="NIKs a day; null: the default for its kind")
    suspended_at: dt.datetime | None = None
    suspended_reason: str | None = None
    callback_url_prefix: str | None = Field(
        None, description="Where DCI callbacks may be sent; null: none may be"
    )
    jwks: dict[str, Any] | None = Field(
        None, description="Its public keys (a JWKS); its signed DCI messages are checked with them"
    )
    signatures_required: bool = Field(False, description="Its DCI requests must be signed")


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated client and what it was granted. Checks raise domain errors (403)."""

    client_id: str
    name: str
    programs: frozenset[str]
    field_groups: frozenset[str]
    purposes: frozenset[str]
    expires_at: dt.datetime | None
    bulk: bool = False
    daily_quota: int | None = None  # None: the settings' default for its kind
    suspended: bool = False
    callback_url_prefix: str | None = None  # where DCI callbacks may go (None: nowhere)
    jwks: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)
    signatures_required: bool = False  # its DCI requests must carry a valid signature

    def require_purpose(self, purpose: str | None) -> str:
        """The stated purpose, if registered for this client (UU 27/2022: purpose limitation)."""
        if not purpose:
            raise PurposeRequired("state the purpose of this request in X-Purpose")
        if purpose not in self.purposes:
            # Never echo the header: a caller may put anything in it, a NIK included.
            raise PurposeRequired("the stated purpose is not registered for this client")
        return purpose

    def allowed_programs(self, requested: Collection[str] | None) -> tuple[str, ...]:
        """The programs to decide, in PROGRAMS order: all granted ones when none are named."""
        if requested is None:
            return tuple(p for p in PROGRAMS if p in self.programs)
        for program in requested:
            if program not in PROGRAMS:
                raise ValidationFailed(
                    f"unknown program {program!r}; one of {', '.join(PROGRAMS)}",
                    field="programs",
                    value=program,
                )
            if program not in self.programs:
                raise Forbidden(f"program {program} is not granted to this client", program=program)
        wanted = set(requested)
        return tuple(p for p in PROGRAMS if p in wanted)

    def can_see(self, group: str) -> bool:
        if group not in FIELD_GROUPS:
            raise ValueError(f"unknown field group {group!r}")  # a typo must not silently deny
        return group in self.field_groups

    @classmethod
    def from_client(cls, client: ClientInfo) -> Principal:
        return cls(
            client_id=client.id,
            name=client.name,
            programs=frozenset(client.programs),
            field_groups=frozenset(client.field_groups),
            purposes=frozenset(client.purposes),
            expires_at=client.expires_at,
            bulk=client.bulk,
            daily_quota=client.daily_quota,
            suspended=client.suspended_at is not None,
            callback_url_prefix=client.callback_url_prefix,
            jwks=client.jwks,
            signatures_required=client.signatures_required,
        )
