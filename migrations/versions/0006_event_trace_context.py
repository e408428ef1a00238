"""the trace context of the change that wrote an event, kept with the event

outbox_record() (0005) is what every event is written through, the
settlement functions' included. The writer's W3C trace context
(``traceparent``, ``tracestate``) travels to it inside the payload argument,
under the reserved key ``$trace``, so that no settlement function's
signature changes: outbox_record() takes it out of the payload and keeps it
in the outbox's trace_context column (0004), from where the relay sends it
with the event as the CloudEvents distributed-tracing extension. A payload
without the key is stored as before, with no trace context.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_SIGNATURE = """
CREATE OR REPLACE FUNCTION outbox_record(
    p_id uuid, p_type text, p_subject text, p_aggregate_type text, p_aggregate_id uuid,
    p_payload jsonb, p_occurred_at timestamptz
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    WITH numbered AS (
        INSERT INTO outbox_versions AS v (aggregate_type, aggregate_id, version)
        VALUES (p_aggregate_type, p_aggregate_id, 1)
        ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET version = v.version + 1
        RETURNING version
    )
"""

_WITH_TRACE = f"""{_SIGNATURE}
    INSERT INTO outbox (id, type, subject, aggregate_type, aggregate_id, version, payload,
                        occurred_at, trace_context)
    SELECT p_id, p_type, p_subject, p_aggregate_type, p_aggregate_id, numbered.version,
           p_payload - '$trace', p_occurred_at, p_payload -> '$trace'
      FROM numbered;
END
$$
"""  # noqa: S608 - constants only

_WITHOUT_TRACE = f"""{_SIGNATURE}
    INSERT INTO outbox
        (id, type, subject, aggregate_type, aggregate_id, version, payload, occurred_at)
    SELECT p_id, p_type, p_subject, p_aggregate_type, p_aggregate_id, numbered.version,
           p_payload, p_occurred_at
      FROM numbered;
END
$$
"""  # noqa: S608 - constants only


def upgrade() -> None:
    op.execute(_WITH_TRACE)


def downgrade() -> None:
    op.execute(_WITHOUT_TRACE)
