//! Deterministic simulation of a whole paxsql cluster.
//!
//! One thread runs N nodes (3, sometimes 5), each with a replica of one
//! group — or, in a sharded run (`--groups`), of a metadata group and data
//! groups whose ranges are split and moved under load — the **real**
//! [`paxsql_replica::Replica`]: OmniPaxos, the apply loop, the SQLite
//! engine, read barriers, request-id deduplication, the durable log format
//! of `crates/log` — and everything around them is simulated, driven by one
//! seeded random stream, so that a seed is a run and a failing seed replays
//! exactly.
//!
//! # What is real and what is simulated
//!
//! | real (production code) | simulated |
//! |---|---|
//! | `Replica` with `ReplicaConfig::new` settings (10 ms ticks), but compaction's small (per seed) | the clock: ticks, no wall time, no sleeps |
//! | `DurableStorage` (checksummed records, torn-tail cut at open) | the log's disk: `CrashFile`, which forgets unsynced bytes |
//! | `SqliteEngine` on a real SQLite file (WAL) | process crashes: the engine is dropped, its committed state stays (or the file is lost) |
//! | log compaction, snapshot transfer and install | a lost database file (the log kept) |
//! | OmniPaxos messages, `PeerMsg` forwarding and leader reads | the network: FIFO sessions per directed link, delays, loss of whole sessions, partitions |
//! | the client-facing `submit`/`Output::Reply` API | clients: timeouts, retries with the same request id |
//!
//! What is *not* covered: the tokio transport and HTTP layers of
//! `crates/node`/`crates/http` (their reconnect behaviour is modelled: both
//! ends of a new session are told), disk errors (the `CrashFile` can inject
//! them, this simulator does not yet), power loss of the SQLite file (only
//! process crashes: SQLite keeps what it committed, or the whole file is
//! lost), loss of the log, corrupted snapshot chunks, clock skew (there is
//! one clock), and reconfiguration. See the README for the whole list.
//!
//! # One tick
//!
//! 1. Partitions whose time is up heal; crashed nodes whose time has come
//!    restart (log and database reopened as `crates/node` does, new epoch).
//! 2. Sessions that can come back up do; both ends get `connected(peer)`.
//! 3. Messages due are delivered (`receive`), each link in order, links
//!    interleaved at random.
//! 4. Maybe a fault: a crash here loses what the deliveries wrote and no
//!    sync covered yet (plus, sometimes, a torn prefix of it survives); a
//!    crash waits up to 30 ticks for its node to have such bytes.
//! 5. Every live replica `tick`s.
//! 6. Clients time out, retry, and start new operations (`submit`).
//! 7. Every live replica `poll`s, in random order; its messages go to the
//!    network, its answers to the clients.
//! 8. The watchers look: election, log matching, sampled state hashes.
//!
//! A run creates the tables (no faults until then), runs `ticks` ticks of
//! load with faults, then heals everything, restarts every node, waits for
//! the cluster to settle, does a linearizable read of every key at every
//! node, and runs the final checks ([`checks`]).

pub mod checks;
mod client;
mod config;
mod faults;
mod heal;
pub mod history;
pub mod lincheck;
mod net;
mod node;
mod rng;
mod runner;
mod shard;
mod sim;
mod trace;

pub use config::{broken_name, parse_broken, Params, SimConfig};
pub use node::SimReplica;
pub use paxsql_replica::Broken;
pub use runner::{run_seeds, SeedResult};
pub use sim::{run, Report, Stats};
pub use trace::TraceLevel;
