-- The vault: one row of identity, the wrapped vault key, secrets and their versions,
-- and the audit chain. Never edit this file once released: add 0002_*.sql instead.

CREATE TABLE vault (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    vault_id    BLOB    NOT NULL,            -- 16 random bytes, bound into every ciphertext
    key_check   BLOB    NOT NULL,            -- HMAC proving an unwrapped key belongs here
    created_at  INTEGER NOT NULL             -- unix milliseconds
);

-- One wrapped copy of the vault key per kind: age forbids mixing a passphrase
-- (scrypt) stanza with other recipients in one file.
CREATE TABLE keyring (
    kind        TEXT    PRIMARY KEY CHECK (kind IN ('recipients', 'passphrase')),
    recipients  TEXT    NOT NULL,            -- newline-separated age recipients; '' for passphrase
    wrapped_key BLOB    NOT NULL,            -- age file holding the 32-byte vault key
    updated_at  INTEGER NOT NULL
);

CREATE TABLE secrets (
    name             TEXT    PRIMARY KEY,
    description      TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    deleted_at       INTEGER,                -- soft delete; NULL when live
    latest_version   INTEGER NOT NULL,       -- versions count up from 1 and are never reused
    current_version  INTEGER,                -- labels: each on at most one version
    pending_version  INTEGER,
    previous_version INTEGER
);

CREATE TABLE versions (
    name         TEXT    NOT NULL REFERENCES secrets (name),
    version      INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    nonce        BLOB,                        -- NULL once destroyed
    ciphertext   BLOB,                        -- AES-256-GCM; NULL once destroyed
    destroyed_at INTEGER,
    PRIMARY KEY (name, version)
);

-- The audit chain. Each entry's mac covers its own canonical encoding and the
-- previous entry's mac, under a key derived from the vault key.
CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY,
    at_ms      INTEGER NOT NULL,
    actor      TEXT    NOT NULL,
    pid        INTEGER,
    action     TEXT    NOT NULL,
    secret     TEXT,
    version    INTEGER,
    outcome    TEXT    NOT NULL,
    request_id TEXT    NOT NULL,
    details    TEXT    NOT NULL,
    mac        BLOB    NOT NULL
);
CREATE INDEX audit_log_secret ON audit_log (secret, seq);

-- The newest entry, sealed with the audit key: deleting the newest entries means
-- forging this row too.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    mac  BLOB    NOT NULL,
    seal BLOB    NOT NULL
);

-- Events seen before the vault key was available (failed unlocks). They cannot be
-- chained then; the next successful unlock moves them into audit_log.
CREATE TABLE audit_unkeyed (
    id         INTEGER PRIMARY KEY,
    at_ms      INTEGER NOT NULL,
    actor      TEXT    NOT NULL,
    pid        INTEGER,
    action     TEXT    NOT NULL,
    outcome    TEXT    NOT NULL,
    request_id TEXT    NOT NULL,
    details    TEXT    NOT NULL
);
