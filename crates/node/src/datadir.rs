//! A data dir belongs to one node of one cluster. The first start writes
//! `node.json` there; later starts refuse a dir written by another node id,
//! cluster or membership, so two nodes can never share (and corrupt) a log.

use paxsql_types::NodeId;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const IDENTITY_FILE: &str = "node.json";

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    node_id: u64,
    cluster: String,
    members: Vec<u64>,
}

impl Identity {
    fn describe(&self) -> String {
        format!(
            "node {} of cluster {:?} with members {:?}",
            self.node_id, self.cluster, self.members
        )
    }
}

/// Why a data dir cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Creating or reading the dir failed.
    #[error("data dir {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The identity file is unreadable.
    #[error(
        "data dir {path}: {IDENTITY_FILE} is damaged ({reason}); restore it or use another dir"
    )]
    Damaged {
        /// The dir.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The dir belongs to another node or cluster.
    #[error("data dir {path} belongs to {found}, not {wanted}; use another --data-dir")]
    Foreign {
        /// The dir.
        path: PathBuf,
        /// Who owns it.
        found: String,
        /// Who asked.
        wanted: String,
    },
}

/// Creates the dir if missing and checks (or writes) its identity.
pub(crate) fn claim(
    dir: &Path,
    node: NodeId,
    cluster: &str,
    members: &[NodeId],
) -> Result<(), DataDirError> {
    let io = |source| DataDirError::Io {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let want = Identity {
        node_id: node.0,
        cluster: cluster.to_owned(),
        members: members.iter().map(|m| m.0).collect(),
    };
    let file = dir.join(IDENTITY_FILE);
    match std::fs::read(&file) {
        Ok(bytes) => {
            let found: Identity =
                serde_json::from_slice(&bytes).map_err(|e| DataDirError::Damaged {
                    path: dir.to_owned(),
                    reason: e.to_string(),
                })?;
            if found != want {
                return Err(DataDirError::Foreign {
                    path: dir.to_owned(),
                    found: found.describe(),
                    wanted: want.describe(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
            let bytes = serde_json::to_vec_pretty(&want).expect("identity encodes");
            std::fs::write(&tmp, bytes).map_err(io)?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io)?;
            std::fs::rename(&tmp, &file).map_err(io)?;
            Ok(())
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dir_is_claimed_once_and_refused_to_another_node() {
        let dir = tempfile::tempdir().unwrap();
        let members = [NodeId(1), NodeId(2), NodeId(3)];
        claim(dir.path(), NodeId(1), "c", &members).unwrap();
        claim(dir.path(), NodeId(1), "c", &members).unwrap();
        let err = claim(dir.path(), NodeId(2), "c", &members).unwrap_err();
        assert!(err.to_string().contains("belongs to node 1"), "{err}");
        let err = claim(dir.path(), NodeId(1), "other", &members).unwrap_err();
        assert!(matches!(err, DataDirError::Foreign { .. }));
    }
}
