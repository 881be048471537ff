//! A group's configuration on disk.
//!
//! The first configuration comes from `--peers`. Each membership change
//! starts the next one (a new OmniPaxos instance with a log of its own);
//! the group dir then holds `membership.json` — the configuration id, the
//! log index it starts at and every member's peer address — and the log
//! file of that configuration. The file is replaced atomically before the
//! new configuration's log is created, so a crash leaves either the old
//! configuration (whose decided StopSign starts the change again) or the
//! new one.

use paxsql_replica::Membership;
use paxsql_types::{LogIndex, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const FILE: &str = "membership.json";

/// A configuration as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMembership {
    /// The configuration's id (2 and up: the first is not stored).
    pub config_id: u32,
    /// The group log index its log starts at.
    pub base: u64,
    /// Every member's peer address.
    pub peers: BTreeMap<NodeId, String>,
}

impl StoredMembership {
    /// The stored form of a configuration announced by the replica; its
    /// StopSign carries the members' addresses ([`encode_peers`]).
    pub(crate) fn from_membership(m: &Membership) -> Result<Self, String> {
        let peers = decode_peers(&m.metadata)?;
        if m.nodes.iter().any(|n| !peers.contains_key(n)) {
            return Err(format!(
                "configuration {} names members {:?} but addresses for {:?}",
                m.config_id,
                m.nodes,
                peers.keys().collect::<Vec<_>>()
            ));
        }
        let peers = peers
            .into_iter()
            .filter(|(n, _)| m.nodes.contains(n))
            .collect();
        Ok(StoredMembership {
            config_id: m.config_id,
            base: m.base.0,
            peers,
        })
    }

    /// The replica's view of it.
    pub(crate) fn to_membership(&self) -> Membership {
        Membership {
            config_id: self.config_id,
            nodes: self.peers.keys().copied().collect(),
            base: LogIndex(self.base),
            metadata: encode_peers(&self.peers),
        }
    }
}

/// The members' addresses as a StopSign carries them.
pub(crate) fn encode_peers(peers: &BTreeMap<NodeId, String>) -> Vec<u8> {
    serde_json::to_vec(peers).expect("addresses encode")
}

fn decode_peers(bytes: &[u8]) -> Result<BTreeMap<NodeId, String>, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("member addresses unreadable: {e}"))
}

/// The configuration stored in a group dir, if a membership change
/// happened there.
pub fn load(group_dir: &Path) -> Result<Option<StoredMembership>, String> {
    let path = group_dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Replaces the stored configuration atomically and durably.
pub fn save(group_dir: &Path, m: &StoredMembership) -> std::io::Result<()> {
    std::fs::create_dir_all(group_dir)?;
    let tmp = group_dir.join(format!("{FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(m).expect("membership encodes");
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, group_dir.join(FILE))?;
    std::fs::File::open(group_dir)?.sync_all()
}

/// The log file of a configuration.
pub(crate) fn log_path(group_dir: &Path, config_id: u32) -> PathBuf {
    match config_id {
        0 | 1 => group_dir.join("paxos.log"),
        c => group_dir.join(format!("paxos-c{c}.log")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_survives_the_round_trip_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let peers: BTreeMap<NodeId, String> =
            [(NodeId(1), "a:1".into()), (NodeId(4), "b:2".into())]
                .into_iter()
                .collect();
        let m = Membership {
            config_id: 2,
            nodes: vec![NodeId(1), NodeId(4)],
            base: LogIndex(7),
            metadata: encode_peers(&peers),
        };
        let stored = StoredMembership::from_membership(&m).unwrap();
        save(dir.path(), &stored).unwrap();
        let back = load(dir.path()).unwrap().unwrap();
        assert_eq!(back, stored);
        assert_eq!(back.to_membership(), m);
    }

    #[test]
    fn a_member_without_an_address_is_refused() {
        let m = Membership {
            config_id: 2,
            nodes: vec![NodeId(1), NodeId(4)],
            base: LogIndex(7),
            metadata: encode_peers(&[(NodeId(1), "a:1".to_string())].into_iter().collect()),
        };
        assert!(StoredMembership::from_membership(&m).is_err());
    }
}
