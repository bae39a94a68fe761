-- The rotation vocabulary as CHECK constraints: a row can hold only a state, outcome,
-- trigger, step or status that `secret` knows (crates/core/src/rotation_state.rs lists
-- the same texts; a unit test keeps them in step). Until now these were free text,
-- documented in comments that had already drifted ('requested' was missing).
--
-- SQLite cannot add a CHECK to an existing table, so both tables are rebuilt: the new
-- rotations table is filled and renamed first, then the steps (which reference it)
-- are moved through a copy, so no foreign key ever points at a missing row.
--
-- The columns mean what 0002_rotation.sql says: ids rot_<hex>; revoke_after is the end
-- of grace; provider_state and deployments are JSON (intents, handles and deployment
-- ids, never values), as is a step's detail. The CREATE statements carry no comments:
-- SQLite keeps their text and parses all of it each time a process opens the vault.

CREATE TABLE rotations_v4 (
    id             TEXT    PRIMARY KEY,
    secret         TEXT    NOT NULL,
    generator      TEXT    NOT NULL,
    trigger        TEXT    NOT NULL CHECK (trigger IN ('manual', 'due', 'scheduler', 'api')),
    state          TEXT    NOT NULL CHECK (state IN ('requested', 'create', 'push', 'verify',
                                   'finish', 'grace', 'done', 'rollback', 'rolled_back', 'failed')),
    outcome        TEXT             CHECK (outcome IN ('finished', 'rolled_back', 'failed')),
    old_version    INTEGER,
    new_version    INTEGER,
    started_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    finished_at    INTEGER,
    revoke_after   INTEGER,
    revoked_at     INTEGER,
    error          TEXT,
    provider_state TEXT    NOT NULL DEFAULT '{}',
    deployments    TEXT    NOT NULL DEFAULT '{}'
);
INSERT INTO rotations_v4 SELECT id, secret, generator, trigger, state, outcome, old_version,
    new_version, started_at, updated_at, finished_at, revoke_after, revoked_at, error,
    provider_state, deployments FROM rotations;

CREATE TABLE rotation_steps_v3 AS SELECT rotation_id, seq, step, status, at_ms, detail
    FROM rotation_steps;
DROP TABLE rotation_steps;
DROP TABLE rotations;
ALTER TABLE rotations_v4 RENAME TO rotations;
CREATE INDEX rotations_secret ON rotations (secret, started_at);
CREATE INDEX rotations_open ON rotations (state) WHERE state NOT IN ('done', 'rolled_back', 'failed');

CREATE TABLE rotation_steps (
    rotation_id TEXT    NOT NULL REFERENCES rotations (id),
    seq         INTEGER NOT NULL,
    step        TEXT    NOT NULL CHECK (step IN ('request', 'start', 'resume', 'intent', 'create',
                                'deploying', 'push', 'verify', 'finish', 'rollback', 'revoke')),
    status      TEXT    NOT NULL CHECK (status IN ('ok', 'failed', 'retry', 'started')),
    at_ms       INTEGER NOT NULL,
    detail      TEXT    NOT NULL,
    PRIMARY KEY (rotation_id, seq)
);
INSERT INTO rotation_steps SELECT rotation_id, seq, step, status, at_ms, detail
    FROM rotation_steps_v3;
DROP TABLE rotation_steps_v3;
