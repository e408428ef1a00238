"""transactional outbox: events written with their change, then published

Each event belongs to an aggregate and is numbered within it: the counter
row in outbox_versions is taken (and locked) by the transaction that records
the event, so an aggregate's events commit in the order of their numbers and
the numbers have no gaps. The relay never reads "rows after the last one it
saw" (an id taken early may commit late): it claims unpublished rows by
state, the first unpublished one of each aggregate leading.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE outbox (
            seq             bigint      GENERATED ALWAYS AS IDENTITY,
            id              uuid        NOT NULL,
            type            text        NOT NULL,
            subject         text        NOT NULL,
            aggregate_type  text        NOT NULL,
            aggregate_id    uuid        NOT NULL,
            version         bigint      NOT NULL,
            payload         jsonb       NOT NULL,
            occurred_at     timestamptz NOT NULL,
            trace_context   jsonb,
            state           text        NOT NULL DEFAULT 'pending',
            attempts        integer     NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            claimed_until   timestamptz,
            last_error      text,
            published_at    timestamptz,
            CONSTRAINT pk_outbox PRIMARY KEY (id),
            CONSTRAINT uq_outbox_aggregate_version
                UNIQUE (aggregate_type, aggregate_id, version),
            CONSTRAINT ck_outbox_version CHECK (version >= 1),
            CONSTRAINT ck_outbox_state CHECK (state IN ('pending', 'published', 'dead')),
            CONSTRAINT ck_outbox_published_at
                CHECK ((state = 'published') = (published_at IS NOT NULL)),
            CONSTRAINT ck_outbox_attempts CHECK (attempts >= 0)
        )
        """
    )
    # What the relay walks: the pending events, oldest first (whether the
    # event before each is published, it asks uq_outbox_aggregate_version).
    op.execute("CREATE INDEX ix_outbox_pending_seq ON outbox (seq) WHERE state = 'pending'")
    # What the figures count: dead events (kept for an operator; few).
    op.execute("CREATE INDEX ix_outbox_dead ON outbox (seq) WHERE state = 'dead'")
    # What the purge reads: published rows, oldest first.
    op.execute(
        "CREATE INDEX ix_outbox_published ON outbox (published_at) WHERE state = 'published'"
    )
    # Kept when the published rows are purged, so numbers never repeat.
    op.execute(
        """
        CREATE TABLE outbox_versions (
            aggregate_type text   NOT NULL,
            aggregate_id   uuid   NOT NULL,
            version        bigint NOT NULL,
            CONSTRAINT pk_outbox_versions PRIMARY KEY (aggregate_type, aggregate_id),
            CONSTRAINT ck_outbox_versions_version CHECK (version >= 1)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE outbox_versions")
    op.execute("DROP TABLE outbox")
