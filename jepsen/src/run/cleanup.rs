//! Leaving the machine as it was: member processes killed and the nft table
//! deleted, whether the run ends normally, panics, or is interrupted.
//!
//! Drop impls clean up on a normal end and on an unwinding panic in the main
//! task, but a panic in another task or a Ctrl-C never reaches them. So
//! every live resource is also registered here, and a panic hook and a
//! signal task (SIGINT, SIGTERM) clean up from the registry before the
//! process exits.

use std::collections::BTreeSet;
use std::sync::Mutex;

use super::net;

/// What must not outlive the run.
#[derive(Default)]
struct Registry {
    pids: BTreeSet<u32>,
    tables: BTreeSet<String>,
}

/// A std Mutex: the panic hook and the signal task take it from any
/// thread, outside any async context.
static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    pids: BTreeSet::new(),
    tables: BTreeSet::new(),
});

fn with<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    // A poisoned lock still holds the right sets.
    let mut guard = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut guard)
}

/// A member process to SIGKILL on an abnormal exit.
pub(super) fn add_pid(pid: u32) {
    with(|r| r.pids.insert(pid));
}

/// The member process exited or was killed.
pub(super) fn remove_pid(pid: u32) {
    with(|r| r.pids.remove(&pid));
}

/// An nft table to delete on an abnormal exit.
pub(super) fn add_table(table: &str) {
    with(|r| r.tables.insert(table.to_owned()));
}

/// The table was deleted.
pub(super) fn remove_table(table: &str) {
    with(|r| r.tables.remove(table));
}

/// Kills every registered process (SIGCONT first is not needed: SIGKILL
/// ends a stopped process too) and deletes every registered table.
pub(super) fn everything() {
    let (pids, tables) = with(|r| (std::mem::take(&mut r.pids), std::mem::take(&mut r.tables)));
    for pid in pids {
        if let Ok(pid) = i32::try_from(pid) {
            // SAFETY: kill(2) has no memory effects; a stale pid at worst
            // gets ESRCH.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    for table in tables {
        net::delete_table(&table);
    }
}

/// Installs the panic hook and the signal task. Call once, inside the
/// runtime.
pub(super) fn install() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        everything();
        default(info);
    }));
    tokio::spawn(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            eprintln!("cairn-jepsen: cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("cairn-jepsen: interrupted; killing members and removing nft rules");
        everything();
        std::process::exit(130);
    });
}
