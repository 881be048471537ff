//! The readable account of a run: what the network, the fault injector, the
//! clients and the replicas did, tick by tick. Collected only when asked
//! for (`--trace`), since formatting every message costs more than the run.

/// How much of a run to write down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum TraceLevel {
    /// Nothing.
    #[default]
    Off,
    /// Faults, sessions, crashes and restarts, client operations, leader
    /// changes, dropped messages.
    Events,
    /// Also every message sent and delivered (without heartbeats).
    Messages,
}

#[derive(Debug, Default)]
pub(crate) struct Trace {
    pub(crate) level: TraceLevel,
    pub(crate) lines: Vec<String>,
}

impl Trace {
    pub(crate) fn new(level: TraceLevel) -> Self {
        Trace {
            level,
            lines: Vec::new(),
        }
    }

    /// Records an event; the text is only built when events are traced.
    pub(crate) fn event(&mut self, tick: u64, text: impl FnOnce() -> String) {
        if self.level >= TraceLevel::Events {
            self.lines.push(format!("t={tick:>5} {}", text()));
        }
    }

    /// Records a message; the text is only built when messages are traced.
    pub(crate) fn message(&mut self, tick: u64, text: impl FnOnce() -> String) {
        if self.level >= TraceLevel::Messages {
            self.lines.push(format!("t={tick:>5}   {}", text()));
        }
    }

    pub(crate) fn events(&self) -> bool {
        self.level >= TraceLevel::Events
    }

    pub(crate) fn messages(&self) -> bool {
        self.level >= TraceLevel::Messages
    }
}
