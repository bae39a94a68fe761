-- The vault on PostgreSQL: the same tables as migrations/sqlite/0001_init.sql, with
-- BYTEA for blobs and BIGINT for unix-millisecond times, versions and sequence numbers.
-- Never edit this file once released: add 0002_*.sql instead.

-- The marker that tells a vault's schema from another application's: created first,
-- checked before anything else is written (the analogue of SQLite's application id).
-- schema_version counts the migrations applied.
CREATE TABLE secret_vault_meta (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    application_id BIGINT  NOT NULL CHECK (application_id = 1396920916),  -- 0x53435254, "SCRT"
    schema_version INTEGER NOT NULL
);
INSERT INTO secret_vault_meta (id, application_id, schema_version) VALUES (1, 1396920916, 0);

CREATE TABLE vault (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    vault_id    BYTEA   NOT NULL,
    key_check   BYTEA   NOT NULL,
    created_at  BIGINT  NOT NULL
);

CREATE TABLE keyring (
    kind        TEXT    PRIMARY KEY CHECK (kind IN ('recipients', 'passphrase')),
    recipients  TEXT    NOT NULL,
    wrapped_key BYTEA   NOT NULL,
    updated_at  BIGINT  NOT NULL
);

CREATE TABLE secrets (
    name             TEXT    PRIMARY KEY,
    description      TEXT,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL,
    deleted_at       BIGINT,
    latest_version   BIGINT  NOT NULL,
    current_version  BIGINT,
    pending_version  BIGINT,
    previous_version BIGINT
);

CREATE TABLE versions (
    name         TEXT    NOT NULL REFERENCES secrets (name),
    version      BIGINT  NOT NULL,
    created_at   BIGINT  NOT NULL,
    nonce        BYTEA,
    ciphertext   BYTEA,
    destroyed_at BIGINT,
    PRIMARY KEY (name, version)
);

CREATE TABLE audit_log (
    seq        BIGINT  PRIMARY KEY,
    at_ms      BIGINT  NOT NULL,
    actor      TEXT    NOT NULL,
    pid        BIGINT,
    action     TEXT    NOT NULL,
    secret     TEXT,
    version    BIGINT,
    outcome    TEXT    NOT NULL,
    request_id TEXT    NOT NULL,
    details    TEXT    NOT NULL,
    mac        BYTEA   NOT NULL
);
CREATE INDEX audit_log_secret ON audit_log (secret, seq);

CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT  NOT NULL,
    mac  BYTEA   NOT NULL,
    seal BYTEA   NOT NULL
);

CREATE TABLE audit_unkeyed (
    id         BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms      BIGINT  NOT NULL,
    actor      TEXT    NOT NULL,
    pid        BIGINT,
    action     TEXT    NOT NULL,
    outcome    TEXT    NOT NULL,
    request_id TEXT    NOT NULL,
    details    TEXT    NOT NULL
);
