//! cairn-jepsen's integration tests: the runner against real `cairn`
//! processes.

mod smoke;
mod support;
