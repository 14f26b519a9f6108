"""Client allowance: the bulk permission, daily quotas, suspension and the shared usage row

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-21 14:00:00.000000+00:00

api_clients gains `bulk` (may call /v1/bulk/eligibility), `daily_quota` (NIKs a day; NULL: the
default for its kind) and `suspended_at`/`suspended_reason` (set when a bulk job looks like an
enumeration; every request is refused until `tepat client reinstate`).

client_usage holds, per client, the day's count of NIKs (the day in WIB) and the rate limiter's
token bucket. Every process leases slices of both through `client_lease(...)`, one atomic
statement, so the limits hold whatever the number of processes (docs/quotas.md). The service
role may update client_usage and only the suspension columns of api_clients.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLE = "tepat_service"

# One lease, atomically (the row is locked for the statement): settle what the caller gives
# back (`p_returned` permits it did not spend, negative for a debt it ran up after the fact),
# refill the bucket, then grant between p_need and p_want permits if both the bucket and the
# day's quota have them, else none. Returns what was granted and, when nothing was, why and how
# long to wait. The day is the database's, in WIB (Asia/Jakarta, UTC+7): every process agrees.
LEASE_FUNCTION = """
CREATE OR REPLACE FUNCTION client_lease(
    p_client text, p_rate double precision, p_burst double precision, p_quota bigint,
    p_need bigint, p_want bigint, p_returned double precision, p_returned_day date
) RETURNS TABLE (
    granted bigint, wait double precision, today date, used bigint, over_quota boolean,
    suspended boolean
)
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := now();
    v_today date := (now() AT TIME ZONE 'Asia/Jakarta')::date;
    v_row client_usage%ROWTYPE;
    v_tokens double precision;
    v_used bigint;
    v_grant bigint := 0;
    v_floor double precision;
BEGIN
    INSERT INTO client_usage (client_id, day, niks, tokens, refilled_at)
    VALUES (p_client, v_today, 0, p_burst, v_now)
    ON CONFLICT (client_id) DO NOTHING;
    SELECT * INTO v_row FROM client_usage WHERE client_id = p_client FOR UPDATE;

    suspended := EXISTS (
        SELECT FROM api_clients WHERE id = p_client AND suspended_at IS NOT NULL
    );
    -- The bucket: refilled for the time since it was last touched, then what comes back.
    IF p_rate > 0 THEN
        v_tokens := least(
            p_burst,
            v_row.tokens + extract(epoch FROM v_now - v_row.refilled_at) * p_rate
        );
        v_tokens := least(p_burst, v_tokens + p_returned);
    ELSE
        v_tokens := 'Infinity';
    END IF;
    -- The day's count: a new day starts at zero; what comes back is uncounted only on its day.
    IF v_row.day = v_today THEN
        v_used := v_row.niks;
        IF p_returned_day = v_today THEN
            v_used := greatest(0, v_used - p_returned::bigint);
        END IF;
    ELSE
        v_used := 0;
    END IF;

    over_quota := p_quota > 0 AND v_used + p_need > p_quota;
    wait := 0;
    IF NOT suspended AND NOT over_quota THEN
        -- A request larger than the whole bucket passes when the bucket is full (and leaves a
        -- debt), as a single request always could.
        v_floor := least(p_need::double precision, p_burst);
        IF p_rate <= 0 OR v_tokens >= v_floor THEN
            v_grant := p_want;
            IF p_rate > 0 THEN
                v_grant := least(v_grant, greatest(p_need, floor(v_tokens)::bigint));
            END IF;
            IF p_quota > 0 THEN
                v_grant := least(v_grant, p_quota - v_used);
            END IF;
            v_grant := greatest(v_grant, p_need);
        ELSE
            wait := (v_floor - v_tokens) / p_rate;
        END IF;
    END IF;

    IF p_rate > 0 THEN
        v_tokens := v_tokens - v_grant;
    ELSE
        v_tokens := p_burst;
    END IF;
    v_used := v_used + v_grant;
    UPDATE client_usage
       SET day = v_today, niks = v_used, tokens = v_tokens, refilled_at = v_now
     WHERE client_id = p_client;
    granted := v_grant;
    today := v_today;
    used := v_used;
    RETURN NEXT;
END
$$
"""


def upgrade() -> None:
    op.add_column(
        "api_clients",
        sa.Column("bulk", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column("api_clients", sa.Column("daily_quota", sa.BigInteger(), nullable=True))
    op.add_column(
        "api_clients", sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("api_clients", sa.Column("suspended_reason", sa.Text(), nullable=True))
    op.create_check_constraint(
        op.f("ck_api_clients_daily_quota_positive"),
        "api_clients",
        "daily_quota IS NULL OR daily_quota >= 0",
    )
    op.create_table(
        "client_usage",
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("niks", sa.BigInteger(), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("refilled_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["api_clients.id"],
            name=op.f("fk_client_usage_client_id_api_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_client_usage")),
    )
    op.execute(LEASE_FUNCTION)
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON client_usage TO {ROLE}")
    op.execute(f"GRANT UPDATE (suspended_at, suspended_reason) ON api_clients TO {ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE UPDATE (suspended_at, suspended_reason) ON api_clients FROM {ROLE}")
    op.execute(
        "DROP FUNCTION IF EXISTS client_lease(text, double precision, double precision, bigint,"
        " bigint, bigint, double precision, date)"
    )
    op.drop_table("client_usage")
    op.drop_constraint(op.f("ck_api_clients_daily_quota_positive"), "api_clients", type_="check")
    op.drop_column("api_clients", "suspended_reason")
    op.drop_column("api_clients", "suspended_at")
    op.drop_column("api_clients", "daily_quota")
    op.drop_column("api_clients", "bulk")
