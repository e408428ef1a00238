"""one round trip per pay, refund and credit; the double entry checked once
per transfer

Settlement functions. A pay, a refund or a credit, as the service's domain
decided it, is committed by one function call: the order's transition (if
the order is still what the decision was made from), both ledger legs and
the balances, the outbox event and the idempotency record. The functions
decide nothing the domain decides (who may act, the state machine, funds):
they compare and set, and report back what they found instead when the
order changed meanwhile or the request already ran.

The double entry of a transfer is checked once, at commit, by a constraint
trigger on the transfer (it was checked once per entry, twice per
transfer). A transfer cannot gain an entry afterwards: an entry whose
transfer already has two is refused as it is written. The checks are the
same or stricter: every transfer has exactly two entries, on two accounts
of its currency whose owners they name, summing to zero and moving its
amount.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TRANSFER_CHECK = """
CREATE FUNCTION transfer_is_one_double_entry() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    entries bigint;
    accounts_used bigint;
    total numeric;
    moved numeric;
    consistent boolean;
BEGIN
    SELECT count(*), count(DISTINCT e.account_id), sum(e.amount), sum(abs(e.amount)),
           coalesce(bool_and(e.currency = NEW.currency AND a.currency = NEW.currency
                             AND a.owner_id IS NOT DISTINCT FROM e.owner_id
                             AND e.kind = NEW.kind
                             AND e.order_id IS NOT DISTINCT FROM NEW.order_id), false)
      INTO entries, accounts_used, total, moved, consistent
      FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
     WHERE e.transfer_id = NEW.id;
    IF entries = 0 THEN
        RAISE EXCEPTION 'transfer % has no ledger entries', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ck_transfers_have_entries';
    END IF;
    IF entries <> 2 OR accounts_used <> 2 OR total <> 0 OR moved <> 2 * NEW.amount
       OR NOT consistent THEN
        RAISE EXCEPTION 'entries of transfer % are not one balanced double entry', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ck_ledger_transfer_sums_to_zero';
    END IF;
    RETURN NULL;
END
$$
"""

# Runs before each entry is written: it continues its account's chain of
# balances (as in 0003), and its transfer has fewer than two entries so far.
_ENTRY_CHECK = """
CREATE FUNCTION ledger_entry_checks() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    previous bigint;
BEGIN
    SELECT balance_after INTO previous FROM ledger_entries
     WHERE account_id = NEW.account_id ORDER BY seq DESC LIMIT 1;
    IF NEW.balance_after <> coalesce(previous, 0) + NEW.amount THEN
        RAISE EXCEPTION 'entry % does not continue the balance of account %',
            NEW.id, NEW.account_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ck_ledger_entries_balance_chain';
    END IF;
    IF (SELECT count(*) FROM ledger_entries WHERE transfer_id = NEW.transfer_id) >= 2 THEN
        RAISE EXCEPTION 'transfer % already has its two entries', NEW.transfer_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ck_ledger_transfer_sums_to_zero';
    END IF;
    RETURN NEW;
END
$$
"""

# Moves an account's balance by delta and says which account and what it
# holds now; opens the account at its first money in. A wallet that would go
# below zero is refused by ck_balances_non_negative, and so is a wallet that
# does not exist yet being paid from.
_MOVE = """
CREATE FUNCTION ledger_move(
    p_owner uuid, p_currency char(3), p_delta bigint, p_at timestamptz,
    OUT moved_account uuid, OUT moved_balance bigint
)
LANGUAGE plpgsql AS $$
BEGIN
    FOR attempt IN 1..2 LOOP
        IF p_owner IS NULL THEN
            UPDATE accounts a SET balance = a.balance + p_delta, updated_at = p_at
             WHERE a.kind = 'issuance' AND a.currency = p_currency
            RETURNING a.id, a.balance INTO moved_account, moved_balance;
        ELSE
            UPDATE accounts a SET balance = a.balance + p_delta, updated_at = p_at
             WHERE a.kind = 'wallet' AND a.owner_id = p_owner AND a.currency = p_currency
            RETURNING a.id, a.balance INTO moved_account, moved_balance;
        END IF;
        IF FOUND THEN
            RETURN;
        END IF;
        IF p_owner IS NOT NULL AND p_delta < 0 THEN
            RAISE EXCEPTION 'wallet of % holds no %', p_owner, p_currency
                USING ERRCODE = 'check_violation', CONSTRAINT = 'ck_balances_non_negative';
        END IF;
        INSERT INTO accounts (id, owner_id, kind, currency, balance, created_at, updated_at)
        VALUES (gen_random_uuid(), p_owner,
                CASE WHEN p_owner IS NULL THEN 'issuance' ELSE 'wallet' END,
                p_currency, 0, p_at, p_at)
        ON CONFLICT DO NOTHING;
    END LOOP;
    RAISE EXCEPTION 'the account of % in % could not be opened', p_owner, p_currency;
END
$$
"""

# A transfer and its two entries. The accounts are locked in one global
# order (the issuance account first, then wallets by owner id), so two
# transfers never deadlock.
_TRANSFER = """
CREATE FUNCTION ledger_transfer(
    p_id uuid, p_kind text, p_order_id uuid, p_source uuid, p_destination uuid,
    p_currency char(3), p_amount bigint, p_at timestamptz,
    p_source_entry uuid, p_destination_entry uuid,
    OUT source_balance bigint, OUT destination_balance bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    source_account uuid;
    destination_account uuid;
BEGIN
    IF p_source IS NULL OR p_source < p_destination THEN
        SELECT * INTO source_account, source_balance
          FROM ledger_move(p_source, p_currency, -p_amount, p_at);
        SELECT * INTO destination_account, destination_balance
          FROM ledger_move(p_destination, p_currency, p_amount, p_at);
    ELSE
        SELECT * INTO destination_account, destination_balance
          FROM ledger_move(p_destination, p_currency, p_amount, p_at);
        SELECT * INTO source_account, source_balance
          FROM ledger_move(p_source, p_currency, -p_amount, p_at);
    END IF;
    INSERT INTO transfers (id, kind, order_id, currency, amount, created_at)
    VALUES (p_id, p_kind, p_order_id, p_currency, p_amount, p_at);
    INSERT INTO ledger_entries (id, transfer_id, account_id, owner_id, kind, amount,
                                currency, balance_after, order_id, created_at)
    VALUES (p_source_entry, p_id, source_account, p_source, p_kind, -p_amount,
            p_currency, source_balance, p_order_id, p_at),
           (p_destination_entry, p_id, destination_account, p_destination, p_kind, p_amount,
            p_currency, destination_balance, p_order_id, p_at);
END
$$
"""

# An event into the outbox, numbered within its aggregate: the aggregate's
# counter row is taken first, which holds its next event back until this
# transaction ends (see 0004).
_OUTBOX_RECORD = """
CREATE FUNCTION outbox_record(
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
    INSERT INTO outbox
        (id, type, subject, aggregate_type, aggregate_id, version, payload, occurred_at)
    SELECT p_id, p_type, p_subject, p_aggregate_type, p_aggregate_id, numbered.version,
           p_payload, p_occurred_at
      FROM numbered;
END
$$
"""

# Stores the answer under (caller, key); an expired record under the same
# key is taken over. False: an unexpired record holds the key.
_REMEMBER = """
CREATE FUNCTION idempotency_remember(
    p_caller_id uuid, p_key text, p_fingerprint text, p_operation text, p_result jsonb,
    p_created_at timestamptz, p_expires_at timestamptz
) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO idempotency_keys AS k
        (caller_id, key, fingerprint, operation, result, created_at, expires_at)
    VALUES (p_caller_id, p_key, p_fingerprint, p_operation, p_result, p_created_at, p_expires_at)
    ON CONFLICT (caller_id, key) DO UPDATE
        SET fingerprint = EXCLUDED.fingerprint, operation = EXCLUDED.operation,
            result = EXCLUDED.result, created_at = EXCLUDED.created_at,
            expires_at = EXCLUDED.expires_at
        WHERE k.expires_at <= EXCLUDED.created_at;
    RETURN FOUND;
END
$$
"""

# What a caller stored under a key and has not expired, as JSON; NULL if none.
_STORED = """
CREATE FUNCTION idempotency_stored(p_caller_id uuid, p_key text, p_at timestamptz)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    found_record jsonb;
BEGIN
    SELECT jsonb_build_object('fingerprint', k.fingerprint, 'operation', k.operation,
                              'result', k.result, 'created_at', k.created_at,
                              'expires_at', k.expires_at)
      INTO found_record
      FROM idempotency_keys k
     WHERE k.caller_id = p_caller_id AND k.key = p_key AND k.expires_at > p_at;
    RETURN found_record;
END
$$
"""

# Each settlement waits for its locks (the order row, the wallets) no longer
# than p_lock_timeout, what the caller's deadline leaves it ('0': no limit).
# A statement whose caller has given up must not wait its turn and then
# commit: its client may be gone, and the cancel the client sent may lose
# the race with the lock's release.
#
# A pay or a refund. outcome: 'settled' (destination_balance is the
# destination wallet's balance after it); 'replayed' (this caller stored an
# answer under this key: detail is that record; nothing was done); 'stale'
# (the order is not what the decision was made from: detail is the order as
# it is now, NULL if it is gone; nothing was done). The order row is locked
# first: a request that held the distributed lock and lost it while paused
# has committed or not by the time this one reads the key.
_SETTLE_ORDER = """
CREATE FUNCTION settle_order(
    p_order_id uuid, p_status_before text, p_payer_id uuid, p_payee_id uuid,
    p_amount bigint, p_currency char(3),
    p_status_after text, p_updated_at timestamptz, p_paid_at timestamptz,
    p_transfer_id uuid, p_kind text, p_source uuid, p_destination uuid,
    p_transfer_at timestamptz, p_source_entry uuid, p_destination_entry uuid,
    p_caller_id uuid, p_key text, p_fingerprint text, p_operation text, p_result jsonb,
    p_created_at timestamptz, p_expires_at timestamptz,
    p_event_id uuid, p_event_type text, p_event_subject text, p_aggregate_type text,
    p_aggregate_id uuid, p_event_payload jsonb, p_occurred_at timestamptz,
    p_lock_timeout text,
    OUT outcome text, OUT destination_balance bigint, OUT detail jsonb
)
LANGUAGE plpgsql AS $$
DECLARE
    o orders%ROWTYPE;
BEGIN
    PERFORM set_config('lock_timeout', p_lock_timeout, true);
    SELECT * INTO o FROM orders WHERE id = p_order_id FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'stale';
        RETURN;
    END IF;
    detail := idempotency_stored(p_caller_id, p_key, p_created_at);
    IF detail IS NOT NULL THEN
        outcome := 'replayed';
        RETURN;
    END IF;
    IF o.status <> p_status_before OR o.payer_id <> p_payer_id OR o.payee_id <> p_payee_id
       OR o.amount <> p_amount OR o.currency <> p_currency THEN
        outcome := 'stale';
        detail := to_jsonb(o);
        RETURN;
    END IF;
    SELECT t.destination_balance INTO destination_balance
      FROM ledger_transfer(p_transfer_id, p_kind, p_order_id, p_source, p_destination,
                           p_currency, p_amount, p_transfer_at,
                           p_source_entry, p_destination_entry) t;
    UPDATE orders SET status = p_status_after, updated_at = p_updated_at, paid_at = p_paid_at
     WHERE id = p_order_id;
    PERFORM outbox_record(p_event_id, p_event_type, p_event_subject, p_aggregate_type,
                          p_aggregate_id, p_event_payload, p_occurred_at);
    IF NOT idempotency_remember(p_caller_id, p_key, p_fingerprint, p_operation, p_result,
                                p_created_at, p_expires_at) THEN
        RAISE EXCEPTION 'idempotency key % of caller % is taken', p_key, p_caller_id
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'pk_idempotency_keys';
    END IF;
    outcome := 'settled';
END
$$
"""

# A credit from the currency's issuance account. The wallet's balance after
# it is only known here: it is written into the event's payload and the
# stored answer under "balance". outcome: 'settled' or 'replayed', as above.
_SETTLE_CREDIT = """
CREATE FUNCTION settle_credit(
    p_transfer_id uuid, p_user_id uuid, p_currency char(3), p_amount bigint,
    p_transfer_at timestamptz, p_source_entry uuid, p_destination_entry uuid,
    p_caller_id uuid, p_key text, p_fingerprint text, p_operation text, p_result jsonb,
    p_created_at timestamptz, p_expires_at timestamptz,
    p_event_id uuid, p_event_type text, p_event_subject text, p_aggregate_type text,
    p_aggregate_id uuid, p_event_payload jsonb, p_occurred_at timestamptz,
    p_lock_timeout text,
    OUT outcome text, OUT destination_balance bigint, OUT detail jsonb
)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('lock_timeout', p_lock_timeout, true);
    detail := idempotency_stored(p_caller_id, p_key, p_created_at);
    IF detail IS NOT NULL THEN
        outcome := 'replayed';
        RETURN;
    END IF;
    SELECT t.destination_balance INTO destination_balance
      FROM ledger_transfer(p_transfer_id, 'credit', NULL, NULL, p_user_id,
                           p_currency, p_amount, p_transfer_at,
                           p_source_entry, p_destination_entry) t;
    PERFORM outbox_record(p_event_id, p_event_type, p_event_subject, p_aggregate_type,
                          p_aggregate_id,
                          jsonb_set(p_event_payload, '{balance}', to_jsonb(destination_balance)),
                          p_occurred_at);
    IF NOT idempotency_remember(p_caller_id, p_key, p_fingerprint, p_operation,
                                jsonb_set(p_result, '{balance}', to_jsonb(destination_balance)),
                                p_created_at, p_expires_at) THEN
        RAISE EXCEPTION 'idempotency key % of caller % is taken', p_key, p_caller_id
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'pk_idempotency_keys';
    END IF;
    outcome := 'settled';
END
$$
"""

_FUNCTIONS = (
    "settle_credit",
    "settle_order",
    "idempotency_stored",
    "idempotency_remember",
    "outbox_record",
    "ledger_transfer",
    "ledger_move",
)


def upgrade() -> None:
    # The double entry, once per transfer.
    op.execute("DROP TRIGGER ck_ledger_transfer_sums_to_zero ON ledger_entries")
    op.execute("DROP TRIGGER ck_transfers_have_entries ON transfers")
    op.execute(_TRANSFER_CHECK)
    op.execute(
        """
        CREATE CONSTRAINT TRIGGER ck_transfers_double_entry
        AFTER INSERT ON transfers
        DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION transfer_is_one_double_entry()
        """
    )
    op.execute("DROP TRIGGER ck_ledger_entries_balance_chain ON ledger_entries")
    op.execute(_ENTRY_CHECK)
    op.execute(
        """
        CREATE TRIGGER ck_ledger_entries_balance_chain
        BEFORE INSERT ON ledger_entries
        FOR EACH ROW EXECUTE FUNCTION ledger_entry_checks()
        """
    )
    for statement in (
        _MOVE,
        _TRANSFER,
        _OUTBOX_RECORD,
        _REMEMBER,
        _STORED,
        _SETTLE_ORDER,
        _SETTLE_CREDIT,
    ):
        op.execute(statement)


def downgrade() -> None:
    for name in _FUNCTIONS:
        op.execute(f"DROP FUNCTION {name}")
    op.execute("DROP TRIGGER ck_ledger_entries_balance_chain ON ledger_entries")
    op.execute("DROP FUNCTION ledger_entry_checks()")
    op.execute(
        """
        CREATE TRIGGER ck_ledger_entries_balance_chain
        BEFORE INSERT ON ledger_entries
        FOR EACH ROW EXECUTE FUNCTION ledger_entry_continues_chain()
        """
    )
    op.execute("DROP TRIGGER ck_transfers_double_entry ON transfers")
    op.execute("DROP FUNCTION transfer_is_one_double_entry()")
    op.execute(
        """
        CREATE CONSTRAINT TRIGGER ck_transfers_have_entries
        AFTER INSERT ON transfers
        DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION transfers_have_entries()
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
