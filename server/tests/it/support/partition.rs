//! Network partitions between cluster members, made with nftables.
//!
//! Members of a [`super::cluster::Cluster`] each have their own address,
//! 127.0.0.x, and Cairn's peer calls leave from the address its peer
//! listener is bound to, so a rule on source and destination addresses
//! cuts two members apart both ways. The test's own connections come from
//! 127.0.0.1 and are never cut. (etcd's peer calls leave from 127.0.0.1
//! whatever it listens on, so this cannot partition an etcd cluster.)
//!
//! Each [`Partition`] is a table of its own, deleted when it is dropped,
//! even when the test panics.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// nftables' command line tool, from Debian's nftables package.
const NFT: &str = "/usr/sbin/nft";

/// Traffic between two groups of addresses, dropped both ways while this
/// lives.
pub struct Partition {
    table: String,
}

impl Partition {
    /// Cuts every address in `side` off from every address in `rest`.
    ///
    /// # Panics
    ///
    /// If nft is missing or refuses the rules (not root).
    pub fn between(side: &[Ipv4Addr], rest: &[Ipv4Addr]) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        assert!(
            std::path::Path::new(NFT).exists(),
            "{NFT} is missing: run scripts/test.sh, which installs Debian's nftables"
        );
        let table = format!(
            "cairn_it_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let set = |addrs: &[Ipv4Addr]| {
            let list: Vec<String> = addrs.iter().map(Ipv4Addr::to_string).collect();
            format!("{{ {} }}", list.join(", "))
        };
        let (a, b) = (set(side), set(rest));
        let rules = format!(
            "table ip {table} {{\n\
             \tchain input {{\n\
             \t\ttype filter hook input priority 0; policy accept;\n\
             \t\tip saddr {a} ip daddr {b} drop\n\
             \t\tip saddr {b} ip daddr {a} drop\n\
             \t}}\n\
             }}\n"
        );
        let partition = Partition { table };
        nft(&["-f", "-"], Some(&rules));
        partition
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        nft(&["delete", "table", "ip", &self.table], None);
    }
}

/// Runs nft with `args`, `input` on its stdin.
fn nft(args: &[&str], input: Option<&str>) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(NFT)
        .args(args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {NFT}: {e}"));
    let mut stdin = child.stdin.take().expect("piped");
    if let Some(input) = input {
        stdin
            .write_all(input.as_bytes())
            .expect("write nft's stdin");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("wait for nft");
    if !out.status.success() && !std::thread::panicking() {
        panic!(
            "nft {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
