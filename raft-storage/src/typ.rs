//! The openraft type configuration and the application data it carries.
//!
//! Log entries carry etcd's own request messages, encoded with prost, so a
//! request is never translated twice. openraft wants serde for entries; the
//! [`Request`] and [`Response`] impls below write a tag byte and the prost
//! bytes.

use std::io::Cursor;

use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, TxnRequest, TxnResponse,
};
use prost::Message;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ApplyError;

/// A member's ID, as etcd's member IDs are: a u64.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Cairn's openraft types.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The openraft handle with Cairn's types.
pub type Raft = openraft::Raft<TypeConfig>;

/// A mutating request, replicated through the log and applied in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// etcd's Put.
    Put(PutRequest),
    /// etcd's DeleteRange.
    DeleteRange(DeleteRangeRequest),
    /// etcd's Txn (which may only read; the server sends read-only txns
    /// through the log too, so they see a linearizable state).
    Txn(TxnRequest),
    /// etcd's Compact.
    Compaction(CompactionRequest),
}

/// What applying one entry produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Response {
    /// A blank or membership entry: nothing for a client.
    #[default]
    Empty,
    /// The Put's response; its header carries the revision.
    Put(PutResponse),
    /// The DeleteRange's response.
    DeleteRange(DeleteRangeResponse),
    /// The Txn's response.
    Txn(TxnResponse),
    /// The Compact's response. With `physical`, the caller still waits for
    /// [`crate::Store::wait_compacted`].
    Compaction(CompactionResponse),
    /// The request was refused and changed nothing.
    Rejected(ApplyError),
}

const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_TXN: u8 = 3;
const TAG_COMPACT: u8 = 4;
const TAG_EMPTY: u8 = 5;
const TAG_REJECTED: u8 = 6;

fn tagged(tag: u8, m: &impl Message) -> Vec<u8> {
    let mut buf = Vec::with_capacity(1 + m.encoded_len());
    buf.push(tag);
    m.encode(&mut buf)
        .expect("invariant: a Vec grows as needed");
    buf
}

fn decode<M: Message + Default, E: serde::de::Error>(b: &[u8]) -> Result<M, E> {
    M::decode(b).map_err(E::custom)
}

impl Request {
    /// The request's encoded size, as the `--max-request-bytes` check sees it.
    pub fn encoded_len(&self) -> usize {
        match self {
            Request::Put(m) => m.encoded_len(),
            Request::DeleteRange(m) => m.encoded_len(),
            Request::Txn(m) => m.encoded_len(),
            Request::Compaction(m) => m.encoded_len(),
        }
    }
}

impl Serialize for Request {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes = match self {
            Request::Put(m) => tagged(TAG_PUT, m),
            Request::DeleteRange(m) => tagged(TAG_DELETE, m),
            Request::Txn(m) => tagged(TAG_TXN, m),
            Request::Compaction(m) => tagged(TAG_COMPACT, m),
        };
        s.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes_compat::Bytes = Deserialize::deserialize(d)?;
        let (tag, body) = bytes
            .0
            .split_first()
            .ok_or_else(|| serde::de::Error::custom("empty request"))?;
        match *tag {
            TAG_PUT => decode(body).map(Request::Put),
            TAG_DELETE => decode(body).map(Request::DeleteRange),
            TAG_TXN => decode(body).map(Request::Txn),
            TAG_COMPACT => decode(body).map(Request::Compaction),
            t => Err(serde::de::Error::custom(format!("unknown request tag {t}"))),
        }
    }
}

impl Serialize for Response {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes = match self {
            Response::Empty => vec![TAG_EMPTY],
            Response::Put(m) => tagged(TAG_PUT, m),
            Response::DeleteRange(m) => tagged(TAG_DELETE, m),
            Response::Txn(m) => tagged(TAG_TXN, m),
            Response::Compaction(m) => tagged(TAG_COMPACT, m),
            Response::Rejected(e) => {
                let mut b = vec![TAG_REJECTED];
                b.extend(postcard::to_stdvec(e).map_err(serde::ser::Error::custom)?);
                b
            }
        };
        s.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for Response {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes_compat::Bytes = Deserialize::deserialize(d)?;
        let (tag, body) = bytes
            .0
            .split_first()
            .ok_or_else(|| serde::de::Error::custom("empty response"))?;
        match *tag {
            TAG_EMPTY => Ok(Response::Empty),
            TAG_PUT => decode(body).map(Response::Put),
            TAG_DELETE => decode(body).map(Response::DeleteRange),
            TAG_TXN => decode(body).map(Response::Txn),
            TAG_COMPACT => decode(body).map(Response::Compaction),
            TAG_REJECTED => postcard::from_bytes(body)
                .map(Response::Rejected)
                .map_err(serde::de::Error::custom),
            t => Err(serde::de::Error::custom(format!(
                "unknown response tag {t}"
            ))),
        }
    }
}

/// Reads a byte string from any serde format, whether it hands over
/// borrowed bytes, owned bytes or a sequence.
mod serde_bytes_compat {
    use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};

    pub struct Bytes(pub Vec<u8>);

    impl<'de> Deserialize<'de> for Bytes {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Bytes;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a byte string")
                }
                fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
                    Ok(Bytes(v.to_vec()))
                }
                fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes, E> {
                    Ok(Bytes(v))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
                    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                    while let Some(b) = seq.next_element::<u8>()? {
                        out.push(b);
                    }
                    Ok(Bytes(out))
                }
            }
            d.deserialize_bytes(V)
        }
    }
}
