//! cairn-jepsen: the fault-injection harness and its checkers. The Jepsen
//! issue fills this crate.
