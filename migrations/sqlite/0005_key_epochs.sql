-- Key epochs. `secret rekey` replaces the vault key; the audit entries written under
-- an earlier key stay verifiable with that key's audit MAC key, kept here sealed
-- (AES-256-GCM) under a key derived from the vault key now in force. Every rekey
-- re-seals the rows under the new key and adds one for the key it retires. The epoch
-- in force is one past the newest row (1, the key made at init, when there is none).
-- Values never appear here, nor any old vault key itself.

CREATE TABLE retired_keys (
    epoch       INTEGER PRIMARY KEY,        -- the epoch this key was in force
    retired_at  INTEGER NOT NULL,           -- unix ms of the rekey that ended it
    retired_seq INTEGER NOT NULL,           -- that rekey's audit entry, the last MACed under it
    nonce       BLOB    NOT NULL,
    audit_key   BLOB    NOT NULL            -- the epoch's audit MAC key, sealed
);
