-- The Flow API's schema. Kept to SQL that CockroachDB also runs: no
-- advisory locks, no LISTEN/NOTIFY, no triggers or stored procedures.

-- +goose Up

-- Every collection but the process logs: an ordered key-value space whose
-- key prefixes are laid out in internal/api/store/keys.go. Keys compare
-- bytewise (BYTEA). expires_at, when set, hides the row from then on (the
-- store deletes it later).
CREATE TABLE kv (
    k          BYTEA PRIMARY KEY,
    v          BYTEA NOT NULL,
    expires_at TIMESTAMPTZ
);
CREATE INDEX kv_expires_at ON kv (expires_at);

-- A process's summary and counters: last_seq is the sequence number of its
-- newest event, jobs how many jobs were submitted to it.
CREATE TABLE processes (
    id              TEXT PRIMARY KEY,
    owner           TEXT NOT NULL DEFAULT '',
    last_seq        BIGINT NOT NULL DEFAULT 0,
    last_event_type TEXT NOT NULL DEFAULT '',
    last_event_at   TIMESTAMPTZ,
    jobs            BIGINT NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);

-- A process's log. The primary key makes a sequence number taken once per
-- process; events_dedup makes an append (a request id, a job step) land at
-- most once per process: a concurrent or repeated append fails instead of
-- forking the log.
CREATE TABLE events (
    process_id TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    id         UUID NOT NULL,
    type       TEXT NOT NULL DEFAULT '',
    data       BYTEA NOT NULL,
    request_id TEXT NOT NULL DEFAULT '',
    job_id     TEXT NOT NULL DEFAULT '',
    dedup      TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (process_id, seq),
    CONSTRAINT events_dedup UNIQUE (process_id, dedup)
);

-- How many partitions share the processes, and the epoch of that count
-- (one row). Every write to a process reads it in its transaction.
CREATE TABLE partitioning (
    id    INT PRIMARY KEY CHECK (id = 1),
    count INT NOT NULL CHECK (count >= 1),
    epoch BIGINT NOT NULL
);

-- +goose Down
DROP TABLE partitioning;
DROP TABLE events;
DROP TABLE processes;
DROP TABLE kv;
