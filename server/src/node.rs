//! One member: storage, Raft and the gRPC services, wired together.
//!
//! [`Node::start`] is the one wiring function: flags → client listeners →
//! data dir and member identity → storage → openraft config → network →
//! `Raft::new` → (bootstrap) → leadership → services. [`Node::shutdown`]
//! undoes it in reverse order and returns only when the storage is closed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb::kv_server::KvServer;
use cairn_proto::etcdserverpb::lease_server::LeaseServer;
use cairn_proto::etcdserverpb::watch_server::WatchServer;
use cairn_proto::v3electionpb::election_server::ElectionServer;
use cairn_proto::v3lockpb::lock_server::LockServer;
use cairn_raft_storage::{Opened, Options as StorageOptions, Raft, Store};
use openraft::error::{Fatal, InitializeError, RaftError};
use openraft::metrics::WaitError;
use openraft::{BasicNode, ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use crate::compactor;
use crate::concurrency::{self, ElectionService, LockService};
use crate::config::{Config, Scheme, Url};
use crate::error::{Error, Result};
use crate::header::Header;
use crate::kv::{KvParts, KvService};
use crate::lease::{LeaseService, Lessor};
use crate::member::{self, MemberIds};
use crate::network::Network;
use crate::propose::Proposer;
use crate::read_index::ReadBarrier;
use crate::status::GrpcCompat;
use crate::tracked::{self, Released, TrackedStateMachine};
use crate::watch::{Hub, WatchService};

/// gRPC framing and etcd's own envelope on top of `--max-request-bytes`
/// (etcd's `grpcOverheadBytes`).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// etcd's base request timeout; twice the election timeout is added.
const BASE_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown lets open connections finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for the storage to close after that.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running member serving the etcd v3 API.
///
/// Dropping a `Node` without [`Node::shutdown`] leaves its tasks running
/// until the runtime stops; the storage then stays locked until then.
pub struct Node {
    ids: MemberIds,
    raft: Raft,
    store: Store,
    client_addrs: Vec<SocketAddr>,
    stop_serving: watch::Sender<bool>,
    servers: Vec<JoinHandle<std::result::Result<(), tonic::transport::Error>>>,
    read_barrier: JoinHandle<()>,
    auto_compactor: Option<JoinHandle<()>>,
    batcher: Option<JoinHandle<()>>,
    /// The watch hub and its sync thread.
    watch: Option<(Arc<Hub>, std::thread::JoinHandle<()>)>,
    /// The lessor's expiry and checkpoint loop.
    lessor: Option<JoinHandle<()>>,
    released: Released,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("member_id", &format_args!("{:x}", self.ids.member_id))
            .field("cluster_id", &format_args!("{:x}", self.ids.cluster_id))
            .field("client_addrs", &self.client_addrs)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Starts a member and returns once it leads its cluster and serves
    /// clients on every `--listen-client-urls`.
    ///
    /// On a data dir that holds a member already, the bootstrap flags are
    /// ignored and the member restarts with its stored identity.
    ///
    /// # Errors
    ///
    /// See [`Error`]: inconsistent flags, an unusable or corrupt data dir, a
    /// port in use, or no leadership within ten election timeouts. Nothing
    /// is left running or locked after an error.
    pub async fn start(config: Config) -> Result<Node> {
        config.validate()?;
        let listeners = bind_all(&config.listen_client_urls).await?;
        let client_addrs = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|source| Error::Bind {
                url: config.listen_client_urls[0].clone(),
                source,
            })?;

        let (ids, store_dir) = identity(&config)?;
        tracing::info!(
            member_id = format_args!("{:x}", ids.member_id),
            cluster_id = format_args!("{:x}", ids.cluster_id),
            data_dir = %config.data_dir().display(),
            "starting member"
        );

        let options = StorageOptions::new(store_dir);
        let Opened {
            log_store,
            state_machine,
            store,
        } = tokio::task::spawn_blocking(move || cairn_raft_storage::open(&options)).await??;

        let (tracker, released) = tracked::tracker();
        let raft = Raft::new(
            ids.member_id,
            Arc::new(raft_config(&config)?),
            Network,
            log_store,
            TrackedStateMachine::new(state_machine, tracker.clone()),
        )
        .await?;

        let mut node = Node {
            ids,
            raft,
            store,
            client_addrs,
            stop_serving: watch::channel(false).0,
            servers: Vec::new(),
            read_barrier: tokio::spawn(async {}),
            auto_compactor: None,
            batcher: None,
            watch: None,
            lessor: None,
            released,
        };
        // From here on the storage is open: on failure, close it again.
        match node.lead_and_serve(&config, listeners, tracker).await {
            Ok(()) => Ok(node),
            Err(e) => {
                node.shutdown().await;
                Err(e)
            }
        }
    }

    /// Bootstraps if needed, waits for leadership, then starts serving.
    async fn lead_and_serve(
        &mut self,
        config: &Config,
        listeners: Vec<TcpListener>,
        tracker: tracked::Tracker,
    ) -> Result<()> {
        if !self.raft.is_initialized().await? {
            bootstrap(&self.raft, self.ids, config).await?;
        }
        await_leadership(&self.raft, self.ids, config).await?;

        let request_timeout =
            BASE_REQUEST_TIMEOUT + 2 * Duration::from_millis(config.election_timeout);
        let (reads, read_barrier) = ReadBarrier::spawn(self.raft.clone(), request_timeout);
        self.read_barrier = read_barrier;
        let max_request_bytes = usize::try_from(config.max_request_bytes).unwrap_or(usize::MAX);
        let (proposer, batcher) =
            Proposer::spawn(self.raft.clone(), max_request_bytes, request_timeout);
        self.batcher = Some(batcher);
        if let Some(mode) = config.auto_compaction()? {
            self.auto_compactor = Some(compactor::spawn(
                mode,
                self.raft.clone(),
                self.store.clone(),
                proposer.clone(),
            ));
        }
        let lessor = Lessor::new(
            self.store.clone(),
            proposer.clone(),
            self.ids.member_id,
            Duration::from_millis(config.election_timeout),
        );
        self.lessor = Some(lessor.spawn(
            self.raft.clone(),
            config.experimental_lease_checkpoint_interval,
        ));
        let lease = LeaseServer::new(LeaseService::new(
            lessor,
            self.store.clone(),
            Header::new(self.ids, &self.raft),
            self.stop_serving.subscribe(),
            tracker.clone(),
        ));
        let kv = KvService::new(KvParts {
            store: self.store.clone(),
            proposer: proposer.clone(),
            reads,
            header: Header::new(self.ids, &self.raft),
            max_txn_ops: usize::try_from(config.max_txn_ops).unwrap_or(usize::MAX),
            tracker: tracker.clone(),
        });
        let kv = KvServer::new(kv)
            .max_decoding_message_size(max_request_bytes.saturating_add(GRPC_OVERHEAD_BYTES))
            .max_encoding_message_size(usize::MAX);
        let (hub, sync_thread) = Hub::start(
            self.store.clone(),
            config.experimental_watch_progress_notify_interval,
        )
        .map_err(Error::Thread)?;
        self.watch = Some((hub.clone(), sync_thread));
        let parts = concurrency::Parts {
            store: self.store.clone(),
            proposer: proposer.clone(),
            hub: hub.clone(),
        };
        let lock = LockServer::new(LockService::new(
            parts.clone(),
            Header::new(self.ids, &self.raft),
            tracker.clone(),
        ));
        let election = ElectionServer::new(ElectionService::new(
            parts,
            Header::new(self.ids, &self.raft),
            tracker.clone(),
        ));
        let watch = WatchServer::new(WatchService::new(
            hub,
            Header::new(self.ids, &self.raft),
            max_request_bytes,
            tracker,
        ))
        .max_decoding_message_size(max_request_bytes.saturating_add(GRPC_OVERHEAD_BYTES))
        .max_encoding_message_size(usize::MAX);

        for listener in listeners {
            let mut stop = self.stop_serving.subscribe();
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            // etcd allows any number of concurrent streams per connection
            // (--max-concurrent-streams defaults to 2^32-1); Go clients
            // multiplex everything on one connection.
            let router = Server::builder()
                .max_concurrent_streams(Some(u32::MAX))
                .add_service(GrpcCompat(kv.clone()))
                .add_service(GrpcCompat(watch.clone()))
                .add_service(GrpcCompat(lease.clone()))
                .add_service(GrpcCompat(lock.clone()))
                .add_service(GrpcCompat(election.clone()));
            self.servers
                .push(tokio::spawn(router.serve_with_incoming_shutdown(
                    incoming,
                    async move {
                        // An error means the node is gone: stop as well.
                        let _ = stop.wait_for(|stop| *stop).await;
                    },
                )));
        }
        Ok(())
    }

    /// The addresses the client listeners are bound to, in the order of
    /// `--listen-client-urls` (with port 0 resolved to the port the OS chose).
    pub fn client_addrs(&self) -> &[SocketAddr] {
        &self.client_addrs
    }

    /// This member's id.
    pub fn member_id(&self) -> u64 {
        self.ids.member_id
    }

    /// The id of the cluster this member belongs to.
    pub fn cluster_id(&self) -> u64 {
        self.ids.cluster_id
    }

    /// A read handle on the MVCC store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The openraft handle.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Stops serving and closes the storage.
    ///
    /// Client listeners close at once; requests in flight get
    /// [`DRAIN_TIMEOUT`] to finish, then their connections are dropped.
    /// Raft stops, and the call returns once every handle on the storage is
    /// gone, so a new node may open the same data dir right away.
    pub async fn shutdown(self) {
        let Node {
            ids,
            raft,
            store,
            client_addrs: _,
            stop_serving,
            servers,
            read_barrier,
            auto_compactor,
            batcher,
            watch,
            lessor,
            mut released,
        } = self;
        if let Some(task) = auto_compactor {
            task.abort();
        }
        if let Some(task) = lessor {
            task.abort();
        }
        // Watch streams never end on their own: end them, so that the
        // connections drain.
        if let Some((hub, _)) = &watch {
            hub.close();
        }
        let _ = stop_serving.send(true);
        for mut server in servers {
            match tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "client server failed"),
                Ok(Err(e)) => tracing::warn!(error = %e, "client server task failed"),
                Err(_) => {
                    tracing::warn!("connections still busy after {DRAIN_TIMEOUT:?}; dropping them");
                    server.abort();
                }
            }
        }
        if let Err(e) = raft.shutdown().await {
            tracing::warn!(error = %e, "raft task failed while shutting down");
        }
        drop(raft);
        drop(store);
        if let Some((hub, thread)) = watch {
            drop(hub);
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        // The read barrier's loop ends once the services holding it are gone.
        if tokio::time::timeout(CLOSE_TIMEOUT, async {
            released.wait().await;
            let _ = read_barrier.await;
            if let Some(batcher) = batcher {
                let _ = batcher.await;
            }
        })
        .await
        .is_err()
        {
            tracing::warn!("storage still in use {CLOSE_TIMEOUT:?} after shutdown");
        }
        tracing::info!(
            member_id = format_args!("{:x}", ids.member_id),
            "member stopped"
        );
    }
}

/// Binds every client URL before anything else is touched, so a port in use
/// fails the start cheaply.
async fn bind_all(urls: &[Url]) -> Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(urls.len());
    for url in urls {
        listeners.push(bind(url).await?);
    }
    Ok(listeners)
}

async fn bind(url: &Url) -> Result<TcpListener> {
    if url.scheme() == Scheme::Https {
        return Err(Error::TlsUnsupported(url.clone()));
    }
    let (host, port) = url.authority();
    let addrs = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|source| Error::Resolve {
            url: url.clone(),
            source,
        })?;
    let mut last_error = None;
    for addr in addrs {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = Some(e),
        }
    }
    Err(Error::Bind {
        url: url.clone(),
        source: last_error.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, "host has no address")
        }),
    })
}

/// Creates `<data-dir>/member` and reads or creates the member's identity.
/// Returns the ids and the storage directory.
fn identity(config: &Config) -> Result<(MemberIds, PathBuf)> {
    let member_dir = config.data_dir().join("member");
    let store_dir = member_dir.join("store");
    if let Some(ids) = member::load(&member_dir)? {
        tracing::info!("data dir holds a member: ignoring the bootstrap flags");
        return Ok((ids, store_dir));
    }
    if store_dir.exists() {
        return Err(Error::MissingMemberFile(member::id_path(&member_dir)));
    }
    // Check the bootstrap flags before creating anything, so that a typo
    // leaves no half-made data dir behind.
    let ids = member::derive(config)?;
    std::fs::create_dir_all(&member_dir).map_err(|source| Error::DataDir {
        path: member_dir.clone(),
        source,
    })?;
    member::store(&member_dir, ids)?;
    Ok((ids, store_dir))
}

/// openraft's configuration from etcd's flags.
fn raft_config(config: &Config) -> Result<openraft::Config> {
    let raft_config = openraft::Config {
        cluster_name: config.initial_cluster_token.clone(),
        heartbeat_interval: config.heartbeat_interval,
        election_timeout_min: config.election_timeout,
        election_timeout_max: config.election_timeout.saturating_mul(2),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_count()),
        ..openraft::Config::default()
    };
    Ok(raft_config.validate()?)
}

/// Creates the one-member cluster on a fresh data dir.
async fn bootstrap(raft: &Raft, ids: MemberIds, config: &Config) -> Result<()> {
    let peer_urls = config.bootstrap_peer_urls()?;
    // The member's raft address is its peer URLs, comma-separated, as in
    // etcd's member list.
    let addr = peer_urls
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let members = BTreeMap::from([(ids.member_id, BasicNode::new(addr))]);
    match raft.initialize(members).await {
        // NotAllowed: a previous start got as far as initializing.
        Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(RaftError::APIError(e)) => Err(e.into()),
        Err(RaftError::Fatal(f)) => Err(f.into()),
    }
}

/// Waits until this member leads. A sole voter that restarts as follower is
/// told to campaign at once rather than after an election timeout.
async fn await_leadership(raft: &Raft, ids: MemberIds, config: &Config) -> Result<()> {
    let me = ids.member_id;
    let (state, sole_voter) = raft
        .with_raft_state(move |st| {
            let voters: Vec<u64> = st.membership_state.effective().voter_ids().collect();
            (st.server_state, voters == [me])
        })
        .await?;
    if sole_voter && state == ServerState::Follower {
        raft.trigger().elect().await?;
    }
    let bound = Duration::from_millis(config.election_timeout.saturating_mul(10));
    raft.wait(Some(bound))
        .state(ServerState::Leader, "start-up: this member becomes leader")
        .await
        .map_err(|e| match e {
            WaitError::Timeout(..) => Error::NoLeader(bound),
            WaitError::ShuttingDown => Fatal::Stopped.into(),
        })?;
    Ok(())
}
