//! Golden tests: cairnctl's output formats and error messages, exactly.
//! Member and cluster ids differ per run and are substituted in.

use crate::support::{self, cairnctl, cairnctl_stdin, run_program};

/// Asserts stdout, stderr and the exit code of one run.
async fn golden(args: &[&str], stdin: &str, stdout: &str, stderr: &str, code: i32) {
    let r = cairnctl_stdin(args, stdin).await;
    assert_eq!(
        (r.stdout.as_str(), r.stderr.as_str(), r.code),
        (stdout, stderr, code),
        "cairnctl {args:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_formats_and_errors() {
    let root = tempfile::tempdir().expect("temp dir");
    let members = support::reserve(3, 1, root.path(), "g");
    let node = support::start_all(&members, "golden").await;
    let client = support::client(&members).await;
    let ep = members[0].client_url();
    let e = |rest: &[&str]| -> Vec<String> {
        ["--endpoints", ep.as_str()]
            .iter()
            .chain(rest)
            .map(|s| (*s).to_owned())
            .collect()
    };
    macro_rules! run {
        ($args:expr, $stdin:expr, $out:expr, $err:expr, $code:expr) => {{
            let args = e($args);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            golden(&args, $stdin, $out, $err, $code).await
        }};
    }

    run!(&["put", "foo", "bar"], "", "OK\n", "", 0);
    run!(&["put", "baz"], "from stdin", "OK\n", "", 0);
    run!(&["get", "foo"], "", "foo\nbar\n", "", 0);
    run!(
        &["get", "baz", "--print-value-only"],
        "",
        "from stdin\n",
        "",
        0
    );
    run!(
        &["get", "", "--from-key", "--keys-only"],
        "",
        "baz\n\nfoo\n\n",
        "",
        0
    );
    run!(&["get", "", "--from-key", "--count-only"], "", "2\n", "", 0);
    run!(
        &["get", "foo", "-w", "table"],
        "",
        "+-----+-------+\n| KEY | VALUE |\n+-----+-------+\n| foo | bar   |\n+-----+-------+\n",
        "",
        0
    );
    let status = client.maintenance().status().await.expect("status");
    let (cid, mid) = (status.header.cluster_id, status.header.member_id.get());
    let term = status.header.raft_term;
    run!(
        &["get", "foo", "-w", "json"],
        "",
        &format!(
            "{{\"count\":1,\"header\":{{\"cluster_id\":{cid},\"member_id\":{mid},\"raft_term\":{term},\"revision\":3}},\"kvs\":[{{\"create_revision\":2,\"key\":\"Zm9v\",\"mod_revision\":2,\"value\":\"YmFy\",\"version\":1}}],\"more\":false}}\n"
        ),
        "",
        0
    );
    // A missing key is an error, said on stderr (etcdctl prints nothing).
    run!(&["get", "nope"], "", "", "Error: key not found: nope\n", 1);
    run!(
        &["get", "nope/", "--prefix"],
        "",
        "",
        "Error: no keys in range\n",
        1
    );
    run!(
        &["txn"],
        "value(\"foo\") = \"bar\"\n\nput foo baz\nget foo\n\nput foo no\n",
        "SUCCESS\n\nOK\n\nfoo\nbaz\n",
        "",
        0
    );
    run!(
        &["txn"],
        "value(\"foo\") = \"bar\"\n\nput foo x\n\n",
        "FAILURE\n",
        "",
        0
    );
    // -w json carries each op's answer under etcdctl's names.
    let json = cairnctl_stdin(
        &["--endpoints", &ep, "-w", "json", "txn"],
        "\nget foo\nput foo baz --prev-kv\n\n\n",
    )
    .await
    .ok();
    let json: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(json["succeeded"], true, "{json}");
    let r = &json["responses"];
    assert_eq!(
        r[0]["Response"]["response_range"]["kvs"][0]["value"], "YmF6",
        "{json}"
    );
    assert_eq!(
        r[1]["Response"]["response_put"]["prev_kv"]["value"], "YmF6",
        "{json}"
    );
    assert_eq!(json["header"]["revision"], 5, "{json}");
    run!(&["del", "foo"], "", "1\n", "", 0);
    run!(&["del", "nope"], "", "0\n", "", 0);
    run!(
        &["txn"],
        "frobnicate(\"k\") = 1\n",
        "",
        "Error: bad compare \"frobnicate(\\\"k\\\") = 1\" (want e.g. mod(\"k\") > \"0\")\n",
        3
    );
    run!(
        &["put", "k", "v", "--lease", "zz"],
        "",
        "",
        "Error: bad lease ID \"zz\" (want hex, as `lease grant` prints it): invalid digit found in string\n",
        1
    );
    run!(
        &["lease", "timetolive", "abc"],
        "",
        "",
        "Error: lease 0000000000000abc not found (expired or revoked)\n",
        1
    );
    run!(
        &["compaction", "1000"],
        "",
        "",
        "Error: required revision is a future revision\n",
        1
    );
    run!(&["alarm", "list"], "", "", "", 0);
    run!(
        &["member", "list"],
        "",
        &format!(
            "{mid:x}, started, g0, {}, {}, false\n",
            members[0].peer_url(),
            members[0].client_url()
        ),
        "",
        0
    );

    // Backups: a damaged one names its problem in one line.
    let file = root.path().join("b.db");
    let f = file.to_str().expect("utf-8");
    let saved = cairnctl(&["--endpoints", &ep, "snapshot", "save", f]).await;
    // No progress bar when stderr is not a terminal...
    assert_eq!(saved.stderr, "", "{saved:?}");
    let saved = saved.ok();
    assert!(
        saved.starts_with(&format!("Snapshot saved at {f} (")),
        "{saved}"
    );
    // ...and one on a terminal (script(1) gives it a pty), for save and
    // restore alike.
    let on_tty = |args: String| {
        let cmd = format!("{} {args}", env!("CARGO_BIN_EXE_cairnctl"));
        async move { run_program("script", &["-qec", &cmd, "/dev/null"], "").await }
    };
    let tty_file = root.path().join("tty.db");
    let t = on_tty(format!(
        "--endpoints {ep} snapshot save {}",
        tty_file.display()
    ))
    .await;
    assert!(
        t.code == 0 && t.stdout.contains("downloading") && t.stdout.contains("Snapshot saved"),
        "{t:?}"
    );
    let t = on_tty(format!(
        "snapshot restore {f} --data-dir {}",
        root.path().join("tty-restored").display()
    ))
    .await;
    assert!(t.code == 0 && t.stdout.contains("restoring"), "{t:?}");
    let r = cairnctl(&[
        "snapshot",
        "restore",
        f,
        "--data-dir",
        root.path().join("piped-restored").to_str().expect("utf-8"),
    ])
    .await;
    assert_eq!((r.code, r.stderr.as_str()), (0, ""), "{r:?}");
    let mut bytes = std::fs::read(&file).expect("saved");
    let len = bytes.len();
    let table = cairnctl(&["snapshot", "status", f, "-w", "table"])
        .await
        .ok();
    let hash = table
        .lines()
        .nth(3)
        .expect("a row")
        .split('|')
        .nth(1)
        .expect("hash")
        .trim()
        .to_owned();
    assert_eq!(
        table,
        format!(
            "+----------+----------+------------+------------+\n\
             | HASH     | REVISION | TOTAL KEYS | TOTAL SIZE |\n\
             +----------+----------+------------+------------+\n\
             | {hash:<8} | 6        | 1          | {:<10} |\n\
             +----------+----------+------------+------------+\n",
            format!("{len} B")
        )
    );
    bytes[100] ^= 1;
    let damaged = root.path().join("damaged.db");
    std::fs::write(&damaged, &bytes).expect("written");
    let d = damaged.to_str().expect("utf-8");
    golden(
        &["snapshot", "verify", d],
        "",
        "",
        &format!("Error: {d}: bad backup: SHA-256 digest mismatch\n"),
        1,
    )
    .await;
    golden(
        &["snapshot", "verify", "/nonexistent/b.db"],
        "",
        "",
        "Error: reading /nonexistent/b.db: No such file or directory (os error 2)\n",
        1,
    )
    .await;

    // No server: one line, non-zero.
    let r = cairnctl(&[
        "--endpoints",
        "127.0.0.1:1",
        "--dial-timeout",
        "300ms",
        "get",
        "foo",
    ])
    .await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.starts_with("Error: ") && r.stderr.lines().count() == 1,
        "{r:?}"
    );
    assert_eq!(r.stdout, "");

    drop(client);
    for n in node {
        n.shutdown().await;
    }
}
