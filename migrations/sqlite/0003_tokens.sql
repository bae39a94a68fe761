-- API tokens. The vault keeps only a keyed hash of each token's secret part; the
-- token itself is shown once, at creation.

CREATE TABLE tokens (
    id           TEXT    PRIMARY KEY,          -- tok_<hex>, the public part of the token
    name         TEXT    NOT NULL,
    hash         BLOB    NOT NULL,             -- HMAC-SHA256 of the secret part, under a key derived from the vault key
    scopes       TEXT    NOT NULL,             -- JSON array, e.g. ["secrets:read:OPENAI_*"]
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,                      -- NULL: no expiry
    revoked_at   INTEGER,
    last_used_at INTEGER
);
