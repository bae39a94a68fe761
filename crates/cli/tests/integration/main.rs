//! Integration tests: one test binary (every file in `tests/` would be a separate
//! link). Each test runs the real `secret` binary in its own temp dir with a cleared
//! environment, and asserts on what a user sees: exit codes, output, files on disk.

mod audit;
mod crash_matrix;
mod fault_matrix;
mod interop;
mod jwks;
mod limits;
mod rotation;
mod serve;
mod util;
mod vault;
