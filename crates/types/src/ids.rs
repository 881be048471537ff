use serde::{Deserialize, Serialize};
use std::fmt;

/// A node's id, 1.. (OmniPaxos reserves 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub u64);

/// A replication group (one OmniPaxos instance per node per group).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupId(pub u32);

/// A position in a group's log, counted as OmniPaxos counts: the number of
/// entries before it. `LogIndex(0)` means "nothing yet".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct LogIndex(pub u64);

/// The longest request id accepted, in bytes.
pub const REQUEST_ID_LEN_MAX: usize = 128;

/// A write request's id: chosen by the client for retries, or by the node
/// that received the request.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId(pub String);

impl RequestId {
    /// Validates a client-chosen id.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > REQUEST_ID_LEN_MAX {
            return Err(format!(
                "request id must be 1 to {REQUEST_ID_LEN_MAX} bytes, got {}",
                s.len()
            ));
        }
        Ok(RequestId(s.to_owned()))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
