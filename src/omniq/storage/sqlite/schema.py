"""The tables of a SQLite backend and the indexes that keep each access path flat.

A task row's ``status`` column is its state; the payload is the task at rest (its lease and
delivery count live in columns, so a claim or a renewal never rewrites it). ``rank`` is
``PRIORITY_MAX - priority``, so the claim order is ``rank, due_ms, id``: priority, due time,
then creation order (ids sort by creation time), as in the file backend's names.
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', '1');

CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    status TEXT NOT NULL,
    rank INTEGER NOT NULL,
    due_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    lease_token TEXT,
    lease_expires_ms INTEGER,
    lease_worker TEXT,
    finished_ms INTEGER,
    ttl REAL,
    expires_ms INTEGER,
    ext TEXT NOT NULL,
    payload BLOB NOT NULL
) WITHOUT ROWID;
-- The claim path: only pending rows, in claim order; finished rows never enter it.
CREATE INDEX IF NOT EXISTS tasks_claim ON tasks (queue, rank, due_ms, id)
    WHERE status = 'pending';
-- The reaper: running rows by lease expiry.
CREATE INDEX IF NOT EXISTS tasks_leases ON tasks (lease_expires_ms) WHERE status = 'running';

CREATE TABLE IF NOT EXISTS results (
    task_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    success INTEGER NOT NULL,
    completed_ms INTEGER NOT NULL,
    expires_ms INTEGER,
    ext TEXT NOT NULL,
    payload BLOB NOT NULL
);

CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    ts_us INTEGER NOT NULL,
    ext TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_task ON events (task_id, ts_us);
CREATE INDEX IF NOT EXISTS events_by_time ON events (ts_us);

CREATE TABLE IF NOT EXISTS schedules (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    next_run_ms INTEGER,
    ext TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS schedules_due ON schedules (status, next_run_ms);

-- Run claims of schedules: one row per (schedule, run time); a take-over raises generation.
CREATE TABLE IF NOT EXISTS schedule_runs (
    schedule_id TEXT NOT NULL,
    run_ms INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    owner TEXT NOT NULL,
    claimed_ms INTEGER NOT NULL,
    PRIMARY KEY (schedule_id, run_ms)
) WITHOUT ROWID;

-- Rows that did not decode, moved out of their table with the error.
CREATE TABLE IF NOT EXISTS corrupt (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    error TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    payload BLOB
);
"""
