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
//! [END]`, with `--prefix` allowed after get and del.

use anyhow::{anyhow, bail, Result};
use cairn_client::{Compare, CompareOp, Delete, Get, LeaseId, Put, Revision, Txn, TxnOp};

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

/// Parses one op line.
pub(crate) fn op(line: &str) -> Result<TxnOp> {
    let w = words(line)?;
    let prefix = w.iter().any(|a| a == "--prefix");
    let args: Vec<&String> = w.iter().filter(|a| !a.starts_with("--")).collect();
    let bad = || anyhow!("bad op {line:?} (want get, put or del)");
    Ok(match args.as_slice() {
        [verb, key] if verb.as_str() == "get" => match prefix {
            true => Get::prefix(key.as_str()).into(),
            false => Get::one(key.as_str()).into(),
        },
        [verb, key, end] if verb.as_str() == "get" => Get::range(key.as_str(), end.as_str()).into(),
        [verb, key, value] if verb.as_str() == "put" => {
            Put::new(key.as_str(), value.as_str()).into()
        }
        [verb, key] if verb.as_str() == "del" => match prefix {
            true => Delete::prefix(key.as_str()).into(),
            false => Delete::one(key.as_str()).into(),
        },
        [verb, key, end] if verb.as_str() == "del" => {
            Delete::range(key.as_str(), end.as_str()).into()
        }
        _ => return Err(bad()),
    })
}

/// Parses a whole script (the three blank-line separated sections).
pub(crate) fn parse(script: &str) -> Result<Txn> {
    let mut sections: Vec<Vec<&str>> = vec![Vec::new()];
    for line in script.lines() {
        let line = line.trim();
        if line.is_empty() {
            if sections.len() < 3 {
                sections.push(Vec::new());
            }
            continue;
        }
        sections
            .last_mut()
            .expect("invariant: never empty")
            .push(line);
    }
    sections.resize(3, Vec::new());
    let compares = sections[0]
        .iter()
        .map(|l| compare(l))
        .collect::<Result<Vec<_>>>()?;
    let success = sections[1]
        .iter()
        .map(|l| op(l))
        .collect::<Result<Vec<_>>>()?;
    let failure = sections[2]
        .iter()
        .map(|l| op(l))
        .collect::<Result<Vec<_>>>()?;
    Ok(Txn::new().when(compares).and_then(success).or_else(failure))
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
    fn scripts_parse() {
        let t =
            parse("mod(\"k\") > \"0\"\nvalue(\"k\") = \"v\"\n\nput k w\nget k\n\ndel k\n").unwrap();
        let expected = Txn::new()
            .when([
                Compare::mod_revision("k", CompareOp::Greater, Revision::new(0)),
                Compare::value("k", CompareOp::Equal, "v"),
            ])
            .and_then([Put::new("k", "w").into(), Get::one("k").into()])
            .or_else([Delete::one("k").into()]);
        assert_eq!(t, expected);
        assert!(parse("nonsense\n\n\n").is_err());
        assert!(parse("\nfrobnicate k\n").is_err());
    }
}
