//! `spock.node` and `spock.local_node`: which node this database is.

use super::{broken, column};
use pgrx::prelude::*;

/// This node's id, or `None` before `node_create`.
pub fn local_id() -> Option<u32> {
    Spi::connect(|c| {
        c.select(
            "SELECT node_id::bigint AS node_id FROM spock.local_node",
            None,
            &[],
        )
        .unwrap_or_else(|e| broken("read the local node", e))
        .next()
        .and_then(|row| column::<i64>(&row, "node_id"))
        .map(|id| id as u32)
    })
}

/// This node's name, or `None` before `node_create`.
pub fn local_name() -> Option<String> {
    Spi::connect(|c| {
        c.select(
            "SELECT n.node_name::text AS node_name FROM spock.node n \
             JOIN spock.local_node l ON l.node_id = n.node_id",
            None,
            &[],
        )
        .unwrap_or_else(|e| broken("read the local node", e))
        .next()
        .and_then(|row| column::<String>(&row, "node_name"))
    })
}
