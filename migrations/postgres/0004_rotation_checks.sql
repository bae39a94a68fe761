-- The rotation vocabulary as CHECK constraints, the same texts as
-- migrations/sqlite/0004_rotation_checks.sql (crates/core/src/rotation_state.rs lists
-- them; a test keeps them in step). PostgreSQL adds a CHECK in place.

ALTER TABLE rotations
    ADD CONSTRAINT rotations_trigger CHECK (trigger IN ('manual', 'due', 'scheduler', 'api')),
    ADD CONSTRAINT rotations_state CHECK (state IN ('requested', 'create', 'push', 'verify',
        'finish', 'grace', 'done', 'rollback', 'rolled_back', 'failed')),
    ADD CONSTRAINT rotations_outcome CHECK (outcome IN ('finished', 'rolled_back', 'failed'));

ALTER TABLE rotation_steps
    ADD CONSTRAINT rotation_steps_step CHECK (step IN ('request', 'start', 'resume', 'intent',
        'create', 'deploying', 'push', 'verify', 'finish', 'rollback', 'revoke')),
    ADD CONSTRAINT rotation_steps_status CHECK (status IN ('ok', 'failed', 'retry', 'started'));
