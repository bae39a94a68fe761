-- Integrity of the metadata that decides what a read returns (issue 13).
--
-- secrets.mac: HMAC-SHA256, under a key derived from the vault key, over a canonical
--   encoding of the secret's row (labels, latest version, deleted flag, ...) and of
--   every version row of it (number, times, destroyed flag, whether it holds a
--   ciphertext, provider handle). Checked on every read and before every write.
-- tokens.mac: the same over a token's row (scopes, expiry, revocation), except the
--   time it was last used.
-- vault.census: the same over the number of secrets, so a secret removed whole (row
--   and versions) is caught too.
--
-- Vaults made before this migration get their MACs at the first unlock with the key;
-- from then on a missing MAC is tampering (the key check records which of the two a
-- vault is, and changing it needs the key). The CREATE statements of 0001 are kept as
-- they are: SQLite appends added columns to the stored schema text.

ALTER TABLE secrets ADD COLUMN mac BLOB;
ALTER TABLE tokens ADD COLUMN mac BLOB;
ALTER TABLE vault ADD COLUMN census BLOB;
