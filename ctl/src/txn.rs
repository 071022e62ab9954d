//! etcdctl's txn script: compares, a blank line, the success ops, a blank
//! line, the failure ops.
//!
//! ```text
//! mod("key1") > "0"
//! value("key2") = "x"
//!
//! put key1 "new value"
//! get key2
//!
//! del key3
//! ```
//! Compares: `value|version|create|mod|lease("key") OP VALUE` with OP one of
//! `=`, `!=`, `<`, `>`. Ops: `get KEY [END]`, `put KEY VALUE`, `del KEY
//! [END]`, each with the flags of its command (`--prefix`, `--from-key`,
//! `--prev-kv`, `--limit`, `--rev`, `--lease`, ...), as etcdctl reads them.
//!
//! Where etcdctl is stricter, cairnctl accepts: the end of input ends a
//! section (etcdctl fails with "EOF" unless each section ends with a
//! blank line), an unquoted compare value, and `==`.

use anyhow::{anyhow, bail, Result};
use cairn_client::{Compare, CompareOp, LeaseId, Revision, TxnOp};
use clap::Parser;

use crate::cli::{DelArgs, GetArgs, PutArgs};
use crate::kv::{del_request, get_request, put_request};

/// Splits a line into words, honouring double quotes and `\"` in them.
pub(crate) fn words(line: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut any) = (false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            '\\' if quoted => cur.push(chars.next().ok_or_else(|| anyhow!("dangling \\"))?),
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if quoted {
        bail!("unterminated quote in {line:?}");
    }
    if any {
        out.push(cur);
    }
    Ok(out)
}

/// Parses one compare line.
pub(crate) fn compare(line: &str) -> Result<Compare> {
    let bad = || anyhow!("bad compare {line:?} (want e.g. mod(\"k\") > \"0\")");
    let open = line.find('(').ok_or_else(bad)?;
    let close = line.find(')').ok_or_else(bad)?;
    let target = line[..open].trim();
    let key = words(&line[open + 1..close])?.pop().ok_or_else(bad)?;
    let rest = words(&line[close + 1..])?;
    let [op, value] = rest.as_slice() else {
        return Err(bad());
    };
    let op = match op.as_str() {
        "=" | "==" => CompareOp::Equal,
        "!=" => CompareOp::NotEqual,
        "<" => CompareOp::Less,
        ">" => CompareOp::Greater,
        _ => return Err(bad()),
    };
    let num = || value.parse::<i64>().map_err(|_| bad());
    Ok(match target {
        "value" | "val" => Compare::value(key, op, value.clone()),
        "version" | "ver" => Compare::version(key, op, num()?),
        "create" | "c" => Compare::create_revision(key, op, Revision::new(num()?)),
        "mod" | "m" => Compare::mod_revision(key, op, Revision::new(num()?)),
        "lease" => {
            let id = i64::from_str_radix(value, 16).map_err(|_| bad())?;
            Compare::lease(key, op, (id != 0).then(|| LeaseId::new(id)))
        }
        _ => return Err(bad()),
    })
}

/// One op line: the `get`, `put` and `del` commands with their flags, as
/// etcdctl parses them.
#[derive(Debug, Parser)]
#[command(no_binary_name = true, disable_help_subcommand = true)]
enum OpLine {
    Get(GetArgs),
    Put(PutArgs),
    Del(DelArgs),
}

/// Parses one op line.
pub(crate) fn op(line: &str) -> Result<TxnOp> {
    let w = words(line)?;
    if !matches!(w.first().map(String::as_str), Some("get" | "put" | "del")) {
        bail!("bad op {line:?} (want get, put or del)");
    }
    // clap's message is several lines (usage, tips): keep the first.
    let parsed = OpLine::try_parse_from(&w).map_err(|e| {
        let msg = e.to_string();
        let first = msg.lines().next().unwrap_or_default();
        anyhow!("bad op {line:?}: {}", first.trim_start_matches("error: "))
    })?;
    Ok(match parsed {
        OpLine::Get(a) => get_request(&a)?.into(),
        OpLine::Put(a) => {
            let value = match (&a.value, a.ignore_value) {
                (Some(v), _) => v.clone().into_bytes(),
                (None, true) => Vec::new(),
                (None, false) => bail!("bad op {line:?}: put needs a key and a value"),
            };
            put_request(&a, value)?.into()
        }
        OpLine::Del(a) => del_request(&a)?.into(),
    })
}

/// Parses a section of compare lines.
pub(crate) fn compares(lines: &[impl AsRef<str>]) -> Result<Vec<Compare>> {
    lines.iter().map(|l| compare(l.as_ref().trim())).collect()
}

/// Parses a section of op lines.
pub(crate) fn ops(lines: &[impl AsRef<str>]) -> Result<Vec<TxnOp>> {
    lines.iter().map(|l| op(l.as_ref().trim())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_honour_quotes() {
        assert_eq!(
            words(r#"put k "a b \" c""#).unwrap(),
            vec!["put", "k", "a b \" c"]
        );
        assert_eq!(words(r#"put k """#).unwrap(), vec!["put", "k", ""]);
        assert!(words(r#"put "k"#).is_err());
    }

    #[test]
    fn sections_parse() {
        use cairn_client::{Delete, Get, Put};
        let c = compares(&["mod(\"k\") > \"0\"", "value(\"k\") = \"v\""]).unwrap();
        assert_eq!(
            c,
            vec![
                Compare::mod_revision("k", CompareOp::Greater, Revision::new(0)),
                Compare::value("k", CompareOp::Equal, "v"),
            ]
        );
        let o = ops(&[
            "put k w --prev-kv",
            "get k",
            "get \"\" --prefix",
            "get a --from-key --limit 2",
            "del k --prev-kv\n",
            "del p --prefix",
        ])
        .unwrap();
        let expected: Vec<TxnOp> = vec![
            Put::new("k", "w").with_prev_kv().into(),
            Get::one("k").into(),
            Get::all().into(),
            Get::from_key("a").with_limit(2).into(),
            Delete::one("k").with_prev_kv().into(),
            Delete::prefix("p").into(),
        ];
        assert_eq!(o, expected);
        assert!(compares(&["nonsense"]).is_err());
        for bad in ["frobnicate k", "get", "put k", "get a --bogus", "get a b c"] {
            let e = ops(&[bad]).unwrap_err().to_string();
            assert!(e.starts_with("bad op") && !e.contains('\n'), "{bad}: {e}");
        }
    }
}
