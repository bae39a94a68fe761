//! Integration tests: one test binary (every file in `tests/` would be a separate
//! link). Each test runs the real `secret` binary in its own temp dir with a cleared
//! environment, and asserts on what a user sees: exit codes, output, files on disk.

mod argv;
mod audit;
mod backup;
mod copy;
mod crash_matrix;
mod daily;
mod drift;
mod fault_matrix;
mod instances;
mod integrity;
mod interop;
mod jwks;
mod keys;
mod leaks;
mod limits;
mod postgres;
mod remote;
mod rotation;
mod serve;
mod util;
mod vault;
