"""users

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE users (
            id            uuid        NOT NULL,
            email         text        NOT NULL,
            email_key     text        NOT NULL,
            name          text        NOT NULL,
            password_hash text        NOT NULL,
            is_admin      boolean     NOT NULL DEFAULT false,
            created_at    timestamptz NOT NULL,
            updated_at    timestamptz NOT NULL,
            CONSTRAINT pk_users PRIMARY KEY (id),
            CONSTRAINT ck_users_email_length CHECK (char_length(email) BETWEEN 3 AND 254),
            CONSTRAINT ck_users_name_length CHECK (char_length(name) BETWEEN 1 AND 100),
            CONSTRAINT ck_users_password_hash_argon2id
                CHECK (password_hash LIKE '$argon2id$%')
        )
        """
    )
    # Emails are unique case-insensitively: the index, not the code, decides
    # between two registrations that race. The key is lower-cased by the
    # service (Unicode-aware), not by lower(), whose result depends on the
    # database's locale (a C locale lower-cases ASCII only).
    op.execute("CREATE UNIQUE INDEX uq_users_email_key ON users (email_key)")


def downgrade() -> None:
    op.execute("DROP TABLE users")
