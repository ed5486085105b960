//! `spock.remove_node`: the node it runs on leaves the cluster. Every other node first applies
//! what this node committed so far (a sync event), then drops its subscriptions from this node
//! (their slots here and their origins, progress rows and the node row go with them); then this
//! node drops its own subscriptions (their slots on the others) and itself. The remaining nodes
//! keep replicating with each other and collecting tombstones (the dropped subscriptions'
//! progress no longer holds them back).

use super::{Conn, Failure, check_is_here, literal, raise_failure, say};
use pgrx::prelude::*;
use std::time::Duration;

const CHECKS: &str = "1 (checks)";
const DRAIN: &str = "2 (the others apply this node's last changes)";
const UNSUBSCRIBE: &str = "3 (the others drop their subscriptions from this node)";
const DROP: &str = "4 (this node drops its subscriptions and itself)";

pub fn run(name: &str, dsn: &str, verbose: bool) {
    if let Err(mut f) = remove(name, dsn, verbose) {
        f.message = crate::remote::scrub(&f.message, dsn);
        raise_failure("remove_node", f, None);
    }
}

fn remove(name: &str, dsn: &str, verbose: bool) -> Result<(), Failure> {
    let say = |text: &str| say(verbose, text);
    let here = Conn::open(name, dsn, CHECKS)?;
    check_is_here(&here, CHECKS, "target_node_dsn")?;
    let local = here.value(
        CHECKS,
        "SELECT n.node_name::text FROM spock.local_node l JOIN spock.node n ON n.node_id = l.node_id",
    )?;
    if local.as_deref() != Some(name) {
        return Err(Failure::new(
            CHECKS,
            match local {
                Some(l) => format!(
                    "this database is node \"{l}\", not \"{name}\": spock.remove_node must run on the node being removed"
                ),
                None => format!("node \"{name}\" not found: this database is not a spock node"),
            },
        )
        .code(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT));
    }
    // The other nodes: every node this one knows, not only those it still subscribes to (a
    // run after one that failed midway, its subscriptions partly dropped, must reach them all).
    // The interface a subscription of ours uses comes first, then the oldest.
    let peers: Vec<(String, String)> = here
        .rows(
            CHECKS,
            "SELECT DISTINCT ON (n.node_name) n.node_name::text, i.if_dsn FROM spock.node n \
             JOIN spock.node_interface i ON i.if_nodeid = n.node_id \
             WHERE n.node_id <> (SELECT node_id FROM spock.local_node) \
             ORDER BY n.node_name, NOT EXISTS (SELECT 1 FROM spock.subscription s \
             WHERE s.sub_origin_if = i.if_id), i.if_id",
            2,
        )?
        .into_iter()
        .filter_map(|r| Some((r[0].clone()?, r[1].clone()?)))
        .collect();
    let mut others = Vec::new();
    for (peer, peer_dsn) in &peers {
        match Conn::open(peer, peer_dsn, CHECKS) {
            Ok(c) => others.push(c),
            // A node that is gone cannot be asked; its subscriptions from here go with it.
            Err(f) => warning!(
                "spock.remove_node: {}; its subscription from node \"{name}\" stays there",
                crate::remote::scrub(&f.message, peer_dsn)
            ),
        }
    }

    // ---- 2: what this node committed reaches the others (those that subscribe to it)
    let lsn = here.sync_event(DRAIN)?;
    for other in &others {
        let subscribed = other.value(
            DRAIN,
            &format!(
                "SELECT 1::text FROM spock.subscription s JOIN spock.node n ON n.node_id = s.sub_origin \
                 WHERE n.node_name = {} AND s.sub_enabled",
                literal(name)
            ),
        )?;
        if subscribed.is_some() {
            other.wait_applied(DRAIN, name, &lsn, &[other], Duration::from_secs(60))?;
        }
    }

    // ---- 3: the others' subscriptions from this node
    for other in &others {
        let subs = other.rows(
            UNSUBSCRIBE,
            &format!(
                "SELECT s.sub_name::text FROM spock.subscription s \
                 JOIN spock.node n ON n.node_id = s.sub_origin WHERE n.node_name = {}",
                literal(name)
            ),
            1,
        )?;
        for sub in subs.into_iter().filter_map(|r| r[0].clone()) {
            other.run(UNSUBSCRIBE, &format!("spock.sub_drop({})", literal(&sub)))?;
            say(&format!(
                "remove_node: dropped subscription {sub} on node \"{}\"",
                other.name
            ));
        }
        // A node row kept by something else (an interface of ours) goes too.
        other.run(
            UNSUBSCRIBE,
            &format!(
                "spock.node_drop(n.node_name, true) FROM spock.node n \
                 WHERE n.node_name = {} AND NOT EXISTS (SELECT 1 FROM spock.subscription s \
                 WHERE s.sub_origin = n.node_id OR s.sub_target = n.node_id)",
                literal(name)
            ),
        )?;
    }

    // ---- 4: this node's subscriptions, then the node
    let subs = here.rows(
        DROP,
        "SELECT sub_name::text FROM spock.subscription ORDER BY sub_name",
        1,
    )?;
    for sub in subs.into_iter().filter_map(|r| r[0].clone()) {
        here.run(DROP, &format!("spock.sub_drop({})", literal(&sub)))?;
        say(&format!("remove_node: dropped subscription {sub}"));
    }
    here.run(DROP, &format!("spock.node_drop({})", literal(name)))?;
    info!(
        "node \"{name}\" removed from the cluster ({} node(s) remain)",
        others.len()
    );
    Ok(())
}
