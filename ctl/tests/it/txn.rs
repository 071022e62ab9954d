//! `cairnctl txn`, from stdin and with `-i`, against etcdctl 3.5 on a real
//! etcd 3.5: the same scripts, on the same history, must print the same
//! stdout and exit the same way, and leave the same keys at the same
//! revisions.

use std::process::Stdio;
use std::time::Duration;

use crate::support::{self, cairnctl_stdin, run_program, Run, ETCDCTL35};

/// etcd 3.5, which ships with the etcdctl the scripts are compared with.
const ETCD35: &str = "/opt/etcd-3.5/etcd";

/// One txn script and how it is run.
struct Case {
    what: &'static str,
    args: &'static [&'static str],
    stdin: &'static str,
}

const CASES: &[Case] = &[
    Case {
        what: "compares hold: the success ops, with their flags",
        args: &["txn"],
        stdin: "mod(\"a\") > \"0\"\nversion(\"b\") = \"1\"\ncreate(\"a\") != \"0\"\nvalue(\"b\") < \"3\"\n\n\
                put c \"x y z\"\nget a c\nget \"\" --prefix\ndel b --prev-kv\nput a 11 --prev-kv\n\
                get --prefix c\nget a --keys-only\nget a --count-only\nget a --limit 1 --rev 2\n\n\
                put never run\n\n",
    },
    Case {
        what: "interactive: the prompts, then a failing compare takes the failure branch",
        args: &["txn", "-i"],
        stdin: "value(\"a\") = \"1\"\nmod(\"c\") > \"0\"\n\nput never run\n\n\
                get a\nput d \"with  two spaces\"\ndel c --prev-kv\nget \"\" --from-key\n\n",
    },
    Case {
        what: "--interactive, with no compares: success",
        args: &["txn", "--interactive"],
        stdin: "\nput e 1\nget d\n\nput never run\n\n",
    },
    Case {
        what: "nothing at all",
        args: &["txn"],
        stdin: "\n\n\n",
    },
    Case {
        what: "a malformed compare",
        args: &["txn"],
        stdin: "frobnicate(\"a\") = \"1\"\n\nput never run\n\n\n",
    },
    Case {
        what: "an unknown op",
        args: &["txn"],
        stdin: "\nfrobnicate a\n\n\n",
    },
    Case {
        what: "an unknown flag",
        args: &["txn", "-i"],
        stdin: "\nput x 1\nget a --bogus\n\n\n",
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_scripts_print_what_etcdctl_prints() {
    let root = tempfile::tempdir().expect("temp dir");
    let addrs = support::reserve(4, 2, root.path(), "t");
    let (ours, theirs) = (&addrs[0], &addrs[1]);
    let node = support::start_all(std::slice::from_ref(ours), "txn").await;
    let mut etcd = tokio::process::Command::new(ETCD35)
        .args(support::flags(theirs))
        .arg("--initial-cluster")
        .arg(support::initial_cluster(std::slice::from_ref(theirs)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("etcd 3.5 runs");
    // Both answer reads, and hold the same history: a at 2, b at 3.
    for m in [ours, theirs] {
        drop(support::client(std::slice::from_ref(m)).await);
    }
    let (ep_ours, ep_theirs) = (ours.client_url(), theirs.client_url());
    for (k, v) in [("a", "1"), ("b", "2")] {
        support::ctl_at(&[ours], &["put", k, v]).await.ok();
        let r = run_program(ETCDCTL35, &["--endpoints", &ep_theirs, "put", k, v], "").await;
        assert_eq!(r.code, 0, "{r:?}");
    }

    for case in CASES {
        let with = |ep: &str| -> Vec<String> {
            ["--endpoints", ep]
                .iter()
                .chain(case.args)
                .map(|s| (*s).to_owned())
                .collect()
        };
        let args = with(&ep_ours);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let got = cairnctl_stdin(&args, case.stdin).await;
        let args = with(&ep_theirs);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let want = run_program(ETCDCTL35, &args, case.stdin).await;
        assert_eq!(
            (got.code, got.stdout.as_str()),
            (want.code, want.stdout.as_str()),
            "{}: cairnctl {got:?}, etcdctl {want:?}",
            case.what
        );
        if got.code != 0 {
            // One clear line, and nothing was sent.
            assert_eq!(got.code, 3, "{}: etcdctl's ExitInvalidInput", case.what);
            assert!(
                got.stderr.starts_with("Error: bad ") && got.stderr.lines().count() == 1,
                "{}: {got:?}",
                case.what
            );
        } else {
            assert_eq!(got.stderr, "", "{}", case.what);
        }
    }
    // The interactive run printed its prompts on stdout, in order.
    let prompts = cairnctl_stdin(&["--endpoints", &ep_ours, "txn", "-i"], "\n\n\n")
        .await
        .ok();
    assert_eq!(
        prompts,
        "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\nSUCCESS\n"
    );

    // The same keys, values and revisions on both.
    let dump = |r: Run| -> serde_json::Value {
        assert_eq!(r.code, 0, "{r:?}");
        let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
        let kvs: Vec<_> = v["kvs"]
            .as_array()
            .expect("kvs")
            .iter()
            .map(|kv| {
                ["key", "value", "create_revision", "mod_revision", "version"]
                    .map(|f| kv[f].clone())
            })
            .collect();
        serde_json::json!({ "revision": v["header"]["revision"], "kvs": kvs })
    };
    let all = ["-w", "json", "get", "", "--prefix"];
    let ours_now = dump(support::ctl_at(&[ours], &all).await);
    let mut theirs_args = vec!["--endpoints", ep_theirs.as_str()];
    theirs_args.extend(all);
    let theirs_now = dump(run_program(ETCDCTL35, &theirs_args, "").await);
    assert_eq!(ours_now, theirs_now);
    assert_eq!(ours_now["revision"], 6, "three txns wrote: {ours_now}");

    etcd.start_kill().expect("etcd killed");
    let _ = tokio::time::timeout(Duration::from_secs(10), etcd.wait()).await;
    for n in node {
        n.shutdown().await;
    }
}
