//! Finding the binaries.

use std::path::PathBuf;
use std::process::Command;

/// The runner built with this test.
pub fn runner() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cairn-jepsen"))
}

/// The `cairn` binary of this build profile: `target/<profile>/cairn`,
/// next to the runner. `cargo test --workspace` builds it; `cargo test -p
/// cairn-jepsen` does not, so then it is built here.
///
/// # Panics
/// If it is missing and cannot be built.
pub fn cairn() -> PathBuf {
    let bin = runner()
        .parent()
        .expect("the runner lives in target/<profile>")
        .join("cairn");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "cairn-server", "--bin", "cairn"])
            .status()
            .expect("run cargo build");
        assert!(
            status.success(),
            "cargo build -p cairn-server --bin cairn failed"
        );
    }
    assert!(
        bin.exists(),
        "no cairn binary at {} (build it with `cargo build -p cairn-server --bin cairn`)",
        bin.display()
    );
    bin
}

/// nft tables this harness left behind for process `pid`.
pub fn tables_of(pid: u32) -> Vec<String> {
    let out = Command::new("/usr/sbin/nft")
        .args(["list", "tables"])
        .output()
        .expect("run nft");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.ends_with(&format!("cairn_jepsen_{pid}")))
        .map(str::to_owned)
        .collect()
}
