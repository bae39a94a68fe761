-- Rotation runs as persisted state machines, their steps, and cross-process locks.
-- Values never appear here: provider handles (service-account ids, key ids, public
-- keys) and deployment ids only.

ALTER TABLE versions ADD COLUMN meta TEXT NOT NULL DEFAULT '{}';

CREATE TABLE rotations (
    id             TEXT    PRIMARY KEY,         -- rot_<hex>
    secret         TEXT    NOT NULL,
    generator      TEXT    NOT NULL,
    trigger        TEXT    NOT NULL,            -- manual | due | scheduler
    state          TEXT    NOT NULL,            -- create | push | verify | finish | grace | done | rollback | rolled_back | failed
    outcome        TEXT,                        -- NULL while running; finished | rolled_back | failed
    old_version    INTEGER,
    new_version    INTEGER,
    started_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    finished_at    INTEGER,
    revoke_after   INTEGER,                     -- grace end: when the old credential is revoked
    revoked_at     INTEGER,
    error          TEXT,
    provider_state TEXT    NOT NULL DEFAULT '{}',  -- JSON: intents and handles, never values
    deployments    TEXT    NOT NULL DEFAULT '{}'   -- JSON: target -> deployment id
);
CREATE INDEX rotations_secret ON rotations (secret, started_at);
CREATE INDEX rotations_open ON rotations (state) WHERE state NOT IN ('done', 'rolled_back', 'failed');

CREATE TABLE rotation_steps (
    rotation_id TEXT    NOT NULL REFERENCES rotations (id),
    seq         INTEGER NOT NULL,
    step        TEXT    NOT NULL,
    status      TEXT    NOT NULL,               -- ok | failed | retry | started
    at_ms       INTEGER NOT NULL,
    detail      TEXT    NOT NULL,               -- JSON, never a value
    PRIMARY KEY (rotation_id, seq)
);

-- Leases: one holder per name ('rotation:NAME', 'scheduler'); a holder that died
-- (its pid is gone on this boot) or whose lease expired can be replaced.
CREATE TABLE locks (
    name       TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,                -- boot_id:pid:random
    expires_at INTEGER NOT NULL
);
