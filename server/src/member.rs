//! This member's identity: its member id and its cluster's id.
//!
//! Both are derived once, when the member is created, and then read back
//! from `<data-dir>/member/id` on every restart, so a restart ignores the
//! bootstrap flags (`--initial-cluster`, `--initial-cluster-token`,
//! `--initial-advertise-peer-urls`) just as etcd does.
//!
//! The file is two lines of text, ids in hex as etcdctl prints them:
//!
//! ```text
//! member_id=8e9e05c52164694d
//! cluster_id=cdf818194e3a8c32
//! ```
//!
//! It is written before the storage is first opened. A data dir whose
//! storage exists without this file is refused: guessing the ids again from
//! flags that may have changed could give a member a second identity.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use cairn_raft_storage::{Member, NodeId};

use crate::config::{Config, Url};
use crate::error::{Error, Result};

/// File name of the identity file inside `<data-dir>/member`.
const ID_FILE: &str = "id";

/// The ids that go into every response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberIds {
    /// This member's id; also its openraft node id.
    pub member_id: NodeId,
    /// The id of the cluster this member was created in.
    pub cluster_id: u64,
}

impl fmt::Display for MemberIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "member_id={:x}\ncluster_id={:x}\n",
            self.member_id, self.cluster_id
        )
    }
}

/// FNV-1a, 64 bits: small, stable across versions and platforms, and good
/// enough to tell a handful of members apart.
fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// etcd treats id 0 as "none"; never hand it out.
fn nonzero(id: u64) -> u64 {
    if id == 0 {
        1
    } else {
        id
    }
}

/// The id of a member of `--initial-cluster`: every member computes every
/// other's the same way, from its name, its sorted peer URLs and the token.
fn initial_member_id(name: &str, peer_urls: &[&Url], token: &str) -> NodeId {
    let urls: Vec<String> = peer_urls.iter().map(ToString::to_string).collect();
    nonzero(fnv1a64(
        format!("{name}\n{}\n{token}", urls.join(",")).as_bytes(),
    ))
}

/// Derives the ids of a member being created in a new cluster.
///
/// The member id hashes the name, the sorted peer URLs and the cluster
/// token; the cluster id hashes the canonical `--initial-cluster` and the
/// token. Two clusters bootstrapped with different tokens get different ids
/// even on the same URLs.
///
/// # Errors
///
/// [`Error::Config`] when the bootstrap flags do not name this member.
pub(crate) fn derive(config: &Config) -> Result<MemberIds> {
    let peer_urls = config.bootstrap_peer_urls()?;
    let token = &config.initial_cluster_token;
    let urls: Vec<&Url> = peer_urls.iter().collect();
    let cluster = format!("{}\n{}", config.initial_cluster().canonical(), token);
    Ok(MemberIds {
        member_id: initial_member_id(&config.name, &urls, token),
        cluster_id: nonzero(fnv1a64(cluster.as_bytes())),
    })
}

/// Every member of `--initial-cluster`, by id, as the first membership
/// config records them. Client URLs are unknown until each member
/// publishes its own, so every member bootstraps the identical config.
pub(crate) fn initial_members(config: &Config) -> BTreeMap<NodeId, Member> {
    let cluster = config.initial_cluster();
    let token = &config.initial_cluster_token;
    cluster
        .names()
        .into_iter()
        .map(|name| {
            let urls = cluster.peer_urls(name);
            let member = Member {
                name: name.to_owned(),
                peer_urls: urls.iter().map(ToString::to_string).collect(),
                client_urls: Vec::new(),
            };
            (initial_member_id(name, &urls, token), member)
        })
        .collect()
}

/// The id of a member added at runtime (MemberAdd): its peer URLs, the
/// cluster and the leader's last log index, which no two additions share,
/// so an id is never handed out twice.
pub(crate) fn added_member_id(peer_urls: &[String], cluster_id: u64, log_index: u64) -> NodeId {
    let key = format!("{}\n{cluster_id:x}\n{log_index}", peer_urls.join(","));
    nonzero(fnv1a64(key.as_bytes()))
}

/// Path of the identity file in `member_dir`.
pub(crate) fn id_path(member_dir: &Path) -> PathBuf {
    member_dir.join(ID_FILE)
}

/// Reads the identity file, or `None` when there is none.
///
/// # Errors
///
/// [`Error::DataDir`] when it cannot be read, [`Error::MemberFile`] when it
/// does not hold two non-zero hex ids.
pub(crate) fn load(member_dir: &Path) -> Result<Option<MemberIds>> {
    let path = id_path(member_dir);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::DataDir { path, source }),
    };
    parse(&text)
        .map(Some)
        .map_err(|reason| Error::MemberFile { path, reason })
}

fn parse(text: &str) -> std::result::Result<MemberIds, &'static str> {
    let mut member_id = None;
    let mut cluster_id = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (key, value) = line.split_once('=').ok_or("a line is not key=value")?;
        let id = u64::from_str_radix(value.trim(), 16).map_err(|_| "an id is not hex")?;
        if id == 0 {
            return Err("an id is 0");
        }
        match key.trim() {
            "member_id" => member_id = Some(id),
            "cluster_id" => cluster_id = Some(id),
            _ => return Err("unknown key"),
        }
    }
    Ok(MemberIds {
        member_id: member_id.ok_or("member_id is missing")?,
        cluster_id: cluster_id.ok_or("cluster_id is missing")?,
    })
}

/// Writes the identity file so that it is either absent or complete after
/// a crash: a temporary file, fsync, rename, fsync of the directory.
///
/// # Errors
///
/// [`Error::DataDir`] on any IO failure.
pub(crate) fn store(member_dir: &Path, ids: MemberIds) -> Result<()> {
    let path = id_path(member_dir);
    let tmp = member_dir.join(format!("{ID_FILE}.tmp"));
    let io = |source| Error::DataDir {
        path: path.clone(),
        source,
    };
    {
        let mut file = fs::File::create(&tmp).map_err(io)?;
        file.write_all(ids.to_string().as_bytes()).map_err(io)?;
        // Durability: the ids must be on disk before the rename makes them
        // the member's identity.
        file.sync_all().map_err(io)?;
    }
    fs::rename(&tmp, &path).map_err(io)?;
    // Durability: the rename itself lives in the directory.
    fs::File::open(member_dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn ids_depend_on_token_and_urls() {
        let a = Config::default_for_tests("d");
        let mut b = a.clone();
        b.initial_cluster_token = "other".into();
        let mut c = a.clone();
        c.initial_advertise_peer_urls = vec!["http://127.0.0.1:2380".parse().expect("valid")];
        let ids = |c: &Config| derive(c).expect("single member derives");
        assert_eq!(ids(&a), ids(&a.clone()));
        assert_ne!(ids(&a).member_id, ids(&b).member_id);
        assert_ne!(ids(&a).cluster_id, ids(&b).cluster_id);
        assert_ne!(ids(&a).member_id, ids(&c).member_id);
    }

    #[test]
    fn parses_the_id_file() {
        let ok = MemberIds {
            member_id: 0x8e9e_05c5_2164_694d,
            cluster_id: 0xcdf8_1819_4e3a_8c32,
        };
        assert_eq!(parse(&ok.to_string()), Ok(ok));
        let cases: &[(&str, &str)] = &[
            ("member_id=1\n", "cluster_id is missing"),
            ("cluster_id=1\n", "member_id is missing"),
            ("member_id=zz\ncluster_id=1\n", "an id is not hex"),
            ("member_id=0\ncluster_id=1\n", "an id is 0"),
            ("member_id 1\n", "a line is not key=value"),
            ("name=1\n", "unknown key"),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Err(*want), "{text:?}");
        }
    }

    #[test]
    fn store_then_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()).expect("readable"), None);
        let ids = MemberIds {
            member_id: 7,
            cluster_id: 9,
        };
        store(dir.path(), ids).expect("writable");
        assert_eq!(load(dir.path()).expect("readable"), Some(ids));
    }
}
