//! cairnctl: the operator's command. The ctl issue fills it; until then it
//! only reports its version.

fn main() {
    println!("cairnctl version: {}", env!("CARGO_PKG_VERSION"));
}
