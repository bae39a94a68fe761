//! HTTP API: being written.
