"""Settings: the one place the environment is read (prefix TEPAT_)."""

from __future__ import annotations

import ipaddress
import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEV_AUDIT_KEY = "dev-only-audit-key-change-me"
# The most NIKs or No. KKs one lookup may name: the ceiling the OpenAPI document publishes
# (the request models' maxItems). TEPAT_MAX_BATCH may lower it, never raise it.
MAX_BATCH = 1000


class Settings(BaseSettings):
    """Everything configurable. Defaults are safe for a laptop demo; production must set secrets."""

    model_config = SettingsConfigDict(env_prefix="TEPAT_", env_file=".env", extra="ignore")

    env: Literal["dev", "test", "production"] = "dev"
    # Unset: an embedded PostgreSQL under `data_dir` is started and used.
    database_url: str | None = None
    # Streaming read replicas of database_url (a JSON list, or URLs separated by commas): data
    # reads run there, writes and the catalog on the primary (docs/architecture.md#read-replicas).
    database_replica_urls: Annotated[list[str], NoDecode] = []
    # A replica this many seconds behind what the primary wrote is left out until it catches up.
    replica_max_lag: float = Field(10.0, gt=0)
    # How often each replica's state (up, replay position) is checked.
    replica_check_interval: float = Field(0.5, gt=0)
    # A read on a replica still running after this many seconds (a frozen or cut-off replica)
    # is abandoned and run on the next node; keep it under request_deadline.
    replica_read_timeout: float = Field(1.5, gt=0)
    data_dir: Path = Path(".tepat")

    # Bounded waits (seconds). Library defaults (30-60 s or none) are too long for a service.
    db_connect_timeout: float = 5.0
    db_statement_timeout: float = 10.0
    db_pool_size: int = 10
    db_pool_timeout: float = 2.0
    # --- overload and shutdown (app/api/limits.py) ---
    # The whole request, auth to last byte (bulk streams excepted): 503 past it. Under 5 s so no
    # caller waits longer than that even when the database is unreachable (connect timeout 5 s).
    request_deadline: float = 4.0
    # Requests served at once per process (/healthz, /readyz not counted); past it: 503 at once.
    max_concurrency: int = Field(64, ge=0)
    # NIKs (and No. KKs) a client may look up per second, and at once, across every process and
    # worker (shared in PostgreSQL, docs/quotas.md); 0: no limit.
    rate_limit_niks_per_second: float = Field(20_000.0, ge=0)
    rate_limit_burst: int = Field(100_000, ge=1)
    # Each process leases up to this many seconds' worth of a client's tokens at a time (and
    # holds a lease at most this long): one database statement per lease, none per request.
    rate_limit_lease_seconds: float = Field(1.0, gt=0, le=60)
    # NIKs a client may look up per day (WIB), unless `tepat client create --daily-quota`; 0: none.
    daily_quota: int = Field(100_000, ge=0)
    daily_quota_bulk: int = Field(10_000_000, ge=0)  # for clients granted bulk (--bulk)
    # A bulk job whose found rate is under min_found_rate after its first min_lines lines is
    # ended (`enumeration_suspected`) and its client suspended.
    enumeration_min_lines: int = Field(10_000, ge=1)
    enumeration_min_found_rate: float = Field(0.05, ge=0, le=1)
    # SIGTERM: how long in-flight requests (bulk streams too) may run before they are cancelled.
    shutdown_timeout: float = Field(30.0, gt=0)
    # Plain people lookups skip the framework's dependency and body machinery (app.api.fast);
    # off: every request goes through the route (same answers, slower).
    fast_lookup: bool = True
    # Recurring GraphQL `person` documents answered from the REST lookup (app.graphql.fast);
    # off: Strawberry executes every document (same answers, slower).
    fast_graphql: bool = True
    # Bulk streams (app/services/streams.py): at once per client, shared by every process of
    # the deployment (PostgreSQL advisory locks); past it: 429 too_many_streams. 0: no limit.
    bulk_streams_per_client: int = Field(2, ge=0)
    # Bulk streams at once per process, counted apart from max_concurrency (so bulk cannot take
    # the lookups' slots); past it: 503 at once. 0: no limit.
    max_streams: int = Field(16, ge=0)
    # Seconds a bulk stream may wait for its next body bytes, or for its client to take the
    # next answer bytes; past it the stream ends (body: 408 idle_timeout before the answer
    # started, an `idle_timeout` error line after; answer: the connection is closed).
    bulk_idle_timeout: float = Field(30.0, gt=0)
    # ... and, over each bulk_idle_timeout seconds spent waiting for the body, at least this
    # many bytes a second on average (a body trickled a byte at a time ends too). 0: no minimum.
    bulk_min_body_rate: int = Field(256, ge=0)
    # --- end overload and shutdown ---

    # --- bulk jobs (docs/bulk.md#bulk-jobs) ---
    # An upload to POST /v1/bulk/jobs larger than this is refused (413) and nothing is kept.
    bulk_job_max_bytes: int = Field(4_000_000_000, ge=1)
    # A finished job (succeeded, failed or cancelled) and its answers are deleted this many days
    # after it ended (the worker purges them).
    bulk_job_retention_days: float = Field(7.0, ge=0)
    # Every process of `tepat serve` (and `tepat demo`) also runs a job worker; `tepat worker`
    # runs one alone. false: this process runs none.
    jobs_worker: bool = True
    # Jobs one worker process runs at once.
    jobs_concurrency: int = Field(2, ge=1)
    # A running job whose worker has not beaten its heart for this long (it died: kill -9, a
    # lost machine) is taken over by another worker at its last committed chunk.
    jobs_heartbeat_timeout: float = Field(30.0, gt=0)
    # How often a worker deletes expired jobs.
    jobs_purge_interval: float = Field(300.0, gt=0)
    # People per chunk (audit record, receipt, commit) of a change list job, fixed when it is
    # submitted (its status names it); the stream's chunks are 1,000.
    changes_job_chunk: int = Field(1000, ge=10, le=100_000)
    # DCI callbacks (app.services.dci): tries, the first wait between them (doubled each
    # time) and each try's timeout, in seconds.
    dci_callback_attempts: int = Field(5, ge=1, le=20)
    dci_callback_backoff: float = Field(2.0, gt=0)
    dci_callback_timeout: float = Field(10.0, gt=0)
    # DCI notifications (app.services.dci_subscriptions): people in one `notify` callback, and
    # how often a worker looks for notifications owed besides on a catalog change.
    dci_notify_page: int = Field(200, ge=1, le=1000)
    dci_notify_interval: float = Field(60.0, gt=0)
    # --- end bulk jobs ---

    # --- operations (docs/operations.md) ---
    # GET /metrics answers callers from these networks (CIDR, JSON list or comma-separated) ...
    metrics_allow: Annotated[list[str], NoDecode] = ["127.0.0.1/32", "::1/128"]
    # ... and callers bearing this token (`Authorization: Bearer ...`), from anywhere.
    metrics_token: SecretStr | None = None
    # OpenTelemetry traces over OTLP (the standard OTEL_EXPORTER_OTLP_* variables say where);
    # spans carry no NIK, No. KK or name. Off by default.
    tracing: bool = False
    # --- end operations ---

    # The role the API's connections run as (created by the migrations): it may read the
    # registry and append to the audit trail, never UPDATE or DELETE it. Empty: the login role.
    db_role: str | None = "tepat_service"

    # Keyed hash of NIKs and No. KKs in the audit trail. Every record names the key's id
    # (app.services.audit.hmac_key_id); after a rotation, keep the old keys in
    # audit_hmac_old_keys (a JSON list: TEPAT_AUDIT_HMAC_OLD_KEYS='["old secret"]'): trails
    # search under them too, nothing new is hashed with them.
    audit_hmac_key: SecretStr = SecretStr(DEV_AUDIT_KEY)
    audit_hmac_old_keys: list[SecretStr] = []
    # The Ed25519 private key (PKCS#8 PEM file, `tepat audit keygen`) receipts and checkpoints
    # are signed with. Required in production; elsewhere one is made under data_dir.
    audit_signing_key: Path | None = None
    # A signed receipt with every answer (Tepat-Receipt; bulk: in the summary). Off only to
    # measure what receipts cost (bench/ --no-receipts).
    audit_receipts: bool = True
    # The audit log's name in its checkpoints (C2SP origin line and signing key name): set it
    # to the deployment's own host and path, e.g. tepat.kemensos.go.id/audit-log.
    audit_log_origin: str = Field("tepat.local/audit-log", pattern=r"^[^\s+]+$")
    # Public keys still published after a rotation (a JWKS file), so old receipts verify.
    audit_public_keys: Path | None = None

    # Identifiers a lookup may name, on every face (REST, its fast path, GraphQL): at most the
    # published MAX_BATCH, which REST's request models check; a lower value is checked too.
    max_batch: int = Field(MAX_BATCH, ge=1, le=MAX_BATCH)
    max_body_bytes: int = 1_000_000
    # POST /graphql bodies (app.graphql.gate): with an API key, and without one (only documents
    # without personal fields run without a key: snapshots, programs, rule sets, introspection).
    graphql_max_body_bytes: int = Field(65_536, ge=1024)
    graphql_anonymous_max_body_bytes: int = Field(8_192, ge=1024)

    # Tests only: a server the test suite may create its own database on (else: embedded).
    test_database_url: str | None = None

    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    log_json: bool = False

    @field_validator("database_replica_urls", "metrics_allow", mode="before")
    @classmethod
    def _replica_urls(cls, value: Any) -> Any:
        """A JSON list, or URLs separated by commas (a URL holds no unescaped comma)."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [u.strip() for u in text.split(",") if u.strip()]
        return value

    @model_validator(mode="after")
    def _refuse_dev_secrets(self) -> Settings:
        for network in self.metrics_allow:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"TEPAT_METRICS_ALLOW: {network!r} is not a network") from None
        if self.database_replica_urls and not self.database_url:
            raise ValueError(
                "TEPAT_DATABASE_REPLICA_URLS needs TEPAT_DATABASE_URL (the replicas' primary)"
            )
        if self.env == "production" and self.audit_hmac_key.get_secret_value() == DEV_AUDIT_KEY:
            raise ValueError("TEPAT_AUDIT_HMAC_KEY must be set to a secret outside dev")
        if self.env == "production" and self.audit_signing_key is None:
            raise ValueError(
                "TEPAT_AUDIT_SIGNING_KEY must name the receipts' Ed25519 key file in production "
                "(make one with `tepat audit keygen --out FILE`)"
            )
        return self

    @property
    def metrics_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(n, strict=False) for n in self.metrics_allow]

    @property
    def is_production(self) -> bool:
        return self.env == "production"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
