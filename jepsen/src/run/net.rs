//! Network partitions between members, made with nftables.
//!
//! Each member listens on its own address, 127.0.0.x, and Cairn's peer
//! calls leave from the address its peer listener is bound to, so a rule
//! on source and destination address cuts two members apart. The runner's
//! own client connections come from 127.0.0.1 and are never cut.
//!
//! The run owns one table, `cairn_jepsen_<pid>`, whose one chain holds the
//! current partition's drop rules: a new partition replaces them, healing
//! flushes them, and the table is deleted on drop and by
//! [`super::cleanup`] on a panic or a signal. Tables left by runs that died
//! by SIGKILL are deleted at the next start.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};

use super::cleanup;

/// nftables' command line tool, from Debian's nftables package.
const NFT: &str = "/usr/sbin/nft";
/// The prefix of every table this harness creates.
const PREFIX: &str = "cairn_jepsen_";

/// The run's nft table; deleted on drop.
pub struct Firewall {
    table: String,
}

impl Firewall {
    /// Creates the run's table with an empty input chain, after deleting
    /// tables of earlier runs whose process is gone.
    ///
    /// # Errors
    /// nft is missing or refuses (not root).
    pub fn new() -> anyhow::Result<Self> {
        if !Path::new(NFT).exists() {
            bail!("{NFT} is missing: install Debian's nftables (scripts/test.sh does)");
        }
        remove_stale();
        let table = format!("{PREFIX}{}", std::process::id());
        let rules = format!(
            "table ip {table} {{\n\tchain input {{\n\t\ttype filter hook input priority 0; policy accept;\n\t}}\n}}\n"
        );
        nft(&["-f", "-"], Some(&rules)).context("create the nft table")?;
        cleanup::add_table(&table);
        Ok(Firewall { table })
    }

    /// Drops traffic both ways between each pair, replacing the rules of
    /// the previous partition.
    ///
    /// # Errors
    /// nft refuses.
    pub fn cut(&self, pairs: &[(Ipv4Addr, Ipv4Addr)]) -> anyhow::Result<()> {
        let mut rules = format!("flush chain ip {} input\n", self.table);
        for (a, b) in pairs {
            for (src, dst) in [(a, b), (b, a)] {
                rules.push_str(&format!(
                    "add rule ip {} input ip saddr {src} ip daddr {dst} drop\n",
                    self.table
                ));
            }
        }
        nft(&["-f", "-"], Some(&rules)).context("install partition rules")
    }

    /// Removes every rule: all members reach each other again.
    ///
    /// # Errors
    /// nft refuses.
    pub fn heal(&self) -> anyhow::Result<()> {
        nft(&["flush", "chain", "ip", &self.table, "input"], None).context("flush partition rules")
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        delete_table(&self.table);
        cleanup::remove_table(&self.table);
    }
}

/// Deletes `table`, reporting (not failing) if nft refuses.
pub(super) fn delete_table(table: &str) {
    if let Err(e) = nft(&["delete", "table", "ip", table], None) {
        eprintln!("cairn-jepsen: could not delete nft table {table}: {e:#}");
    }
}

/// Deletes this harness's tables whose owning process no longer exists.
fn remove_stale() {
    let Ok(out) = Command::new(NFT).args(["list", "tables"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(table) = line.strip_prefix("table ip ") else {
            continue;
        };
        let Some(pid) = table
            .strip_prefix(PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("cairn-jepsen: deleting stale nft table {table}");
            delete_table(table);
        }
    }
}

/// Runs nft with `args`, `input` on its stdin.
fn nft(args: &[&str], input: Option<&str>) -> anyhow::Result<()> {
    let mut child = Command::new(NFT)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {NFT}"))?;
    let mut stdin = child.stdin.take().context("nft's stdin")?;
    if let Some(input) = input {
        stdin
            .write_all(input.as_bytes())
            .context("write nft's stdin")?;
    }
    drop(stdin);
    let out = child.wait_with_output().context("wait for nft")?;
    if !out.status.success() {
        bail!(
            "nft {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
