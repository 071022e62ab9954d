//! KV commands: get, put, del, txn, watch, compaction.

use std::io::{IsTerminal, Read, Write};

use anyhow::{bail, Context, Result};
use cairn_client::{
    Client, ConnectOptions, Delete, DeleteResponse, EventKind, Get, LeaseId, Put, PutResponse,
    Revision, TxnOpResponse, TxnResponse,
};
use futures::StreamExt;
use serde_json::json;

use crate::cli::{CompactionArgs, DelArgs, Format, GetArgs, Global, PutArgs, TxnArgs, WatchArgs};
use crate::output::{header_json, kv_json, print_json, table, text};
use crate::Quiet;

/// Connects to `endpoints` (the global ones when `None`).
pub(crate) async fn connect_to(g: &Global, endpoints: &[String]) -> Result<Client> {
    let options = ConnectOptions::default()
        .with_connect_timeout(g.dial_timeout)
        .with_request_timeout(g.command_timeout);
    Client::connect(endpoints.iter().cloned(), options)
        .await
        .with_context(|| format!("connecting to {}", endpoints.join(",")))
}

pub(crate) async fn connect(g: &Global) -> Result<Client> {
    connect_to(g, &g.endpoints).await
}

/// Parses a lease ID as etcdctl prints it: hex.
pub(crate) fn lease_id(s: &str) -> Result<LeaseId> {
    i64::from_str_radix(s.trim_start_matches("0x"), 16)
        .map(LeaseId::new)
        .with_context(|| format!("bad lease ID {s:?} (want hex, as `lease grant` prints it)"))
}

/// `--prefix`, `--from-key`, or an explicit range end, as etcdctl reads them.
fn span(key: &str, end: Option<&str>, prefix: bool, from_key: bool) -> Result<(Get, Delete)> {
    Ok(match (end, prefix, from_key) {
        (Some(_), true, _) | (Some(_), _, true) | (None, true, true) => {
            bail!("give one of a range end, --prefix and --from-key")
        }
        (Some(end), false, false) => (Get::range(key, end), Delete::range(key, end)),
        // As etcdctl: an empty prefix is every key, and an empty key
        // with --from-key starts at "\0".
        (None, true, false) if key.is_empty() => (Get::all(), Delete::all()),
        (None, true, false) => (Get::prefix(key), Delete::prefix(key)),
        (None, false, true) if key.is_empty() => (Get::all(), Delete::all()),
        (None, false, true) => (Get::from_key(key), Delete::from_key(key)),
        (None, false, false) => (Get::one(key), Delete::one(key)),
    })
}

/// The Range a `get` asks for (also a txn's `get` line).
pub(crate) fn get_request(a: &GetArgs) -> Result<Get> {
    let (mut get, _) = span(&a.key, a.range_end.as_deref(), a.prefix, a.from_key)?;
    if a.limit > 0 {
        get = get.with_limit(a.limit);
    }
    if a.rev > 0 {
        get = get.with_revision(Revision::new(a.rev));
    }
    if a.keys_only {
        get = get.with_keys_only();
    }
    if a.count_only {
        get = get.with_count_only();
    }
    match a.consistency.as_str() {
        "l" => {}
        "s" => get = get.with_serializable(),
        other => bail!("unknown consistency {other:?} (want l or s)"),
    }
    Ok(get)
}

pub(crate) async fn get(g: &Global, a: GetArgs) -> Result<()> {
    let get = get_request(&a)?;
    let client = connect(g).await?;
    let r = client.get(get).await?;
    match g.write_out {
        Format::Json => print_json(&json!({
            "header": header_json(&r.header),
            "kvs": r.kvs.iter().map(kv_json).collect::<Vec<_>>(),
            "more": r.more,
            "count": r.count,
        })),
        Format::Table => print!(
            "{}",
            table(
                &["KEY", "VALUE"],
                &r.kvs
                    .iter()
                    .map(|kv| vec![text(&kv.key), text(&kv.value)])
                    .collect::<Vec<_>>()
            )
        ),
        Format::Simple if a.count_only => println!("{}", r.count),
        Format::Simple => {
            let mut out = std::io::stdout().lock();
            for kv in &r.kvs {
                if !a.print_value_only {
                    out.write_all(&kv.key)?;
                    out.write_all(b"\n")?;
                }
                // With --keys-only the value is empty: an empty line, as
                // etcdctl prints.
                out.write_all(&kv.value)?;
                out.write_all(b"\n")?;
            }
        }
    }
    if r.count == 0 {
        // etcdctl says nothing here; an operator (or a script) should know.
        match (&a.range_end, a.prefix || a.from_key) {
            (None, false) => eprintln!("Error: key not found: {}", a.key),
            _ => eprintln!("Error: no keys in range"),
        }
        return Err(Quiet(1).into());
    }
    Ok(())
}

pub(crate) async fn put(g: &Global, a: PutArgs) -> Result<()> {
    let value = match &a.value {
        Some(v) => v.clone().into_bytes(),
        None if a.ignore_value => Vec::new(),
        None => {
            let mut v = Vec::new();
            std::io::stdin()
                .read_to_end(&mut v)
                .context("reading the value from stdin")?;
            v
        }
    };
    let r = connect(g).await?.put(put_request(&a, value)?).await?;
    match g.write_out {
        Format::Json => print_json(&json!({
            "header": header_json(&r.header),
            "prev_kv": r.prev_kv.as_ref().map(kv_json),
        })),
        _ => print_put(&r),
    }
    Ok(())
}

/// The Put a `put` asks for (also a txn's `put` line), with `value`.
pub(crate) fn put_request(a: &PutArgs, value: Vec<u8>) -> Result<Put> {
    let mut put = Put::new(a.key.as_str(), value);
    if let Some(l) = &a.lease {
        put = put.with_lease(lease_id(l)?);
    }
    if a.prev_kv {
        put = put.with_prev_kv();
    }
    if a.ignore_value {
        put = put.with_ignore_value();
    }
    if a.ignore_lease {
        put = put.with_ignore_lease();
    }
    Ok(put)
}

/// etcdctl's simple output of a put: `OK`, then the previous key-value.
fn print_put(r: &PutResponse) {
    println!("OK");
    if let Some(p) = &r.prev_kv {
        println!("{}\n{}", text(&p.key), text(&p.value));
    }
}

/// The DeleteRange a `del` asks for (also a txn's `del` line).
pub(crate) fn del_request(a: &DelArgs) -> Result<Delete> {
    let (_, mut del) = span(&a.key, a.range_end.as_deref(), a.prefix, a.from_key)?;
    if a.prev_kv {
        del = del.with_prev_kv();
    }
    Ok(del)
}

pub(crate) async fn del(g: &Global, a: DelArgs) -> Result<()> {
    let r = connect(g).await?.delete(del_request(&a)?).await?;
    match g.write_out {
        Format::Json => print_json(&del_json(&r)),
        _ => print_del(&r),
    }
    Ok(())
}

fn del_json(r: &DeleteResponse) -> serde_json::Value {
    json!({
        "header": header_json(&r.header),
        "deleted": r.deleted,
        "prev_kvs": r.prev_kvs.iter().map(kv_json).collect::<Vec<_>>(),
    })
}

/// etcdctl's simple output of a delete: the count, then the deleted
/// key-values.
fn print_del(r: &DeleteResponse) {
    println!("{}", r.deleted);
    for p in &r.prev_kvs {
        println!("{}\n{}", text(&p.key), text(&p.value));
    }
}

/// Reads one section of a txn script: lines up to a blank line (or the
/// end of input, where etcdctl fails with "EOF"), after printing `prompt`
/// on stdout when interactive, as etcdctl does.
fn section(prompt: &str, interactive: bool) -> Result<Vec<String>> {
    if interactive {
        println!("{prompt}");
    }
    let stdin = std::io::stdin();
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if stdin.read_line(&mut line)? == 0 || line.trim().is_empty() {
            return Ok(lines);
        }
        lines.push(line);
    }
}

/// etcdctl's exit status for input it cannot parse (`ExitInvalidInput`).
const EXIT_INVALID_INPUT: u8 = 3;

/// Reads and parses each section as etcdctl does: one after the other, so
/// a bad line is reported as soon as its section ends.
fn read_txn(interactive: bool) -> Result<cairn_client::Txn> {
    let compares = crate::txn::compares(&section("compares:", interactive)?)?;
    let success = crate::txn::ops(&section("success requests (get, put, del):", interactive)?)?;
    let failure = crate::txn::ops(&section("failure requests (get, put, del):", interactive)?)?;
    Ok(cairn_client::Txn::new()
        .when(compares)
        .and_then(success)
        .or_else(failure))
}

pub(crate) async fn txn(g: &Global, a: TxnArgs) -> Result<()> {
    // etcdctl prompts only with -i; prompting also when a person is
    // typing and reading (both ends terminals) changes no script's output.
    let interactive =
        a.interactive || (std::io::stdin().is_terminal() && std::io::stdout().is_terminal());
    let t = match read_txn(interactive) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("Error: {e:#}");
            return Err(Quiet(EXIT_INVALID_INPUT).into());
        }
    };
    let r = connect(g).await?.txn(t).await?;
    match g.write_out {
        Format::Json => print_json(&txn_json(&r)),
        _ => print_txn(&r),
    }
    Ok(())
}

/// etcdctl's simple output of a txn: SUCCESS or FAILURE, then each op's
/// answer after a blank line, as `get`, `put` and `del` print it.
fn print_txn(r: &TxnResponse) {
    println!("{}", if r.succeeded { "SUCCESS" } else { "FAILURE" });
    for resp in &r.responses {
        println!();
        match resp {
            TxnOpResponse::Put(p) => print_put(p),
            TxnOpResponse::Delete(d) => print_del(d),
            TxnOpResponse::Get(g) => {
                for kv in &g.kvs {
                    println!("{}\n{}", text(&kv.key), text(&kv.value));
                }
            }
            // A script cannot nest txns; another client's can.
            TxnOpResponse::Txn(t) => print_txn(t),
        }
    }
}

/// A txn's answer in JSON, each op's answer under etcdctl's names
/// (`responses[i].Response.response_range`, `response_put`,
/// `response_delete_range`, `response_txn`).
fn txn_json(r: &TxnResponse) -> serde_json::Value {
    let responses: Vec<_> = r
        .responses
        .iter()
        .map(|resp| {
            let (name, v) = match resp {
                TxnOpResponse::Get(g) => (
                    "response_range",
                    json!({
                        "header": header_json(&g.header),
                        "kvs": g.kvs.iter().map(kv_json).collect::<Vec<_>>(),
                        "more": g.more,
                        "count": g.count,
                    }),
                ),
                TxnOpResponse::Put(p) => (
                    "response_put",
                    json!({
                        "header": header_json(&p.header),
                        "prev_kv": p.prev_kv.as_ref().map(kv_json),
                    }),
                ),
                TxnOpResponse::Delete(d) => ("response_delete_range", del_json(d)),
                TxnOpResponse::Txn(t) => ("response_txn", txn_json(t)),
            };
            json!({ "Response": { name: v } })
        })
        .collect();
    json!({
        "header": header_json(&r.header),
        "succeeded": r.succeeded,
        "responses": responses,
    })
}

pub(crate) async fn watch(g: &Global, a: WatchArgs) -> Result<()> {
    let mut opts = match (&a.range_end, a.prefix) {
        (Some(end), false) => cairn_client::WatchOptions::range(a.key.as_str(), end.as_str()),
        (None, true) => cairn_client::WatchOptions::prefix(a.key.as_str()),
        (None, false) => cairn_client::WatchOptions::key(a.key.as_str()),
        (Some(_), true) => bail!("give a range end or --prefix, not both"),
    };
    if a.rev > 0 {
        opts = opts.with_start_revision(Revision::new(a.rev));
    }
    if a.prev_kv {
        opts = opts.with_prev_kv();
    }
    let client = connect(g).await?;
    let mut watcher = client.watch(opts).await?;
    let mut seen = 0u64;
    while let Some(resp) = watcher.next().await {
        let resp = resp?;
        for ev in &resp.events {
            let kind = match ev.kind {
                EventKind::Put => "PUT",
                EventKind::Delete => "DELETE",
            };
            match g.write_out {
                Format::Json => print_json(&json!({
                    "type": kind,
                    "kv": kv_json(&ev.kv),
                    "prev_kv": ev.prev_kv.as_ref().map(kv_json),
                })),
                _ => {
                    println!("{kind}\n{}", text(&ev.kv.key));
                    if let Some(p) = &ev.prev_kv {
                        println!("{}", text(&p.value));
                    }
                    println!("{}", text(&ev.kv.value));
                }
            }
            seen += 1;
            if a.max_events > 0 && seen >= a.max_events {
                return Ok(());
            }
        }
        std::io::stdout().flush()?;
    }
    bail!("watch stream ended")
}

pub(crate) async fn compaction(g: &Global, a: CompactionArgs) -> Result<()> {
    connect(g)
        .await?
        .compact(Revision::new(a.revision), a.physical)
        .await?;
    println!("compacted revision {}", a.revision);
    Ok(())
}
