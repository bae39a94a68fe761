-- Key epochs: the audit MAC key of each retired vault key, sealed under the key in
-- force (migrations/sqlite/0005_key_epochs.sql).

CREATE TABLE retired_keys (
    epoch       BIGINT  PRIMARY KEY,
    retired_at  BIGINT  NOT NULL,
    retired_seq BIGINT  NOT NULL,
    nonce       BYTEA   NOT NULL,
    audit_key   BYTEA   NOT NULL
);
