//! The three output formats: simple (etcdctl's plain text), json (keys and
//! values in base64, as etcdctl's) and table.

use base64::Engine as _;
use cairn_client::{KeyValue, ResponseHeader};
use serde_json::{json, Value};

/// Renders rows as an ASCII table, headers first.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let rule = {
        let mut s = String::from("+");
        for w in &widths {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
        }
        s.push('\n');
        s
    };
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::from("|");
        for (w, cell) in widths.iter().zip(cells) {
            let pad = w - cell.chars().count();
            s.push(' ');
            s.push_str(cell);
            s.push_str(&" ".repeat(pad + 1));
            s.push('|');
        }
        s.push('\n');
        s
    };
    let mut out = rule.clone();
    out.push_str(&line(&mut headers.iter().copied()));
    out.push_str(&rule);
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out.push_str(&rule);
    out
}

/// Bytes as text, lossily: what a terminal can show.
pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(crate) fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub(crate) fn header_json(h: &ResponseHeader) -> Value {
    json!({
        "cluster_id": h.cluster_id,
        "member_id": h.member_id.get(),
        "revision": h.revision.get(),
        "raft_term": h.raft_term,
    })
}

pub(crate) fn kv_json(kv: &KeyValue) -> Value {
    let mut v = json!({
        "key": b64(&kv.key),
        "create_revision": kv.create_revision.get(),
        "mod_revision": kv.mod_revision.get(),
        "version": kv.version,
        "value": b64(&kv.value),
    });
    if let Some(l) = kv.lease {
        v["lease"] = json!(l.get());
    }
    v
}

/// Prints a JSON value on one line.
pub(crate) fn print_json(v: &Value) {
    println!("{v}");
}

/// Human sizes as etcdctl prints them (`1.1 kB`).
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_line_up() {
        let t = table(
            &["KEY", "VALUE"],
            &[
                vec!["a".into(), "1".into()],
                vec!["long-key".into(), "".into()],
            ],
        );
        assert_eq!(
            t,
            "+----------+-------+\n\
             | KEY      | VALUE |\n\
             +----------+-------+\n\
             | a        | 1     |\n\
             | long-key |       |\n\
             +----------+-------+\n"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1056), "1.1 kB");
        assert_eq!(human_bytes(2_500_000), "2.5 MB");
    }
}
