-- Leadership among several `secret serve` instances (issue 12, part 2).
--
-- locks.epoch: the fencing token of a lease. It grows by one each time a lease passes
-- to a new holder (never when the holder renews it), and a leader's every rotation
-- step checks, in its own transaction, that the lease still names it at the epoch it
-- took: a deposed leader's late write is refused. Per-secret rotation locks keep 0.

ALTER TABLE locks ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
