//! What the clients did: one [`Op`] per request, with real times.
//!
//! An op is recorded when it completes, with the instant it was invoked and
//! the instant its answer (or its timeout) came. Its [`Outcome`] is one of
//! Jepsen's three: it happened ([`Outcome::Ok`]), it certainly did not
//! ([`Outcome::Fail`]), or nobody knows ([`Outcome::Info`]): a timeout, a
//! broken connection, any error after which the request may still commit.
//! Checkers must let an indeterminate op take effect at any time after its
//! invocation, or never.

use serde::{Deserialize, Serialize};

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Call {
    /// A linearizable Range of one key.
    Read {
        /// The key.
        key: String,
    },
    /// A Put of a value unique in the run.
    Write {
        /// The key.
        key: String,
        /// The value; no two writes in a run write the same one.
        value: u64,
    },
    /// A compare-and-set: a txn that puts `value` if the key's mod_revision
    /// is `expect_revision` (0: the key is absent), which the client read
    /// earlier together with `expect`.
    Cas {
        /// The key.
        key: String,
        /// The value the client saw at `expect_revision`, None for absent.
        expect: Option<u64>,
        /// The mod_revision compared.
        expect_revision: i64,
        /// The value to put.
        value: u64,
    },
    /// A txn over several keys: reads and appends to lists.
    Txn {
        /// The micro-ops, in order.
        ops: Vec<Micro>,
    },
}

impl Call {
    /// The one key a single-key call touches.
    pub fn key(&self) -> Option<&str> {
        match self {
            Call::Read { key } | Call::Write { key, .. } | Call::Cas { key, .. } => Some(key),
            Call::Txn { .. } => None,
        }
    }

    /// Whether the call can change the store.
    pub fn writes(&self) -> bool {
        match self {
            Call::Read { .. } => false,
            Call::Write { .. } | Call::Cas { .. } => true,
            Call::Txn { ops } => ops.iter().any(|m| matches!(m, Micro::Append { .. })),
        }
    }
}

/// One micro-op of a list-append txn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "m", rename_all = "snake_case")]
pub enum Micro {
    /// Reads the list under `key`; the result is filled in on completion.
    Read {
        /// The key.
        key: String,
        /// The list read, None until the txn completed ok.
        value: Option<Vec<u64>>,
    },
    /// Appends `value` (unique in the run) to the list under `key`.
    Append {
        /// The key.
        key: String,
        /// The element.
        value: u64,
    },
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    /// It happened; `revision` is the response header's revision.
    Ok {
        /// The header revision of the answer.
        revision: i64,
        /// What the call returned.
        result: Return,
    },
    /// It certainly did not happen.
    Fail {
        /// The error.
        error: String,
    },
    /// It may or may not have happened.
    Info {
        /// The error, or "timeout".
        error: String,
    },
}

/// The result of a call that completed ok.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum Return {
    /// A write (Put) or a txn whose results live in its micro-ops.
    Done,
    /// A read: the value and its mod_revision, None for an absent key.
    Read {
        /// The value and its mod_revision.
        value: Option<(u64, i64)>,
    },
    /// A CAS: whether the compare held and the put was made.
    Cas {
        /// The compare held.
        succeeded: bool,
    },
    /// A list-append txn: the micro-ops with their reads filled in.
    Txn {
        /// The micro-ops.
        ops: Vec<Micro>,
    },
}

/// One client request from invocation to completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The logical client. A client whose op was indeterminate is retired
    /// and its worker goes on as a new process, so that one process never
    /// has two ops in flight.
    pub process: u64,
    /// The member the request was sent to.
    pub node: usize,
    /// Nanoseconds from the start of the run to the invocation.
    pub invoke: u64,
    /// Nanoseconds from the start of the run to the completion.
    pub complete: u64,
    /// The request.
    pub call: Call,
    /// The answer.
    pub outcome: Outcome,
}

impl Op {
    /// Completed ok.
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok { .. })
    }

    /// Indeterminate.
    pub fn is_info(&self) -> bool {
        matches!(self.outcome, Outcome::Info { .. })
    }

    /// The header revision of an ok op.
    pub fn revision(&self) -> Option<i64> {
        match self.outcome {
            Outcome::Ok { revision, .. } => Some(revision),
            _ => None,
        }
    }
}
