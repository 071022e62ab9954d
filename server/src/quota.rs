//! The backend quota and the alarms that refuse requests, as etcd's
//! `quotaKVServer` and `applierV3Capped`/`applierV3Corrupt` do.
//!
//! A request that may add data (a put, a txn that puts, a lease grant) is
//! admitted only if no NOSPACE alarm is active and the bytes in use plus
//! its cost stay under `--quota-backend-bytes`. The first request over the
//! quota raises NOSPACE for this member through Raft, so every member
//! refuses the same writes; apply refuses them too, for requests already
//! in flight. Reads, deletes, compaction and disarming go on. While a
//! CORRUPT alarm is active, every mutating request is refused.
//!
//! The quota counts the bytes of the MVCC records in use
//! ([`Store::size_in_use`]), not sled's file size as etcd counts bbolt's:
//! sled's file is a multiple of the data that depends on its write pattern
//! (and holds the Raft log too), so a quota on it would trip at a fraction
//! of the data meant. Compaction lowers the bytes in use at once;
//! defragment gives the file's free space back but is not needed to get
//! under the quota.

use cairn_proto::etcdserverpb::{alarm_request::AlarmAction, AlarmRequest, AlarmType};
use cairn_raft_storage::{ApplyError, NodeId, Request as Proposal, Response as Applied, Store};

use crate::propose::Proposer;
use crate::status::RequestError;

/// What a record costs beyond its key and value (its revision key, the
/// `KeyValue` fields), as etcd's quota adds an overhead per request.
const RECORD_OVERHEAD: u64 = 64;

/// Admits or refuses mutating requests by the quota and the alarms.
#[derive(Clone)]
pub(crate) struct Quota {
    store: Store,
    proposer: Proposer,
    me: NodeId,
    bytes: u64,
}

impl Quota {
    pub(crate) fn new(store: Store, proposer: Proposer, me: NodeId, bytes: u64) -> Self {
        Quota {
            store,
            proposer,
            me,
            bytes,
        }
    }

    /// Whether alarm `kind` is active for any member.
    fn active(&self, kind: AlarmType) -> bool {
        self.store.alarms().iter().any(|(_, a)| *a == kind as i32)
    }

    /// Admits `req`, or says why not. Over the quota, raises NOSPACE first.
    ///
    /// # Errors
    /// [`RequestError::Corrupt`] under a CORRUPT alarm; NoSpace under a
    /// NOSPACE alarm or over the quota.
    pub(crate) async fn admit(&self, req: &Proposal) -> Result<(), RequestError> {
        if self.active(AlarmType::Corrupt) {
            return Err(RequestError::Corrupt);
        }
        if !req.adds_data() {
            return Ok(());
        }
        if self.active(AlarmType::Nospace) {
            return Err(RequestError::Apply(ApplyError::NoSpace));
        }
        let cost = req.encoded_len() as u64 + RECORD_OVERHEAD;
        if self.store.size_in_use().saturating_add(cost) > self.bytes {
            tracing::warn!(
                in_use = self.store.size_in_use(),
                quota = self.bytes,
                "backend quota reached: raising the NOSPACE alarm"
            );
            self.raise(AlarmType::Nospace).await?;
            return Err(RequestError::Apply(ApplyError::NoSpace));
        }
        Ok(())
    }

    /// Raises `kind` for this member through Raft.
    pub(crate) async fn raise(&self, kind: AlarmType) -> Result<(), RequestError> {
        let req = AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: self.me,
            alarm: kind as i32,
        };
        match self.proposer.propose(Proposal::Alarm(req)).await? {
            Applied::Alarm(_) => Ok(()),
            other => Err(crate::status::unexpected(&other)),
        }
    }
}
