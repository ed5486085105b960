//! Last-update-wins: which of two writes of the same row is the later one. A write is known by
//! its commit timestamp and the node it was made on; equal timestamps are broken by node id (the
//! lower id wins, as upstream's default tiebreaker), so every node picks the same winner.
//! Rows and tombstones (deleted rows) are compared the same way, which makes a DELETE take part
//! in last-update-wins like any other write.

use std::cmp::Ordering;

/// The version of a write: commit timestamp (µs since 2000-01-01) and originating node id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub ts: i64,
    pub node: u32,
}

impl Version {
    /// Orders writes: the later timestamp is newer; at equal timestamps the lower node id is.
    pub fn cmp_newer(&self, other: &Version) -> Ordering {
        self.ts
            .cmp(&other.ts)
            .then_with(|| other.node.cmp(&self.node))
    }
}

/// What the apply worker knows about the local copy of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// Written by the transaction being applied now (an earlier change of the same remote
    /// transaction): always overwritten.
    OwnTransaction,
    /// Written before commit timestamps were tracked (or frozen): no version, so older than
    /// any remote write.
    Unknown,
    Known(Version),
}

/// True when the remote write must replace the local state. A node's writes arrive in its
/// commit order, so a later one from the same node always replaces an earlier one — this also
/// covers rows of the initial copy, which carry the provider's origin and the snapshot's time
/// although changes committed around the snapshot may be stamped a little earlier.
pub fn remote_wins(remote: Version, local: Local) -> bool {
    match local {
        Local::OwnTransaction | Local::Unknown => true,
        Local::Known(v) if v.node == remote.node => true,
        Local::Known(v) => remote.cmp_newer(&v) == Ordering::Greater,
    }
}

/// Conflict kinds as upstream names them (spock.resolutions.conflict_type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    InsertExists,
    UpdateUpdate,
    /// The row to update is gone; the delete was newer (or older, and the row is revived).
    UpdateDelete,
    DeleteDelete,
    /// A remote DELETE met a newer local row.
    DeleteUpdate,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::InsertExists => "insert_exists",
            Kind::UpdateUpdate => "update_update",
            Kind::UpdateDelete => "update_delete",
            Kind::DeleteDelete => "delete_delete",
            Kind::DeleteUpdate => "delete_update",
        }
    }

    pub fn remote_op(self) -> &'static str {
        match self {
            Kind::InsertExists => "INSERT EXISTS",
            Kind::UpdateUpdate | Kind::UpdateDelete => "UPDATE",
            Kind::DeleteDelete | Kind::DeleteUpdate => "DELETE",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    ApplyRemote,
    KeepLocal,
    Skip,
}

impl Resolution {
    pub fn name(self) -> &'static str {
        match self {
            Resolution::ApplyRemote => "apply_remote",
            Resolution::KeepLocal => "keep_local",
            Resolution::Skip => "skip",
        }
    }
}

/// Whether a resolution is worth reporting: writes that came from the same node in order are
/// not conflicts (nor is a row this transaction wrote itself).
pub fn is_conflict(remote: Version, local: Local) -> bool {
    match local {
        Local::Known(v) => v.node != remote.node,
        Local::OwnTransaction | Local::Unknown => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(ts: i64, node: u32) -> Version {
        Version { ts, node }
    }

    #[test]
    fn later_timestamp_wins_whatever_the_node() {
        assert!(remote_wins(v(10, 9), Local::Known(v(9, 1))));
        assert!(!remote_wins(v(9, 1), Local::Known(v(10, 9))));
    }

    #[test]
    fn ties_go_to_the_lower_node_id_on_both_sides() {
        // Node 1's and node 2's writes at the same instant: node 1 wins on both nodes.
        assert!(remote_wins(v(5, 1), Local::Known(v(5, 2))));
        assert!(!remote_wins(v(5, 2), Local::Known(v(5, 1))));
    }

    #[test]
    fn own_and_unversioned_rows_are_overwritten() {
        assert!(remote_wins(v(0, 3), Local::OwnTransaction));
        assert!(remote_wins(v(0, 3), Local::Unknown));
        assert!(!is_conflict(v(0, 3), Local::Unknown));
        assert!(!is_conflict(v(7, 3), Local::Known(v(6, 3))));
        assert!(is_conflict(v(7, 3), Local::Known(v(6, 4))));
    }

    #[test]
    fn a_nodes_later_write_replaces_its_earlier_one() {
        // The initial copy is stamped with the snapshot's time; a change the provider committed
        // just before it still replaces the copied row.
        assert!(remote_wins(v(4, 1), Local::Known(v(5, 1))));
        assert!(!is_conflict(v(4, 1), Local::Known(v(5, 1))));
    }

    #[test]
    fn any_delivery_order_converges() {
        // A row's final state is the newest write, however the nodes' streams interleave.
        let writes = [v(3, 2), v(7, 1), v(7, 3), v(5, 4)];
        let newest = writes
            .iter()
            .copied()
            .max_by(|a, b| a.cmp_newer(b))
            .unwrap();
        for rotation in 0..writes.len() {
            let mut state: Option<Version> = None;
            for w in writes.iter().cycle().skip(rotation).take(writes.len()) {
                let local = state.map_or(Local::Unknown, Local::Known);
                if remote_wins(*w, local) {
                    state = Some(*w);
                }
            }
            assert_eq!(state, Some(newest));
        }
    }
}
