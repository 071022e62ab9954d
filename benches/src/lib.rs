//! cairn-benches: criterion micro-benches and `cairn-bench`. The benchmark
//! issue fills this crate; the foundation's load loop lives in
//! `server/examples/kvload.rs` until then.
