-- The tasks service's schema. sqlx::migrate! embeds this file in the
-- binary and runs it once per database, at start, recording it in
-- _sqlx_migrations; never edit it after it ran somewhere (sqlx checks its
-- checksum): add 0002_....sql instead.

CREATE TABLE tasks (
    -- Creation order, and the list cursor: a keyset page is
    -- WHERE seq > $cursor ORDER BY seq, an index range scan on this key.
    seq      BIGSERIAL PRIMARY KEY,
    -- The public name; random, so it says nothing about order.
    id       UUID NOT NULL UNIQUE,
    title    TEXT NOT NULL,
    done     BOOLEAN NOT NULL DEFAULT false,
    -- 1..=5 is the API's rule, checked in model.rs; deliberately no CHECK
    -- here (lab 34 corrupts a row on purpose to see what the service does).
    priority SMALLINT NOT NULL,
    -- Bumped by every write; the ETag, and the If-Match check.
    version  BIGINT NOT NULL
);

-- One row per successful write, in the write's own transaction.
CREATE TABLE task_events (
    id       BIGSERIAL PRIMARY KEY,
    task_id  UUID NOT NULL,
    -- The task's version after the change (for a delete: the version deleted).
    version  BIGINT NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('created', 'updated', 'deleted')),
    at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A task's history is read by task.
CREATE INDEX task_events_task_id ON task_events (task_id);
