-- The schema, applied by the server at start (sqlx::migrate!). The grader
-- reads and writes two things here directly (see the README's Spec):
--   accounts (id, balance)            to check balances and lock rows;
--   idempotency_keys (key, created_at) to age a key past its TTL.
-- Everything else (a ledger of transfers, what you store with a key) is
-- yours to design.

CREATE TABLE accounts (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    balance BIGINT NOT NULL CHECK (balance >= 0)
);

-- TODO: CREATE TABLE idempotency_keys (key TEXT ..., created_at TIMESTAMPTZ ..., ...);
