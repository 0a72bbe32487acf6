//! Changes of zones, jobs and VMs, fanned out to `GET /v1/events` subscribers.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use utoipa::ToSchema;

/// One change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Increases by one per event of this daemon.
    pub seq: u64,
    /// `zone`, `job` or `vm`.
    pub kind: String,
    /// Zone or VM name, or job id.
    pub name: String,
    /// The new state (`deleted` when the object is gone).
    pub state: String,
    /// For jobs: the submitter (only they and admins see the event).
    pub owner_uid: Option<u32>,
    pub unix: f64,
}

/// The event bus.
#[derive(Debug)]
pub struct Events {
    tx: broadcast::Sender<Event>,
    seq: AtomicU64,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(1024).0,
            seq: AtomicU64::new(0),
        }
    }
}

impl Events {
    pub fn emit(&self, kind: &str, name: &str, state: &str, owner_uid: Option<u32>) {
        let ev = Event {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            kind: kind.into(),
            name: name.into(),
            state: state.into(),
            owner_uid,
            unix: crate::supervise::now_unix(),
        };
        // No subscriber is fine.
        let _ = self.tx.send(ev);
    }
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
