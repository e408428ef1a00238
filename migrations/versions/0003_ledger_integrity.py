"""the database checks the whole double entry, not only its sum

Every transfer has exactly two entries, on two accounts of its currency,
moving its amount; each entry's balance_after continues its account's
chain; an account's balance is its last entry's balance_after; transfers
and entries are append-only (TRUNCATE included); an account's identity
never changes. With these, a balance always equals the sum of its entries
whatever SQL is run, not only what the service runs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The previous entry of an account is found by this index.
    op.execute(
        "CREATE INDEX ix_ledger_entries_account_seq ON ledger_entries (account_id, seq DESC)"
    )

    # At commit, for each transfer with new entries: two entries, on two
    # different accounts whose owner and currency they repeat, in the
    # transfer's currency, summing to zero and moving its amount.
    op.execute(
        """
        CREATE OR REPLACE FUNCTION ledger_transfer_balances() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE
            t transfers%ROWTYPE;
            entries bigint;
            accounts_used bigint;
            total numeric;
            moved numeric;
            consistent boolean;
        BEGIN
            SELECT * INTO t FROM transfers WHERE id = NEW.transfer_id;
            SELECT count(*), count(DISTINCT e.account_id), sum(e.amount), sum(abs(e.amount)),
                   coalesce(bool_and(e.currency = t.currency AND a.currency = t.currency
                                     AND a.owner_id IS NOT DISTINCT FROM e.owner_id
                                     AND e.kind = t.kind
                                     AND e.order_id IS NOT DISTINCT FROM t.order_id), false)
              INTO entries, accounts_used, total, moved, consistent
              FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
             WHERE e.transfer_id = NEW.transfer_id;
            IF entries <> 2 OR accounts_used <> 2 OR total <> 0 OR moved <> 2 * t.amount
               OR NOT consistent THEN
                RAISE EXCEPTION 'entries of transfer % are not one balanced double entry',
                    NEW.transfer_id
                    USING ERRCODE = 'check_violation',
                          CONSTRAINT = 'ck_ledger_transfer_sums_to_zero';
            END IF;
            RETURN NULL;
        END
        $$
        """
    )

    # A transfer without entries is no transfer.
    op.execute(
        """
        CREATE FUNCTION transfers_have_entries() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM ledger_entries WHERE transfer_id = NEW.id) THEN
                RAISE EXCEPTION 'transfer % has no ledger entries', NEW.id
                    USING ERRCODE = 'check_violation',
                          CONSTRAINT = 'ck_transfers_have_entries';
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE CONSTRAINT TRIGGER ck_transfers_have_entries
        AFTER INSERT ON transfers
        DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION transfers_have_entries()
        """
    )

    # Each entry continues its account's chain of balances.
    op.execute(
        """
        CREATE FUNCTION ledger_entry_continues_chain() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE
            previous bigint;
        BEGIN
            SELECT balance_after INTO previous FROM ledger_entries
             WHERE account_id = NEW.account_id ORDER BY seq DESC LIMIT 1;
            IF NEW.balance_after <> coalesce(previous, 0) + NEW.amount THEN
                RAISE EXCEPTION 'entry % does not continue the balance of account %',
                    NEW.id, NEW.account_id
                    USING ERRCODE = 'check_violation',
                          CONSTRAINT = 'ck_ledger_entries_balance_chain';
            END IF;
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER ck_ledger_entries_balance_chain
        BEFORE INSERT ON ledger_entries
        FOR EACH ROW EXECUTE FUNCTION ledger_entry_continues_chain()
        """
    )

    # At commit, an account's balance is its last entry's balance_after.
    op.execute(
        """
        CREATE FUNCTION account_balance_matches_entries() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE
            last_balance bigint;
            current bigint;
        BEGIN
            SELECT balance INTO current FROM accounts WHERE id = NEW.id;
            SELECT balance_after INTO last_balance FROM ledger_entries
             WHERE account_id = NEW.id ORDER BY seq DESC LIMIT 1;
            IF current <> coalesce(last_balance, 0) THEN
                RAISE EXCEPTION 'balance of account % is not the sum of its entries', NEW.id
                    USING ERRCODE = 'check_violation',
                          CONSTRAINT = 'ck_accounts_balance_matches_entries';
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE CONSTRAINT TRIGGER ck_accounts_balance_matches_entries
        AFTER INSERT OR UPDATE ON accounts
        DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION account_balance_matches_entries()
        """
    )

    # An account is always the same account.
    op.execute(
        """
        CREATE FUNCTION accounts_identity_fixed() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.id <> OLD.id OR NEW.kind <> OLD.kind OR NEW.currency <> OLD.currency
               OR NEW.owner_id IS DISTINCT FROM OLD.owner_id THEN
                RAISE EXCEPTION 'an account''s id, kind, owner and currency never change'
                    USING ERRCODE = 'restrict_violation';
            END IF;
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER accounts_identity_fixed
        BEFORE UPDATE ON accounts
        FOR EACH ROW EXECUTE FUNCTION accounts_identity_fixed()
        """
    )

    # Transfers are append-only like their entries, and neither table can be
    # emptied with TRUNCATE.
    op.execute(
        """
        CREATE FUNCTION ledger_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only', TG_TABLE_NAME
                USING ERRCODE = 'restrict_violation';
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER transfers_append_only
        BEFORE UPDATE OR DELETE ON transfers
        FOR EACH ROW EXECUTE FUNCTION ledger_append_only()
        """
    )
    for table in ("transfers", "ledger_entries"):
        op.execute(
            f"""
            CREATE TRIGGER {table}_no_truncate
            BEFORE TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only()
            """
        )


def downgrade() -> None:
    for table in ("transfers", "ledger_entries"):
        op.execute(f"DROP TRIGGER {table}_no_truncate ON {table}")
    op.execute("DROP TRIGGER transfers_append_only ON transfers")
    op.execute("DROP FUNCTION ledger_append_only()")
    op.execute("DROP TRIGGER accounts_identity_fixed ON accounts")
    op.execute("DROP FUNCTION accounts_identity_fixed()")
    op.execute("DROP TRIGGER ck_accounts_balance_matches_entries ON accounts")
    op.execute("DROP FUNCTION account_balance_matches_entries()")
    op.execute("DROP TRIGGER ck_ledger_entries_balance_chain ON ledger_entries")
    op.execute("DROP FUNCTION ledger_entry_continues_chain()")
    op.execute("DROP TRIGGER ck_transfers_have_entries ON transfers")
    op.execute("DROP FUNCTION transfers_have_entries()")
    op.execute(
        """
        CREATE OR REPLACE FUNCTION ledger_transfer_balances() RETURNS trigger
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
    op.execute("DROP INDEX ix_ledger_entries_account_seq")
