//! The CI smoke runs: 3 members, kill and partition faults, the register
//! workload, about a minute; the watch workload under kills, 20 s, in
//! parallel; and the runner's cleanup on Ctrl-C.

use std::process::Command;
use std::time::{Duration, Instant};

use super::support::{cairn, runner, tables_of};

/// A fixed seed: the schedule has a partition and a kill in 55 s (see the
/// assertion on the faults), so CI exercises both every time.
const SEED: &str = "20240611";

#[test]
fn register_under_kill_and_partition() {
    let results = tempfile::TempDir::with_prefix("jepsen-smoke-").expect("temp dir");
    let started = Instant::now();
    let out = Command::new(runner())
        .args([
            "run",
            "--nodes",
            "3",
            "--time-limit",
            "55",
            "--workload",
            "register",
        ])
        .args(["--nemesis", "kill,partition", "--seed", SEED, "--results"])
        .arg(results.path())
        .arg("--cairn")
        .arg(cairn())
        .output()
        .expect("run cairn-jepsen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cairn-jepsen exited with {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    eprintln!("{stdout}\nsmoke run took {:?}", started.elapsed());

    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(results.path().join("report.json")).expect("report.json"),
    )
    .expect("report.json is JSON");
    assert_eq!(report["valid"], true);
    // The run must have tested something: faults of both families hit, and
    // the clients got work done around them.
    let kinds: Vec<String> = report["faults"]
        .as_array()
        .expect("faults")
        .iter()
        .map(|f| f["fault"]["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(kinds.iter().any(|k| k.starts_with("kill")), "{kinds:?}");
    assert!(
        kinds.iter().any(|k| k.starts_with("partition")),
        "{kinds:?}"
    );
    let ok = report["ops"]["ok"].as_u64().unwrap_or(0);
    assert!(ok > 1000, "only {ok} ops succeeded");
    assert!(report["linearizability"]["keys"].as_u64().unwrap_or(0) > 10);
    for file in [
        "history.jsonl",
        "summary.txt",
        "faults.json",
        "nodes/m0.log",
    ] {
        assert!(results.path().join(file).exists(), "{file} missing");
    }
}

#[test]
fn watch_under_kill() {
    let results = tempfile::TempDir::with_prefix("jepsen-watch-").expect("temp dir");
    let out = Command::new(runner())
        .args(["run", "--nodes", "3", "--time-limit", "20"])
        .args(["--workload", "watch", "--nemesis", "kill", "--seed", "7"])
        // Its own addresses: the other smoke tests run in parallel.
        .args(["--first-host", "91", "--results"])
        .arg(results.path())
        .arg("--cairn")
        .arg(cairn())
        .output()
        .expect("run cairn-jepsen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cairn-jepsen exited with {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(results.path().join("report.json")).expect("report.json"),
    )
    .expect("report.json is JSON");
    assert_eq!(report["valid"], true);
    assert!(
        !report["faults"].as_array().expect("faults").is_empty(),
        "no kill in 20 s"
    );
    // Every watcher reconnected at least once and confirmed it had every
    // event through the head, and the check saw real traffic.
    let watch = &report["watch"];
    assert_eq!(watch["watchers"], 4, "{watch}");
    assert_eq!(watch["caught_up"], 4, "{watch}");
    assert!(watch["segments"].as_u64().unwrap_or(0) > 4, "{watch}");
    assert!(watch["events"].as_u64().unwrap_or(0) > 1000, "{watch}");
}

#[test]
fn interrupt_removes_rules_and_members() {
    let results = tempfile::TempDir::with_prefix("jepsen-int-").expect("temp dir");
    // Partitions only, so one is in place when the signal comes (the first
    // fault starts 2–5 s in and lasts at least 3 s).
    let mut child = Command::new(runner())
        .args([
            "run",
            "--nodes",
            "3",
            "--time-limit",
            "60",
            "--nemesis",
            "partition",
        ])
        // Its own addresses, so its partitions cannot cut the smoke run's
        // members apart when the two tests run in parallel.
        .args(["--seed", "5", "--first-host", "71", "--results"])
        .arg(results.path())
        .arg("--cairn")
        .arg(cairn())
        .spawn()
        .expect("run cairn-jepsen");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(40);
    // A partition is in place once the run's table has drop rules.
    loop {
        let rules = Command::new("/usr/sbin/nft")
            .args(["list", "table", "ip", &format!("cairn_jepsen_{pid}")])
            .output()
            .expect("run nft");
        if String::from_utf8_lossy(&rules.stdout).contains("drop") {
            break;
        }
        assert!(Instant::now() < deadline, "no partition within 40 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let members = member_pids(pid);
    assert_eq!(members.len(), 3, "{members:?}");
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(i32::try_from(pid).expect("pid"), libc::SIGINT);
    }
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130));
    assert_eq!(
        tables_of(pid),
        Vec::<String>::new(),
        "nft table left behind"
    );
    for member in members {
        assert!(
            !std::path::Path::new(&format!("/proc/{member}")).exists()
                || std::fs::read_to_string(format!("/proc/{member}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "member {member} still running"
        );
    }
}

/// Pids of the `cairn` children of `parent`.
fn member_pids(parent: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // comm is in parentheses; ppid is the 2nd field after it.
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        let ppid = rest.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok());
        if comm.ends_with("(cairn") && ppid == Some(parent) {
            pids.push(pid);
        }
    }
    pids
}
