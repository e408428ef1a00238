"""wallets, orders, double-entry ledger, idempotency keys

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE orders (
            id          uuid        NOT NULL,
            payer_id    uuid        NOT NULL,
            payee_id    uuid        NOT NULL,
            amount      bigint      NOT NULL,
            currency    char(3)     NOT NULL,
            description text,
            status      text        NOT NULL,
            created_at  timestamptz NOT NULL,
            updated_at  timestamptz NOT NULL,
            paid_at     timestamptz,
            CONSTRAINT pk_orders PRIMARY KEY (id),
            CONSTRAINT fk_orders_payer FOREIGN KEY (payer_id) REFERENCES users (id),
            CONSTRAINT fk_orders_payee FOREIGN KEY (payee_id) REFERENCES users (id),
            CONSTRAINT ck_orders_parties_differ CHECK (payer_id <> payee_id),
            CONSTRAINT ck_orders_amount CHECK (amount BETWEEN 1 AND 1000000000000),
            CONSTRAINT ck_orders_currency CHECK (currency ~ '^[A-Z]{3}$'),
            CONSTRAINT ck_orders_description_length CHECK (char_length(description) <= 500),
            CONSTRAINT ck_orders_status
                CHECK (status IN ('pending', 'paid', 'refunded', 'expired')),
            CONSTRAINT ck_orders_paid_at
                CHECK ((status IN ('paid', 'refunded')) = (paid_at IS NOT NULL))
        )
        """
    )
    op.execute("CREATE INDEX ix_orders_payer ON orders (payer_id)")
    op.execute("CREATE INDEX ix_orders_payee ON orders (payee_id)")
    op.execute("CREATE INDEX ix_orders_pending ON orders (created_at) WHERE status = 'pending'")

    # One wallet account per user and currency, never negative; one issuance
    # account per currency, the outside world's side of every credit (its
    # balance is minus the money issued).
    op.execute(
        """
        CREATE TABLE accounts (
            id         uuid        NOT NULL,
            owner_id   uuid,
            kind       text        NOT NULL,
            currency   char(3)     NOT NULL,
            balance    bigint      NOT NULL DEFAULT 0,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            CONSTRAINT pk_accounts PRIMARY KEY (id),
            CONSTRAINT fk_accounts_owner FOREIGN KEY (owner_id) REFERENCES users (id),
            CONSTRAINT ck_accounts_kind CHECK (kind IN ('wallet', 'issuance')),
            CONSTRAINT ck_accounts_wallet_has_owner
                CHECK ((kind = 'wallet') = (owner_id IS NOT NULL)),
            CONSTRAINT ck_accounts_currency CHECK (currency ~ '^[A-Z]{3}$'),
            CONSTRAINT ck_balances_non_negative CHECK (kind <> 'wallet' OR balance >= 0)
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX uq_accounts_wallet ON accounts (owner_id, currency) "
        "WHERE kind = 'wallet'"
    )
    op.execute(
        "CREATE UNIQUE INDEX uq_accounts_issuance ON accounts (currency) WHERE kind = 'issuance'"
    )

    op.execute(
        """
        CREATE TABLE transfers (
            id         uuid        NOT NULL,
            kind       text        NOT NULL,
            order_id   uuid,
            currency   char(3)     NOT NULL,
            amount     bigint      NOT NULL,
            created_at timestamptz NOT NULL,
            CONSTRAINT pk_transfers PRIMARY KEY (id),
            CONSTRAINT fk_transfers_order FOREIGN KEY (order_id) REFERENCES orders (id),
            CONSTRAINT ck_transfers_kind CHECK (kind IN ('credit', 'payment', 'refund')),
            CONSTRAINT ck_transfers_amount CHECK (amount > 0),
            CONSTRAINT ck_transfers_order CHECK ((kind = 'credit') = (order_id IS NULL))
        )
        """
    )
    # An order is paid at most once and refunded at most once, whatever the
    # locks did: this index is the last word.
    op.execute("CREATE UNIQUE INDEX uq_transfers_order_kind ON transfers (order_id, kind)")

    op.execute(
        """
        CREATE TABLE ledger_entries (
            seq           bigint      GENERATED ALWAYS AS IDENTITY,
            id            uuid        NOT NULL,
            transfer_id   uuid        NOT NULL,
            account_id    uuid        NOT NULL,
            owner_id      uuid,
            kind          text        NOT NULL,
            amount        bigint      NOT NULL,
            currency      char(3)     NOT NULL,
            balance_after bigint      NOT NULL,
            order_id      uuid,
            created_at    timestamptz NOT NULL,
            CONSTRAINT pk_ledger_entries PRIMARY KEY (id),
            CONSTRAINT uq_ledger_entries_seq UNIQUE (seq),
            CONSTRAINT fk_ledger_entries_transfer
                FOREIGN KEY (transfer_id) REFERENCES transfers (id),
            CONSTRAINT fk_ledger_entries_account FOREIGN KEY (account_id) REFERENCES accounts (id),
            CONSTRAINT ck_ledger_entries_amount CHECK (amount <> 0)
        )
        """
    )
    op.execute("CREATE INDEX ix_ledger_entries_owner_seq ON ledger_entries (owner_id, seq DESC)")
    op.execute("CREATE INDEX ix_ledger_entries_transfer ON ledger_entries (transfer_id)")
    # Double entry, checked by the database at commit: the entries of every
    # transfer sum to zero.
    op.execute(
        """
        CREATE FUNCTION ledger_transfer_balances() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF (SELECT coalesce(sum(amount), 0) FROM ledger_entries
                WHERE transfer_id = NEW.transfer_id) <> 0 THEN
                RAISE EXCEPTION 'entries of transfer % do not sum to zero', NEW.transfer_id
                    USING ERRCODE = 'check_violation',
                          CONSTRAINT = 'ck_ledger_transfer_sums_to_zero';
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE CONSTRAINT TRIGGER ck_ledger_transfer_sums_to_zero
        AFTER INSERT ON ledger_entries
        DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION ledger_transfer_balances()
        """
    )
    # The ledger is append-only.
    op.execute(
        """
        CREATE FUNCTION ledger_entries_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'ledger entries are append-only'
                USING ERRCODE = 'restrict_violation';
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER ledger_entries_append_only
        BEFORE UPDATE OR DELETE ON ledger_entries
        FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only()
        """
    )

    op.execute(
        """
        CREATE TABLE idempotency_keys (
            caller_id   uuid        NOT NULL,
            key         text        NOT NULL,
            fingerprint text        NOT NULL,
            operation   text        NOT NULL,
            result      jsonb       NOT NULL,
            created_at  timestamptz NOT NULL,
            expires_at  timestamptz NOT NULL,
            CONSTRAINT pk_idempotency_keys PRIMARY KEY (caller_id, key),
            CONSTRAINT ck_idempotency_keys_key CHECK (key ~ '^[\\x21-\\x7e]{1,255}$')
        )
        """
    )
    op.execute("CREATE INDEX ix_idempotency_keys_expires ON idempotency_keys (expires_at)")


def downgrade() -> None:
    op.execute("DROP TABLE idempotency_keys")
    op.execute("DROP TABLE ledger_entries")
    op.execute("DROP FUNCTION ledger_entries_append_only()")
    op.execute("DROP FUNCTION ledger_transfer_balances()")
    op.execute("DROP TABLE transfers")
    op.execute("DROP TABLE accounts")
    op.execute("DROP TABLE orders")
