-- Rotation runs, their steps, and cross-process leases (migrations/sqlite/0002_rotation.sql
-- says what each column means). Values never appear here.

ALTER TABLE versions ADD COLUMN meta TEXT NOT NULL DEFAULT '{}';

CREATE TABLE rotations (
    id             TEXT    PRIMARY KEY,
    secret         TEXT    NOT NULL,
    generator      TEXT    NOT NULL,
    trigger        TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    outcome        TEXT,
    old_version    BIGINT,
    new_version    BIGINT,
    started_at     BIGINT  NOT NULL,
    updated_at     BIGINT  NOT NULL,
    finished_at    BIGINT,
    revoke_after   BIGINT,
    revoked_at     BIGINT,
    error          TEXT,
    provider_state TEXT    NOT NULL DEFAULT '{}',
    deployments    TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX rotations_secret ON rotations (secret, started_at);
CREATE INDEX rotations_open ON rotations (state) WHERE state NOT IN ('done', 'rolled_back', 'failed');

CREATE TABLE rotation_steps (
    rotation_id TEXT    NOT NULL REFERENCES rotations (id),
    seq         BIGINT  NOT NULL,
    step        TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    at_ms       BIGINT  NOT NULL,
    detail      TEXT    NOT NULL,
    PRIMARY KEY (rotation_id, seq)
);

CREATE TABLE locks (
    name       TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at BIGINT  NOT NULL
);
