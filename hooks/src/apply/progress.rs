//! How far each subscription has applied, in `spock.progress` (per provider node, upstream's)
//! and `spock.subscription_progress` (per subscription), saved a few times a second, not per
//! transaction; and the garbage collection of tombstones it allows: a tombstone can go
//! once every peer has sent a commit newer than the delete it stands for — a peer's commit
//! timestamps rise in stream order (kernel commit clock), so no write that could lose to the
//! tombstone can arrive any more. Idle peers still send a heartbeat now and then (the manager
//! writes a transactional logical message), so their progress moves too. Subscriptions that forward
//! other nodes' changes (cascades) stop the collection: forwarded timestamps are not ordered.

use crate::catalog;
use pgrx::bgworkers::BackgroundWorker;
use std::time::{Duration, Instant};

/// How often tombstones are collected.
const GC_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Progress {
    /// Commit timestamp up to which the provider's changes have all been applied.
    commit_ts: i64,
    lsn: u64,
    dirty: bool,
    last_gc: Option<Instant>,
}

impl Progress {
    pub fn applied(&mut self, commit_ts: i64, end_lsn: u64) {
        self.commit_ts = self.commit_ts.max(commit_ts);
        self.lsn = self.lsn.max(end_lsn);
        self.dirty = true;
    }

    /// Writes the progress row (between remote transactions) and now and then collects
    /// tombstones every subscription has moved past.
    pub fn save(&mut self, sub_id: u32, provider: u32, received: u64) {
        if !self.dirty || self.commit_ts == 0 {
            return;
        }
        self.dirty = false;
        let gc = self.last_gc.is_none_or(|t| t.elapsed() >= GC_INTERVAL);
        if gc {
            self.last_gc = Some(Instant::now());
        }
        let (ts, lsn) = (self.commit_ts, self.lsn);
        BackgroundWorker::transaction(|| {
            catalog::progress::applied(provider, ts, lsn, received);
            catalog::progress::subscription_applied(sub_id, ts);
            if gc {
                catalog::tombstones::collect();
            }
        });
    }
}
