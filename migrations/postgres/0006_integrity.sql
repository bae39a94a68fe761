-- Integrity of the metadata that decides what a read returns
-- (migrations/sqlite/0006_integrity.sql): a MAC over each secret's row and versions,
-- over each token's row, and over the number of secrets.

ALTER TABLE secrets ADD COLUMN mac BYTEA;
ALTER TABLE tokens ADD COLUMN mac BYTEA;
ALTER TABLE vault ADD COLUMN census BYTEA;
