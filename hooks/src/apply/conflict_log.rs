//! How many conflicts a worker reports one by one. A conflict storm (every node rewriting the
//! same keys) resolves thousands of conflicts a second; a LOG line each would bury the server
//! log and slow the worker down. Up to `limit` conflicts per window are reported in detail at
//! `spock.conflict_log_level`; the rest are counted by kind and summed up in one LOG line when
//! the window ends (their details go to DEBUG1, and to `spock.resolutions` when
//! `spock.save_resolutions` is on). `spock.get_channel_stats()` counts every one.

use super::conflict::Kind;
use std::time::{Duration, Instant};

/// The length of a reporting window.
pub const WINDOW: Duration = Duration::from_secs(10);

const KINDS: [Kind; 5] = [
    Kind::InsertExists,
    Kind::UpdateUpdate,
    Kind::UpdateDelete,
    Kind::DeleteDelete,
    Kind::DeleteUpdate,
];

#[derive(Default)]
pub struct Budget {
    started: Option<Instant>,
    reported: u32,
    /// Conflicts of the current window not reported in detail, per kind (`KINDS` order).
    suppressed: [u64; 5],
}

impl Budget {
    /// Whether a conflict of `kind` at `now` is reported in detail (`limit` < 0: all are).
    pub fn admit(&mut self, kind: Kind, now: Instant, limit: i32) -> bool {
        if self.started.is_none_or(|s| now.duration_since(s) >= WINDOW) && self.total() == 0 {
            self.started = Some(now);
            self.reported = 0;
        }
        if limit < 0 || self.reported < limit as u32 {
            self.reported += 1;
            return true;
        }
        let i = KINDS.iter().position(|k| *k == kind).unwrap_or(0);
        self.suppressed[i] += 1;
        false
    }

    /// The summary of a finished window that had conflicts not reported in detail (then a new
    /// window starts).
    pub fn summary(&mut self, now: Instant) -> Option<String> {
        let started = self.started?;
        let total = self.total();
        if total == 0 || now.duration_since(started) < WINDOW {
            return None;
        }
        let kinds: Vec<String> = KINDS
            .iter()
            .zip(self.suppressed)
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect();
        let text = format!(
            "{total} more conflicts resolved in the last {} s were not reported one by one ({}); \
             raise spock.conflict_log_limit to see each, or turn on spock.save_resolutions",
            now.duration_since(started).as_secs(),
            kinds.join(", ")
        );
        *self = Budget {
            started: Some(now),
            ..Budget::default()
        };
        Some(text)
    }

    fn total(&self) -> u64 {
        self.suppressed.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_is_reported_up_to_the_limit_then_summed_up() {
        let mut b = Budget::default();
        let t0 = Instant::now();
        let admitted = (0..1000)
            .filter(|i| {
                let kind = if i % 2 == 0 {
                    Kind::UpdateUpdate
                } else {
                    Kind::InsertExists
                };
                b.admit(kind, t0, 100)
            })
            .count();
        assert_eq!(admitted, 100);
        assert_eq!(
            b.summary(t0 + Duration::from_secs(1)),
            None,
            "window not over"
        );
        let text = b.summary(t0 + WINDOW).expect("a summary");
        assert!(text.starts_with("900 more conflicts"), "{text}");
        assert!(
            text.contains("insert_exists 450, update_update 450"),
            "{text}"
        );
        // A new window reports in detail again, and has nothing to sum up.
        assert!(b.admit(Kind::DeleteDelete, t0 + WINDOW, 100));
        assert_eq!(b.summary(t0 + WINDOW * 2), None);
    }

    #[test]
    fn a_negative_limit_reports_everything() {
        let mut b = Budget::default();
        let t0 = Instant::now();
        assert!((0..10_000).all(|_| b.admit(Kind::UpdateUpdate, t0, -1)));
        assert_eq!(b.summary(t0 + WINDOW), None);
    }

    #[test]
    fn quiet_periods_start_a_fresh_window() {
        let mut b = Budget::default();
        let t0 = Instant::now();
        assert!(b.admit(Kind::UpdateUpdate, t0, 1));
        assert!(!b.admit(Kind::UpdateUpdate, t0, 1));
        // The summary is due before the next detail: the worker asks for it on its timer.
        assert!(b.summary(t0 + WINDOW).is_some());
        assert!(b.admit(Kind::UpdateUpdate, t0 + WINDOW * 3, 1));
    }
}
