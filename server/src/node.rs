//! One member: storage, Raft and the gRPC services, wired together.
//!
//! [`Node::start`] is the one wiring function: flags → client listeners →
//! data dir and member identity → storage → openraft config → network →
//! `Raft::new` → (bootstrap) → leadership → services. [`Node::shutdown`]
//! undoes it in reverse order and returns only when the storage is closed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::cairnpeer::peer_server::PeerServer;
use cairn_proto::etcdserverpb::cluster_server::ClusterServer;
use cairn_proto::etcdserverpb::kv_server::KvServer;
use cairn_proto::etcdserverpb::lease_server::LeaseServer;
use cairn_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use cairn_proto::etcdserverpb::watch_server::WatchServer;
use cairn_proto::v3electionpb::election_server::ElectionServer;
use cairn_proto::v3lockpb::lock_server::LockServer;
use cairn_raft_storage::{Member, Opened, Options as StorageOptions, Raft, Store};
use openraft::error::{Fatal, InitializeError, RaftError};
use openraft::metrics::WaitError;
use openraft::{ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::{Router, TcpIncoming};
use tonic::transport::Server;

use crate::cluster::{ClusterService, Connected, Membership, Steward, StewardConfig};
use crate::compactor;
use crate::concurrency::{self, ElectionService, LockService};
use crate::config::{ClusterState, Config, Scheme, Url};
use crate::error::{Error, Result};
use crate::header::Header;
use crate::kv::{KvParts, KvService};
use crate::lease::{LeaseService, Lessor};
use crate::maintenance::{MaintenanceParts, MaintenanceService};
use crate::member::{self, MemberIds};
use crate::peer::{self, Contact, Leader, Network, PeerService, Peers, Restarted, Route};
use crate::propose::Proposer;
use crate::quota::Quota;
use crate::read_index::ReadBarrier;
use crate::status::GrpcCompat;
use crate::tracked::{self, Released, TrackedStateMachine};
use crate::watch::{Hub, WatchService};
use crate::{backups, corruption};

/// gRPC framing and etcd's own envelope on top of `--max-request-bytes`
/// (etcd's `grpcOverheadBytes`).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// etcd's base request timeout; twice the election timeout is added.
const BASE_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown lets open connections finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for the storage to close after that.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener's serving task.
type Serving = JoinHandle<std::result::Result<(), tonic::transport::Error>>;

/// A running member serving the etcd v3 API.
///
/// Dropping a `Node` without [`Node::shutdown`] leaves its tasks running
/// until the runtime stops; the storage then stays locked until then.
pub struct Node {
    ids: MemberIds,
    raft: Raft,
    store: Store,
    client_addrs: Vec<SocketAddr>,
    peer_addrs: Vec<SocketAddr>,
    /// Stops the client listeners (and ends lease keep-alive streams).
    stop_serving: watch::Sender<bool>,
    servers: Vec<Serving>,
    /// Stops the peer listeners, after the client ones have drained.
    stop_peers: watch::Sender<bool>,
    peer_servers: Vec<Serving>,
    read_barrier: JoinHandle<()>,
    auto_compactor: Option<JoinHandle<()>>,
    /// Scheduled backups (`--backup-dir`).
    backups: Option<JoinHandle<()>>,
    /// The periodic corruption check.
    corruption: Option<JoinHandle<()>>,
    batcher: Option<JoinHandle<()>>,
    /// The watch hub and its sync thread.
    watch: Option<(Arc<Hub>, std::thread::JoinHandle<()>)>,
    /// The lessor's expiry and checkpoint loop.
    lessor: Option<JoinHandle<()>>,
    /// Pre-vote, publishing, removal and auto promotion.
    steward: Option<Steward>,
    released: Released,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("member_id", &format_args!("{:x}", self.ids.member_id))
            .field("cluster_id", &format_args!("{:x}", self.ids.cluster_id))
            .field("client_addrs", &self.client_addrs)
            .field("peer_addrs", &self.peer_addrs)
            .finish_non_exhaustive()
    }
}

/// What the services are built from, made before Raft campaigns, because a
/// member must answer its peers from the start.
struct Core {
    route: Route,
    proposer: Proposer,
    lessor: Arc<Lessor>,
    membership: Arc<Membership>,
    peers: Arc<Peers>,
    contact: Arc<Contact>,
    request_timeout: Duration,
    max_request_bytes: usize,
}

impl Node {
    /// Starts a member. A member of a one-member cluster returns once it
    /// leads; a member of a larger cluster returns once it serves, and
    /// answers "no leader" until an election is won.
    ///
    /// On a data dir that holds a member already, the bootstrap flags are
    /// ignored and the member restarts with its stored identity. With
    /// `--initial-cluster-state existing`, a new member asks the members of
    /// `--initial-cluster` for its id, which MemberAdd gave it.
    ///
    /// # Errors
    ///
    /// See [`Error`]: inconsistent flags, an unusable or corrupt data dir, a
    /// port in use, a cluster to join that does not know this member, or no
    /// leadership within ten election timeouts for a one-member cluster.
    /// Nothing is left running or locked after an error.
    pub async fn start(config: Config) -> Result<Node> {
        config.validate()?;
        let listeners = bind_all(&config.listen_client_urls).await?;
        let peer_listeners = bind_all(&config.listen_peer_urls).await?;
        let addrs = |ls: &[TcpListener], url: &Url| {
            ls.iter()
                .map(|l| l.local_addr())
                .collect::<std::io::Result<Vec<_>>>()
                .map_err(|source| Error::Bind {
                    url: url.clone(),
                    source,
                })
        };
        let client_addrs = addrs(&listeners, &config.listen_client_urls[0])?;
        let peer_addrs = addrs(&peer_listeners, &config.listen_peer_urls[0])?;

        let (ids, store_dir, fresh) = identity(&config).await?;
        tracing::info!(
            member_id = format_args!("{:x}", ids.member_id),
            cluster_id = format_args!("{:x}", ids.cluster_id),
            data_dir = %config.data_dir().display(),
            "starting member"
        );

        let mut options = StorageOptions::new(store_dir);
        options.cache_capacity = config.experimental_backend_cache_bytes;
        let Opened {
            log_store,
            state_machine,
            store,
        } = tokio::task::spawn_blocking(move || cairn_raft_storage::open(&options)).await??;
        if config.force_new_cluster && !fresh {
            tracing::warn!("--force-new-cluster: this member becomes the only member of its cluster, keeping its data");
            let log = log_store.clone();
            let me = this_member(&config);
            let id = ids.member_id;
            tokio::task::spawn_blocking(move || log.force_sole_member(id, me)).await??;
        }

        let restarted = restarted(&log_store).await?;
        let heartbeat = Duration::from_millis(config.heartbeat_interval);
        let source = peer_addrs
            .first()
            .map(|addr| addr.ip())
            .filter(|ip| !ip.is_unspecified());
        let peers =
            Arc::new(Peers::new(ids.cluster_id, ids.member_id, heartbeat).leaving_from(source));
        let connected = Arc::new(Connected::default());
        let (tracker, released) = tracked::tracker();
        let raft = Raft::new(
            ids.member_id,
            Arc::new(raft_config(&config)?),
            Network::new(peers.clone(), connected.clone(), heartbeat),
            log_store,
            TrackedStateMachine::new(state_machine, tracker.clone()),
        )
        .await?;

        let mut node = Node {
            ids,
            raft,
            store,
            client_addrs,
            peer_addrs,
            stop_serving: watch::channel(false).0,
            servers: Vec::new(),
            stop_peers: watch::channel(false).0,
            peer_servers: Vec::new(),
            read_barrier: tokio::spawn(async {}),
            auto_compactor: None,
            backups: None,
            corruption: None,
            batcher: None,
            watch: None,
            lessor: None,
            steward: None,
            released,
        };
        // From here on the storage is open: on failure, close it again.
        let started = async {
            let core = node.serve_peers(&config, peer_listeners, peers, connected, restarted)?;
            node.join(&config, fresh).await?;
            node.serve_clients(&config, listeners, tracker, core)
        };
        match started.await {
            Ok(()) => Ok(node),
            Err(e) => {
                node.shutdown().await;
                Err(e)
            }
        }
    }

    /// Builds the proposer and its peers, and serves the peer service.
    fn serve_peers(
        &mut self,
        config: &Config,
        listeners: Vec<TcpListener>,
        peers: Arc<Peers>,
        connected: Arc<Connected>,
        restarted: Restarted,
    ) -> Result<Core> {
        let election_timeout = Duration::from_millis(config.election_timeout);
        let request_timeout = BASE_REQUEST_TIMEOUT + 2 * election_timeout;
        let contact = Arc::new(Contact::default());
        let route = Route::new(
            self.raft.clone(),
            peers.clone(),
            self.ids.member_id,
            contact.clone(),
            restarted,
            election_timeout,
            request_timeout,
        );
        let max_request_bytes = usize::try_from(config.max_request_bytes).unwrap_or(usize::MAX);
        let (proposer, batcher) = Proposer::spawn(
            self.raft.clone(),
            route.clone(),
            max_request_bytes,
            request_timeout,
        );
        self.batcher = Some(batcher);
        let lessor = Lessor::new(
            self.store.clone(),
            proposer.clone(),
            route.clone(),
            self.ids.member_id,
            election_timeout,
        );
        let membership = Arc::new(Membership::new(
            self.raft.clone(),
            route.clone(),
            self.ids,
            config.strict_reconfig_check,
            connected,
            request_timeout,
        ));
        let service = PeerService::new(
            self.raft.clone(),
            self.ids.cluster_id,
            contact.clone(),
            Leader {
                route: route.clone(),
                proposer: proposer.clone(),
                membership: membership.clone(),
                lessor: lessor.clone(),
            },
            election_timeout,
        );
        let peer_server = PeerServer::new(service)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        for listener in listeners {
            let router = Server::builder()
                .max_concurrent_streams(Some(u32::MAX))
                .add_service(peer_server.clone());
            let ready = watch::channel(true).1;
            self.peer_servers
                .push(serve(router, listener, ready, self.stop_peers.subscribe()));
        }
        Ok(Core {
            route,
            proposer,
            lessor,
            membership,
            peers,
            contact,
            request_timeout,
            max_request_bytes,
        })
    }

    /// Bootstraps a new cluster if this member is new in one, and waits for
    /// leadership if it is the only voter.
    async fn join(&mut self, config: &Config, fresh: bool) -> Result<()> {
        let bootstrap = fresh && config.initial_cluster_state == ClusterState::New;
        if bootstrap && !self.raft.is_initialized().await? {
            initialize(&self.raft, config).await?;
        }
        let me = self.ids.member_id;
        let sole_voter = self
            .raft
            .with_raft_state(move |st| {
                let voters: Vec<u64> = st.membership_state.effective().voter_ids().collect();
                voters == [me]
            })
            .await?;
        if sole_voter {
            await_leadership(&self.raft, self.ids, config).await?;
        }
        Ok(())
    }

    /// Starts the client services and the member's background loops.
    fn serve_clients(
        &mut self,
        config: &Config,
        listeners: Vec<TcpListener>,
        tracker: tracked::Tracker,
        core: Core,
    ) -> Result<()> {
        let Core {
            route,
            proposer,
            lessor,
            membership,
            peers,
            contact,
            request_timeout,
            max_request_bytes,
        } = core;
        let (reads, read_barrier) = ReadBarrier::spawn(route.clone(), request_timeout);
        self.read_barrier = read_barrier;
        if let Some(mode) = config.auto_compaction()? {
            self.auto_compactor = Some(compactor::spawn(
                mode,
                self.raft.clone(),
                self.store.clone(),
                proposer.clone(),
            ));
        }
        if !config.experimental_corrupt_check_time.is_zero() {
            self.corruption = Some(corruption::spawn(
                corruption::Checker {
                    raft: self.raft.clone(),
                    store: self.store.clone(),
                    route: route.clone(),
                    proposer: proposer.clone(),
                    me: self.ids.member_id,
                },
                config.experimental_corrupt_check_time,
            ));
        }
        if let Some(dir) = &config.backup_dir {
            self.backups = Some(backups::spawn(
                self.store.clone(),
                backups::Schedule {
                    dir: dir.clone(),
                    interval: config.backup_interval,
                    retention: config.backup_retention,
                },
            ));
        }
        self.lessor = Some(lessor.spawn(
            self.raft.clone(),
            config.experimental_lease_checkpoint_interval,
        ));
        self.steward = Some(Steward::spawn(
            self.raft.clone(),
            membership.clone(),
            peers,
            contact,
            StewardConfig {
                me: self.ids.member_id,
                name: config.name.clone(),
                client_urls: config
                    .advertise_client_urls
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                heartbeat: Duration::from_millis(config.heartbeat_interval),
                election_timeout: Duration::from_millis(config.election_timeout),
                auto_promote: config.experimental_auto_promote_learners,
            },
        ));
        let published = self
            .steward
            .as_ref()
            .map(|s| s.published.clone())
            .expect("invariant: the steward was just spawned");
        let quota = Quota::new(
            self.store.clone(),
            proposer.clone(),
            self.ids.member_id,
            config.quota_backend_bytes(),
        );
        let lease = LeaseServer::new(LeaseService::new(
            lessor,
            self.store.clone(),
            Header::new(self.ids, &self.raft),
            self.stop_serving.subscribe(),
            quota.clone(),
            tracker.clone(),
        ));
        let kv = KvService::new(KvParts {
            store: self.store.clone(),
            proposer: proposer.clone(),
            reads: reads.clone(),
            header: Header::new(self.ids, &self.raft),
            max_txn_ops: usize::try_from(config.max_txn_ops).unwrap_or(usize::MAX),
            quota: quota.clone(),
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
            tracker.clone(),
        ))
        .max_decoding_message_size(max_request_bytes.saturating_add(GRPC_OVERHEAD_BYTES))
        .max_encoding_message_size(usize::MAX);
        let cluster = ClusterServer::new(ClusterService::new(
            membership,
            reads,
            Header::new(self.ids, &self.raft),
            tracker.clone(),
        ));
        let maintenance = MaintenanceServer::new(MaintenanceService::new(MaintenanceParts {
            raft: self.raft.clone(),
            store: self.store.clone(),
            route: route.clone(),
            header: Header::new(self.ids, &self.raft),
            me: self.ids.member_id,
            timeout: request_timeout,
            quota: config.quota_backend_bytes(),
            proposer: proposer.clone(),
            tracker,
        }));

        for listener in listeners {
            // etcd allows any number of concurrent streams per connection
            // (--max-concurrent-streams defaults to 2^32-1); Go clients
            // multiplex everything on one connection.
            let router = Server::builder()
                .max_concurrent_streams(Some(u32::MAX))
                .add_service(GrpcCompat::new(kv.clone(), route.clone()))
                .add_service(GrpcCompat::new(watch.clone(), route.clone()))
                .add_service(GrpcCompat::new(lease.clone(), route.clone()))
                .add_service(GrpcCompat::new(lock.clone(), route.clone()))
                .add_service(GrpcCompat::new(election.clone(), route.clone()))
                .add_service(GrpcCompat::new(cluster.clone(), route.clone()))
                .add_service(GrpcCompat::new(maintenance.clone(), route.clone()));
            // Clients are served once this member has published itself,
            // as etcd's members are.
            self.servers.push(serve(
                router,
                listener,
                published.clone(),
                self.stop_serving.subscribe(),
            ));
        }
        Ok(())
    }

    /// The addresses the client listeners are bound to, in the order of
    /// `--listen-client-urls` (with port 0 resolved to the port the OS chose).
    pub fn client_addrs(&self) -> &[SocketAddr] {
        &self.client_addrs
    }

    /// The addresses the peer listeners are bound to, in the order of
    /// `--listen-peer-urls`.
    pub fn peer_addrs(&self) -> &[SocketAddr] {
        &self.peer_addrs
    }

    /// Resolves once this member has been removed from its cluster; it
    /// should then shut down, as etcd's members do. Never resolves for a
    /// member that stays.
    pub async fn removed(&self) {
        let Some(steward) = &self.steward else {
            return futures::future::pending().await;
        };
        let mut removed = steward.removed.clone();
        if removed.wait_for(|r| *r).await.is_err() {
            futures::future::pending::<()>().await;
        }
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
    /// Only then do the peer listeners close (the same way), so that Raft
    /// can still finish what those requests wait for. Raft stops, and the
    /// call returns once every handle on the storage is gone, so a new node
    /// may open the same data dir right away.
    pub async fn shutdown(self) {
        let Node {
            ids,
            raft,
            store,
            client_addrs: _,
            peer_addrs: _,
            stop_serving,
            servers,
            stop_peers,
            peer_servers,
            read_barrier,
            auto_compactor,
            backups,
            corruption,
            batcher,
            watch,
            lessor,
            steward,
            mut released,
        } = self;
        if let Some(task) = auto_compactor {
            task.abort();
        }
        if let Some(task) = backups {
            task.abort();
        }
        if let Some(task) = corruption {
            task.abort();
        }
        if let Some(steward) = steward {
            steward.task.abort();
        }
        if let Some(task) = lessor {
            task.abort();
        }
        // Watch streams never end on their own: end them, so that the
        // connections drain.
        if let Some((hub, _)) = &watch {
            hub.close();
        }
        // Clients first. The peer listeners stay up meanwhile: a request in
        // flight here may wait for this member to apply its entry, which
        // takes the leader's AppendEntries.
        let _ = stop_serving.send(true);
        drain(servers, "client").await;
        let _ = stop_peers.send(true);
        drain(peer_servers, "peer").await;
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

/// Waits up to [`DRAIN_TIMEOUT`] for `servers` to finish the requests
/// they have (their listeners already told to stop), then drops their
/// connections.
async fn drain(servers: Vec<Serving>, kind: &str) {
    for mut server in servers {
        match tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "{kind} server failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "{kind} server task failed"),
            Err(_) => {
                tracing::warn!(
                    "{kind} connections still busy after {DRAIN_TIMEOUT:?}; dropping them"
                );
                server.abort();
            }
        }
    }
}

/// Serves `router` on `listener` from the moment `ready` is true until the
/// node stops; connections wait in the backlog until then.
fn serve(
    router: Router,
    listener: TcpListener,
    mut ready: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) -> Serving {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(async move {
        tokio::select! {
            _ = ready.wait_for(|r| *r) => {}
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
        }
        router
            .serve_with_incoming_shutdown(incoming, async move {
                // An error means the node is gone: stop as well.
                let _ = stop.wait_for(|stop| *stop).await;
            })
            .await
    })
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
/// Returns the ids, the storage directory, and whether the member is new.
async fn identity(config: &Config) -> Result<(MemberIds, PathBuf, bool)> {
    let member_dir = config.data_dir().join("member");
    let store_dir = member_dir.join("store");
    if let Some(ids) = member::load(&member_dir)? {
        tracing::info!("data dir holds a member: ignoring the bootstrap flags");
        return Ok((ids, store_dir, false));
    }
    if store_dir.exists() {
        return Err(Error::MissingMemberFile(member::id_path(&member_dir)));
    }
    // Check the bootstrap flags before creating anything, so that a typo
    // leaves no half-made data dir behind.
    let ids = match config.initial_cluster_state {
        ClusterState::New => member::derive(config)?,
        ClusterState::Existing => joined_ids(config).await?,
    };
    std::fs::create_dir_all(&member_dir).map_err(|source| Error::DataDir {
        path: member_dir.clone(),
        source,
    })?;
    member::store(&member_dir, ids)?;
    Ok((ids, store_dir, true))
}

/// The ids of a member joining a running cluster: the cluster's members
/// (reached through the other peer URLs of `--initial-cluster`) know this
/// member by its peer URLs, since MemberAdd recorded them.
async fn joined_ids(config: &Config) -> Result<MemberIds> {
    let mine: Vec<String> = config
        .bootstrap_peer_urls()?
        .iter()
        .map(ToString::to_string)
        .collect();
    let cluster = config.initial_cluster();
    let others: Vec<String> = cluster
        .names()
        .into_iter()
        .filter(|name| *name != config.name)
        .flat_map(|name| cluster.peer_urls(name))
        .map(ToString::to_string)
        .collect();
    if others.is_empty() {
        return Err(Error::Join(
            "--initial-cluster-state=existing needs the other members in --initial-cluster".into(),
        ));
    }
    let timeout = BASE_REQUEST_TIMEOUT;
    let reply = peer::fetch_members(&others, timeout)
        .await
        .map_err(|e| Error::Join(format!("could not reach the cluster to join: {e}")))?;
    let found = reply.members.iter().find(|(_, m)| {
        let mut theirs = m.peer_urls.clone();
        theirs.sort_unstable();
        theirs == mine
    });
    match found {
        Some((id, _)) => Ok(MemberIds {
            member_id: *id,
            cluster_id: reply.cluster_id,
        }),
        None => Err(Error::Join(format!(
            "the cluster has no member with peer URLs {}; add it with MemberAdd first",
            mine.join(",")
        ))),
    }
}

/// This member as the membership config records it.
fn this_member(config: &Config) -> Member {
    let urls = |u: &[Url]| u.iter().map(ToString::to_string).collect::<Vec<_>>();
    let mut peer_urls = urls(&config.initial_advertise_peer_urls);
    peer_urls.sort_unstable();
    peer_urls.dedup();
    Member {
        name: config.name.clone(),
        peer_urls,
        client_urls: urls(&config.advertise_client_urls),
    }
}

/// openraft's configuration from etcd's flags.
fn raft_config(config: &Config) -> Result<openraft::Config> {
    let raft_config = openraft::Config {
        cluster_name: config.initial_cluster_token.clone(),
        heartbeat_interval: config.heartbeat_interval,
        election_timeout_min: config.election_timeout,
        election_timeout_max: config.election_timeout.saturating_mul(2),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_count()),
        // Entries kept after a snapshot, so a slightly lagging follower
        // catches up from the log rather than by a whole snapshot.
        max_in_snapshot_log_to_keep: config.experimental_snapshot_catchup_entries,
        ..openraft::Config::default()
    };
    Ok(raft_config.validate()?)
}

/// The term of the stored vote and the last log index, before openraft
/// starts (see [`Route::linearizable`]).
async fn restarted(log_store: &cairn_raft_storage::LogStore) -> Result<Restarted> {
    use openraft::storage::RaftLogStorage;
    let mut log = log_store.clone();
    let fatal = openraft::error::Fatal::StorageError;
    let vote = log.read_vote().await.map_err(fatal)?;
    let term = vote.map_or(0, |v| v.leader_id().get_term());
    let last_log = log.get_log_state().await.map_err(fatal)?.last_log_id;
    let last_index = last_log.map_or(0, |id| id.index);
    Ok(Restarted { term, last_index })
}

/// Creates the cluster of `--initial-cluster` on a fresh data dir. Every
/// member proposes the identical config, so they agree whichever starts
/// first.
async fn initialize(raft: &Raft, config: &Config) -> Result<()> {
    let members = member::initial_members(config);
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
