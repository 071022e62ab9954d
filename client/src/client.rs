//! [`Client`]: the handle every API hangs off, and the KV calls.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use cairn_proto::etcdserverpb as pb;
use futures::Stream;
use pb::kv_client::KvClient;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::error::{Error, Result};
use crate::kv::{CompactResponse, Delete, DeleteResponse, Get, GetResponse, Put, PutResponse};
use crate::options::ConnectOptions;
use crate::transport::{CallSpec, Endpoint, Policy, Pool};
use crate::txn::{Txn, TxnResponse};
use crate::types::{ResponseHeader, Revision};
use crate::watch::Command as WatchCommand;

/// tonic's default limit (4 MiB) is below what a large Range can answer;
/// etcd's Go client accepts any size too.
pub(crate) const MAX_DECODING_MESSAGE_SIZE: usize = usize::MAX;

/// A client of an etcd v3 cluster (Cairn or etcd).
///
/// Cheap to clone: clones share the connections and the watch stream. The
/// background tasks (the watch stream, discovery) stop once every clone and
/// every [`crate::Watcher`] is dropped.
///
/// ```no_run
/// # async fn run() -> cairn_client::Result<()> {
/// use cairn_client::{Client, ConnectOptions, Get, Put};
///
/// let client = Client::connect(
///     ["http://127.0.0.1:2379", "http://127.0.0.2:2379"],
///     ConnectOptions::default(),
/// )
/// .await?;
/// client.put(Put::new("greeting", "hello")).await?;
/// let got = client.get("greeting").await?;
/// assert_eq!(got.kvs[0].value, b"hello");
/// let all = client.get(Get::prefix("greet").with_keys_only()).await?;
/// # let _ = all;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
    /// This handle's request timeout (see [`Client::with_request_timeout`]).
    pub(crate) timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.pool.urls())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What the clones of a [`Client`] share.
pub(crate) struct Inner {
    pub(crate) pool: Arc<Pool>,
    /// The watch task's command queue, started on the first watch.
    pub(crate) watch: OnceLock<mpsc::UnboundedSender<WatchCommand>>,
}

impl Client {
    /// Connects to a cluster through `endpoints` (`http://host:port` or
    /// `host:port`).
    ///
    /// Connections are made lazily, so this does not fail because a member
    /// is down, except with discovery on, where it fails if no endpoint
    /// answers MemberList within the request timeout.
    ///
    /// # Errors
    ///
    /// [`Error::NoEndpoints`], [`Error::InvalidEndpoint`] (including
    /// `https://`: TLS is not supported yet), or discovery's MemberList
    /// failing.
    pub async fn connect<I, S>(endpoints: I, options: ConnectOptions) -> Result<Client>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let urls: Vec<String> = endpoints
            .into_iter()
            .map(|s| s.as_ref().to_owned())
            .collect();
        let timeout = options.request_timeout;
        let discovery = options.discovery;
        let interval = options.discovery_interval;
        let client = Client {
            inner: Arc::new(Inner {
                pool: Arc::new(Pool::new(&urls, options)?),
                watch: OnceLock::new(),
            }),
            timeout,
        };
        if discovery {
            client.sync_endpoints().await?;
            if let Some(interval) = interval {
                tokio::spawn(rediscover(Arc::downgrade(&client.inner), interval, timeout));
            }
        }
        Ok(client)
    }

    /// A handle on the same connections whose unary calls are bounded by
    /// `timeout` instead.
    pub fn with_request_timeout(&self, timeout: Duration) -> Client {
        Client {
            inner: Arc::clone(&self.inner),
            timeout,
        }
    }

    /// The endpoints in use, in order.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.pool.urls()
    }

    /// Replaces the endpoints with the client URLs of the cluster's voting
    /// members, from MemberList (etcd clientv3's `Sync`). Learners are left
    /// out: they serve only serializable reads.
    ///
    /// # Errors
    ///
    /// MemberList's errors.
    pub async fn sync_endpoints(&self) -> Result<()> {
        let members = self.member_list().await?;
        let urls: Vec<String> = members
            .members
            .iter()
            .filter(|m| !m.is_learner)
            .flat_map(|m| m.client_urls.iter().cloned())
            .collect();
        self.inner.pool.set_urls(&urls)
    }

    /// Runs one unary call with the retry policy.
    pub(crate) async fn unary<Req, Resp, F, Fut>(
        &self,
        policy: Policy,
        require_leader: bool,
        pinned: Option<&Arc<Endpoint>>,
        request: Req,
        call: F,
    ) -> Result<Resp>
    where
        Req: Clone,
        F: FnMut(Channel, tonic::Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let spec = CallSpec {
            policy,
            require_leader,
            timeout: self.timeout,
            pinned,
        };
        self.inner.pool.unary(spec, request, call).await
    }

    /// Reads keys: one key, a prefix, a range, with the options of [`Get`].
    /// Retried on other endpoints while they are unavailable.
    ///
    /// # Errors
    ///
    /// [`Error::Compacted`] or [`Error::FutureRevision`] for a revision out
    /// of reach, [`Error::Timeout`] or [`Error::Unavailable`] when no
    /// endpoint answered in time, and etcd's other errors.
    pub async fn get(&self, get: impl Into<Get>) -> Result<GetResponse> {
        let get = get.into();
        let require_leader = !get.is_serializable();
        let response = self
            .unary(
                Policy::Read,
                require_leader,
                None,
                get.request,
                |ch, req| async move { kv(ch).range(req).await },
            )
            .await?;
        Ok(GetResponse::from_pb(response))
    }

    /// Writes a key. Retried only if it provably never reached a server.
    ///
    /// # Errors
    ///
    /// [`Error::Ambiguous`] if it may or may not have been applied,
    /// [`Error::LeaseNotFound`] for a lease that does not exist,
    /// [`Error::NoSpace`], and etcd's other errors.
    pub async fn put(&self, put: Put) -> Result<PutResponse> {
        let response = self
            .unary(
                Policy::Write,
                true,
                None,
                put.request,
                |ch, req| async move { kv(ch).put(req).await },
            )
            .await?;
        Ok(PutResponse::from_pb(response))
    }

    /// Deletes keys. Retried only if it provably never reached a server.
    ///
    /// # Errors
    ///
    /// [`Error::Ambiguous`] if it may or may not have been applied, and
    /// etcd's errors.
    pub async fn delete(&self, delete: impl Into<Delete>) -> Result<DeleteResponse> {
        let delete = delete.into();
        let response = self
            .unary(
                Policy::Write,
                true,
                None,
                delete.request,
                |ch, req| async move { kv(ch).delete_range(req).await },
            )
            .await?;
        Ok(DeleteResponse::from_pb(response))
    }

    /// Runs a transaction. One that writes is never sent twice unless the
    /// first attempt provably never reached a server (etcd #18424); a
    /// read-only one is retried like a read.
    ///
    /// # Errors
    ///
    /// [`Error::Ambiguous`] if it may or may not have been applied,
    /// [`Error::TooManyOps`], [`Error::DuplicateKey`], and etcd's other
    /// errors.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let policy = if txn.is_read_only() {
            Policy::Read
        } else {
            Policy::Write
        };
        let require_leader = !txn.is_serializable();
        let response = self
            .unary(
                policy,
                require_leader,
                None,
                txn.request,
                |ch, req| async move { kv(ch).txn(req).await },
            )
            .await?;
        Ok(TxnResponse::from_pb(response))
    }

    /// Compacts the history below `revision`. With `physical`, waits until
    /// the space is reclaimed.
    ///
    /// # Errors
    ///
    /// [`Error::Compacted`] if already compacted at or past `revision`,
    /// [`Error::FutureRevision`] above the current revision,
    /// [`Error::Ambiguous`] if the outcome is unknown.
    pub async fn compact(&self, revision: Revision, physical: bool) -> Result<CompactResponse> {
        let request = pb::CompactionRequest {
            revision: revision.get(),
            physical,
        };
        let response = self
            .unary(Policy::Write, true, None, request, |ch, req| async move {
                kv(ch).compact(req).await
            })
            .await?;
        Ok(CompactResponse {
            header: ResponseHeader::from_pb(response.header),
        })
    }

    /// Reads a large range in pages of `page_size` keys, every page at the
    /// same revision: the first page's, or the one the [`Get`] names. So the
    /// pages add up to one consistent snapshot of the range, and a watch
    /// from that revision + 1 continues it without a gap (list-then-watch).
    ///
    /// Pages are in key order (a sort on the [`Get`] is replaced by key
    /// order, which paging needs). A page's `count` is the number of keys
    /// from its first key to the range's end. If the revision is compacted
    /// between pages, the stream ends with [`Error::Compacted`]: relist.
    ///
    /// ```no_run
    /// # async fn run(client: cairn_client::Client) -> cairn_client::Result<()> {
    /// use futures::TryStreamExt;
    /// use cairn_client::Get;
    ///
    /// let mut pages = std::pin::pin!(client.get_pages(Get::prefix("jobs/"), 500));
    /// while let Some(page) = pages.try_next().await? {
    ///     for kv in &page.kvs {
    ///         println!("{:?}", kv.key_str());
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_pages(
        &self,
        get: impl Into<Get>,
        page_size: i64,
    ) -> impl Stream<Item = Result<GetResponse>> + Send + 'static {
        let mut get = get.into();
        get.request.limit = page_size.max(1);
        get.request.sort_order = 0;
        get.request.sort_target = 0;
        let client = self.clone();
        futures::stream::try_unfold(Some(get), move |next| {
            let client = client.clone();
            async move {
                let Some(mut get) = next else {
                    return Ok(None);
                };
                let page = client.get(get.clone()).await?;
                if get.request.revision <= 0 {
                    get.request.revision = page.header.revision.get();
                }
                let next = match page.kvs.last() {
                    Some(last) if page.more && !get.request.range_end.is_empty() => {
                        let mut after = last.key.clone();
                        after.push(0);
                        get.request.key = after;
                        Some(get)
                    }
                    _ => None,
                };
                Ok(Some((page, next)))
            }
        })
    }
}

/// A KV client on `channel`.
pub(crate) fn kv(channel: Channel) -> KvClient<Channel> {
    KvClient::new(channel).max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE)
}

/// Refreshes the endpoints from MemberList every `interval` until the
/// client is gone.
async fn rediscover(inner: Weak<Inner>, interval: Duration, timeout: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let client = Client { inner, timeout };
        if let Err(error) = client.sync_endpoints().await {
            tracing::debug!(%error, "endpoint discovery failed; keeping the endpoints");
        }
    }
}

impl From<tokio::sync::oneshot::error::RecvError> for Error {
    fn from(_: tokio::sync::oneshot::error::RecvError) -> Self {
        Error::Closed
    }
}
