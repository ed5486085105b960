//! How far each subscription has applied, in `spock.progress` (per provider node, upstream's)
//! and `spock.subscription_progress` (per subscription), saved a few times a second, not per
//! transaction; and the garbage collection of tombstones it allows: a tombstone can go
//! once every peer has sent a commit newer than the delete it stands for — a peer's commit
//! timestamps rise in stream order (kernel commit clock), so no write that could lose to the
//! tombstone can arrive any more. Idle peers still send a heartbeat now and then (the manager
//! writes a transactional logical message), so their progress moves too. Subscriptions that forward
//! other nodes' changes (cascades) stop the collection: forwarded timestamps are not ordered.

use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
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
            Spi::run_with_args(
                "INSERT INTO spock.progress (node_id, remote_node_id, remote_commit_ts, remote_lsn, \
                 remote_insert_lsn, last_updated_ts, updated_by_decode) \
                 SELECT l.node_id, $1::oid, \
                 timestamptz '2000-01-01 00:00:00+00' + $2::bigint * interval '1 microsecond', \
                 $3::text::pg_lsn, $4::text::pg_lsn, now(), false FROM spock.local_node l \
                 ON CONFLICT (node_id, remote_node_id) DO UPDATE SET \
                 remote_commit_ts = EXCLUDED.remote_commit_ts, \
                 remote_lsn = greatest(spock.progress.remote_lsn, EXCLUDED.remote_lsn), \
                 remote_insert_lsn = EXCLUDED.remote_insert_lsn, last_updated_ts = now()",
                &[
                    pgrx::pg_sys::Oid::from(provider).into(),
                    ts.into(),
                    super::exceptions::format_lsn(lsn).into(),
                    super::exceptions::format_lsn(received).into(),
                ],
            )
            .unwrap_or_else(|e| error!("cannot save the replication progress: {e}"));
            Spi::run_with_args(
                "INSERT INTO spock.subscription_progress (sub_id, commit_ts) \
                 VALUES ($1, timestamptz '2000-01-01 00:00:00+00' + $2::bigint * interval '1 microsecond') \
                 ON CONFLICT (sub_id) DO UPDATE SET commit_ts = EXCLUDED.commit_ts",
                &[pgrx::pg_sys::Oid::from(sub_id).into(), ts.into()],
            )
            .unwrap_or_else(|e| error!("cannot save the replication progress: {e}"));
            if gc {
                // Only when every subscription of this node has a progress row; the slowest
                // one (each subscription's own, not its provider's) sets the horizon.
                Spi::run(
                    "DELETE FROM spock.tombstones t USING ( \
                       SELECT min(p.commit_ts) AS horizon, \
                       count(p.*) = count(*) AND NOT EXISTS (SELECT 1 FROM spock.subscription f \
                         WHERE 'all' = ANY (f.sub_forward_origins)) AS complete \
                       FROM spock.subscription s JOIN spock.local_node l ON l.node_id = s.sub_target \
                       LEFT JOIN spock.subscription_progress p ON p.sub_id = s.sub_id) h \
                     WHERE h.complete AND pg_catalog.pg_xact_commit_timestamp(t.xmin) < h.horizon",
                )
                .unwrap_or_else(|e| error!("cannot collect tombstones: {e}"));
            }
        });
    }
}
