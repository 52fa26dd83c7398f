-- Users: the table the CRUD half of the lab works on.
CREATE TABLE users (
    -- An identity column: the database hands out ids, strictly increasing
    -- in insertion order, which is what keyset paging walks.
    id    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The rules are in the database too, not only in Rust: a second
    -- program writing to this table cannot break them.
    name  TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    email TEXT NOT NULL CHECK (position('@' IN email) > 0)
);

-- Unique ignoring case: `Ann@Example.com` and `ann@example.com` are one
-- address. The index's name is how the code tells this violation apart.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- Accounts: the money half. A balance never goes below zero, and the
-- database refuses it even if the code forgot to check.
CREATE TABLE accounts (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    balance BIGINT NOT NULL CHECK (balance >= 0)
);
