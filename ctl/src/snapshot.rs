//! Backups: `save` streams one from a cluster; `status`, `verify` and
//! `restore` work on the file alone, with no server (etcdutl's job).
//!
//! `save` writes `FILE.part`, syncs it, checks the digest, and only then
//! renames it to `FILE`: a failed save never leaves a file that looks
//! whole.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use anyhow::{Context, Result};
use cairn_raft_storage::BackupInfo;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio::io::AsyncWrite;

use crate::cli::{Format, Global, RestoreArgs, SnapshotCommand};
use crate::kv::connect;
use crate::output::{human_bytes, print_json, table};

pub(crate) async fn run(g: &Global, cmd: SnapshotCommand) -> Result<()> {
    match cmd {
        SnapshotCommand::Save { file } => save(g, &file).await,
        SnapshotCommand::Status { file } => {
            let info = read_verified(&file)?;
            print_info(g, &info);
            Ok(())
        }
        SnapshotCommand::Verify { file } => {
            let info = read_verified(&file)?;
            match g.write_out {
                Format::Simple => println!(
                    "{}: OK (revision {}, {} keys, {} revisions, {} leases, hash {:x})",
                    file.display(),
                    info.revision,
                    info.keys,
                    info.revisions,
                    info.leases,
                    info.hash
                ),
                _ => print_info(g, &info),
            }
            Ok(())
        }
        SnapshotCommand::Restore(a) => restore(a),
    }
}

/// A bar on a terminal, nothing otherwise.
fn bar(len: Option<u64>, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (b, template) = match len {
        Some(n) => (
            ProgressBar::new(n),
            "{msg} {bar:40} {bytes}/{total_bytes} {elapsed}",
        ),
        None => {
            let b = ProgressBar::new_spinner();
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            (b, "{msg} {spinner} {bytes} {elapsed}")
        }
    };
    let style =
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    b.set_style(style);
    b.set_message(what.to_owned());
    b
}

/// Counts bytes into a progress bar as they are written.
struct Counting<W> {
    inner: W,
    bar: ProgressBar,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counting<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.bar.inc(*n as u64);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn save(g: &Global, file: &Path) -> Result<()> {
    let started = Instant::now();
    let client = connect(g).await?;
    // One member: the first endpoint, as etcdctl.
    let m = client.maintenance_at(&g.endpoints[0])?;
    let part = PathBuf::from(format!("{}.part", file.display()));
    let f = tokio::fs::File::create(&part)
        .await
        .with_context(|| format!("creating {}", part.display()))?;
    let mut w = Counting {
        inner: f,
        bar: bar(None, "downloading"),
    };
    let result = m.snapshot(&mut w).await;
    w.bar.finish_and_clear();
    let size = match result {
        Ok(n) => n,
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e).context("fetching the snapshot");
        }
    };
    w.inner.sync_all().await?;
    drop(w);
    if let Err(e) = cairn_raft_storage::verify(&part) {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(e).context("the received snapshot does not verify");
    }
    tokio::fs::rename(&part, file).await?;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::File::open(dir).await?.sync_all().await?;
    }
    if g.write_out == Format::Json {
        print_json(&json!({"path": file, "size": size, "took_ms": started.elapsed().as_millis()}));
    } else {
        println!(
            "Snapshot saved at {} ({}, {:.3?})",
            file.display(),
            human_bytes(size),
            started.elapsed()
        );
    }
    Ok(())
}

fn read_verified(file: &Path) -> Result<BackupInfo> {
    std::fs::File::open(file).with_context(|| format!("reading {}", file.display()))?;
    cairn_raft_storage::verify(file).with_context(|| format!("{}", file.display()))
}

fn print_info(g: &Global, info: &BackupInfo) {
    match g.write_out {
        Format::Json => print_json(&json!({
            "hash": info.hash, "revision": info.revision, "totalKey": info.keys,
            "totalSize": info.size, "compactRevision": info.compact_revision,
            "revisions": info.revisions, "leases": info.leases,
            "members": info.members.len(),
        })),
        Format::Table => print!(
            "{}",
            table(
                &["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
                &[vec![
                    format!("{:x}", info.hash),
                    info.revision.to_string(),
                    info.keys.to_string(),
                    human_bytes(info.size),
                ]]
            )
        ),
        Format::Simple => println!(
            "{:x}, {}, {}, {}",
            info.hash,
            info.revision,
            info.keys,
            human_bytes(info.size)
        ),
    }
}

fn restore(a: RestoreArgs) -> Result<()> {
    let started = Instant::now();
    let data_dir = a
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", a.name)));
    // The server's own flag parser, so ids are derived exactly as a
    // bootstrap with these flags would derive them.
    let config = cairn_server::Config::try_parse_from([
        "cairn".to_owned(),
        format!("--name={}", a.name),
        format!("--initial-cluster={}", a.initial_cluster),
        format!("--initial-cluster-token={}", a.initial_cluster_token),
        format!(
            "--initial-advertise-peer-urls={}",
            a.initial_advertise_peer_urls
        ),
        format!("--data-dir={}", data_dir.display()),
    ])
    .map_err(|e| anyhow::anyhow!("{}", e.to_string().lines().next().unwrap_or("bad flags")))?;
    std::fs::File::open(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let b = bar(None, "restoring");
    let (ids, info) = cairn_server::restore(&a.file, &config)
        .map_err(|e| anyhow::anyhow!("{}", chain(&e)))
        .with_context(|| format!("restoring into {}", data_dir.display()))?;
    b.finish_and_clear();
    println!(
        "restored snapshot (revision {}, {} keys, {} leases) into {} as member {:x} of cluster {:x} ({:.3?})",
        info.revision,
        info.keys,
        info.leases,
        data_dir.display(),
        ids.member_id,
        ids.cluster_id,
        started.elapsed()
    );
    Ok(())
}

/// An error and its sources on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
