//! openraft's storage conformance suite against our store.

use cairn_raft_storage::{open, LogStore, Options, StateMachine, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = open(&Options::new(dir.path())).expect("open");
        Ok((dir, o.log_store, o.state_machine))
    }
}

#[test]
fn openraft_suite() {
    Suite::test_all(Builder).expect("openraft's storage suite");
}
