//! `spock.add_node`: a new node joins a running mesh while every node keeps taking writes, in
//! an order that cannot lose a row:
//!
//! 1. checks, nothing created yet;
//! 2. the local node; for every other node `nk` but the source a disabled subscription
//!    `nk → new` and its slot on `nk`, created now, so `nk` keeps every change from here on;
//!    then a sync event on each `nk` that the source must apply, so the source's copy below
//!    holds every change of `nk` from before the slot;
//! 3. the source's structure and data, copied by the subscription `source → new` under one
//!    snapshot, with the exact position of each of the source's origins at that snapshot (see
//!    `apply/sync.rs`), its tombstones and the rows' own versions;
//! 4. the source's replication-set memberships; each `nk → new` origin advanced to where the
//!    copy holds `nk`'s changes up to, the subscriptions enabled, and waited for;
//! 5. every old node subscribes to the new one.
//!
//! Whatever was created is undone, in reverse, when a step fails (or the call is cancelled);
//! the error names the step.

use super::{
    Conn, DSN_VALUE, Failure, check_is_here, literal, local_value, raise_failure, say, sub_name,
    wait,
};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::time::Duration;

/// The procedure's arguments.
pub struct Request {
    pub src_name: String,
    pub src_dsn: String,
    pub new_name: String,
    pub new_dsn: String,
    pub verbose: bool,
    pub location: Option<String>,
    pub country: Option<String>,
    pub info: Option<String>,
}

/// Something created on the way, undone on failure.
#[derive(Clone)]
enum Created {
    /// The local node.
    Node { name: String },
    /// A subscription, on the node reached through `dsn`.
    Subscription {
        node: String,
        dsn: String,
        sub: String,
    },
    /// A slot on a provider node.
    Slot {
        node: String,
        dsn: String,
        slot: String,
    },
    /// The objects the structure copy restored here: schemas and relations (by OID) absent
    /// before.
    Structure {
        schemas_before: Vec<String>,
        relations_before: Vec<String>,
    },
}

/// How long the waits of one add may take before they count as failed.
const CATCH_UP: Duration = Duration::from_secs(600);

/// The step names in error messages.
const CHECKS: &str = "1 (checks)";
const CREATE: &str = "2 (node and slots)";
const COPY: &str = "3 (copy from the source)";
const ENABLE: &str = "4 (catch up with the other nodes)";
const SUBSCRIBE: &str = "5 (subscribe the other nodes to the new one)";

pub fn run(req: Request) {
    let created: RefCell<Vec<Created>> = RefCell::new(Vec::new());
    let dsns = RefCell::new(vec![req.src_dsn.clone(), req.new_dsn.clone()]);
    // Errors raised inside (a cancel, a local error) unwind through here: undo, then go on
    // with the error.
    let caught = std::panic::AssertUnwindSafe(&created);
    let outcome = PgTryBuilder::new(std::panic::AssertUnwindSafe(|| add(&req, &created, &dsns)))
        .catch_others(move |e: CaughtError| {
            let undo = undo(&caught.borrow());
            if !undo.is_empty() {
                warning!("spock.add_node was interrupted; {}", undo.join("; "));
            }
            e.rethrow()
        })
        .execute();
    if let Err(mut f) = outcome {
        let undo = undo(&created.borrow());
        for dsn in dsns.borrow().iter() {
            f.message = crate::remote::scrub(&f.message, dsn);
        }
        let detail = (!undo.is_empty()).then(|| undo.join("; "));
        raise_failure("add_node", f, detail);
    }
}

fn add(
    req: &Request,
    created: &RefCell<Vec<Created>>,
    dsns: &RefCell<Vec<String>>,
) -> Result<(), Failure> {
    // Verbose lines carry the time since the call started, so a DBA sees where it goes.
    let started = std::time::Instant::now();
    let say = |text: &str| {
        say(
            req.verbose,
            &format!("{text} [{:.1} s]", started.elapsed().as_secs_f64()),
        )
    };
    // ---- 1: checks
    let here = Conn::open(&req.new_name, &req.new_dsn, CHECKS)?;
    check_is_here(&here, CHECKS, "new_node_dsn")?;
    if let Some(local) = here.value(
        CHECKS,
        "SELECT n.node_name::text FROM spock.local_node l JOIN spock.node n ON n.node_id = l.node_id",
    )? {
        return Err(Failure::new(
            CHECKS,
            format!("this database is already spock node \"{local}\""),
        )
        .code(PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT));
    }
    let src = Conn::open(&req.src_name, &req.src_dsn, CHECKS)?;
    match src.value(
        CHECKS,
        "SELECT n.node_name::text FROM spock.local_node l JOIN spock.node n ON n.node_id = l.node_id",
    )? {
        Some(name) if name == req.src_name => {}
        found => {
            return Err(Failure::new(
                CHECKS,
                format!(
                    "source node \"{}\" not found: src_dsn reaches {}",
                    req.src_name,
                    found.map_or("a database that is no spock node".into(), |n| format!(
                        "node \"{n}\""
                    ))
                ),
            )
            .code(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT));
        }
    }
    let new_id = crate::naming::node_id(&req.new_name);
    if let Some(clash) = src.value(
        CHECKS,
        &format!(
            "SELECT node_name::text FROM spock.node WHERE node_name = {} OR node_id = {new_id}",
            literal(&req.new_name)
        ),
    )? {
        let message = if clash == req.new_name {
            format!("node \"{clash}\" already exists in the cluster")
        } else {
            format!(
                "node id {new_id} of \"{}\" is already used by node \"{clash}\"",
                req.new_name
            )
        };
        return Err(Failure::new(CHECKS, message).code(PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT));
    }
    let tables = local_value(
        "SELECT string_agg(format('%I.%I', n.nspname, c.relname), ', ' ORDER BY 1) \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'spock') \
           AND n.nspname !~ '^pg_' \
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
                           WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                             AND d.objid = c.oid AND d.deptype = 'e')",
        &[],
    );
    if let Some(tables) = tables {
        return Err(Failure::new(
            CHECKS,
            format!(
                "the database of new node \"{}\" already has tables ({tables}); add_node copies them from the source into an empty database",
                req.new_name
            ),
        ));
    }
    // The other nodes, as the source knows them (it subscribes to each).
    let peers: Vec<(String, String)> = src
        .rows(
            CHECKS,
            "SELECT DISTINCT ON (n.node_name) n.node_name::text, i.if_dsn FROM spock.subscription s \
             JOIN spock.local_node l ON l.node_id = s.sub_target \
             JOIN spock.node n ON n.node_id = s.sub_origin \
             JOIN spock.node_interface i ON i.if_id = s.sub_origin_if ORDER BY n.node_name",
            2,
        )?
        .into_iter()
        .filter_map(|r| Some((r[0].clone()?, r[1].clone()?)))
        .collect();
    dsns.borrow_mut()
        .extend(peers.iter().map(|(_, d)| d.clone()));
    let mut others = Vec::new();
    for (name, dsn) in &peers {
        others.push(Conn::open(name, dsn, CHECKS)?);
    }
    let version = crate::SPOCK_VERSION;
    for node in std::iter::once(&src).chain(&others) {
        let theirs = node.value(CHECKS, "SELECT spock.spock_version()")?;
        if theirs.as_deref() != Some(version) {
            return Err(Failure::new(
                CHECKS,
                format!(
                    "node \"{}\" runs spock {}, this node {version}",
                    node.name,
                    theirs.unwrap_or_default()
                ),
            ));
        }
        if let Some(disabled) = node.value(
            CHECKS,
            "SELECT string_agg(sub_name::text, ', ' ORDER BY sub_name) FROM spock.subscription \
             WHERE NOT sub_enabled",
        )? {
            return Err(Failure::new(
                CHECKS,
                format!(
                    "subscription(s) {disabled} on node \"{}\" are disabled; every subscription of the cluster must be enabled",
                    node.name
                ),
            ));
        }
    }
    let owners = src.rows(
        CHECKS,
        "SELECT DISTINCT pg_catalog.pg_get_userbyid(c.relowner)::text \
         FROM spock.replication_set_table t JOIN pg_catalog.pg_class c ON c.oid = t.set_reloid",
        1,
    )?;
    for owner in owners.into_iter().filter_map(|r| r[0].clone()) {
        let exists = local_value(
            "SELECT 1::text FROM pg_catalog.pg_roles WHERE rolname = $1",
            &[owner.as_str().into()],
        )
        .is_some();
        if !exists {
            return Err(Failure::new(
                CHECKS,
                format!(
                    "role \"{owner}\" owns replicated tables on node \"{}\" but does not exist here",
                    req.src_name
                ),
            )
            .code(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT));
        }
    }
    let schemas_before: Vec<String> = here
        .rows(
            CHECKS,
            "SELECT nspname::text FROM pg_catalog.pg_namespace",
            1,
        )?
        .into_iter()
        .filter_map(|r| r[0].clone())
        .collect();
    // Views, sequences and foreign tables may exist here already (only tables may not); an
    // undo drops only the relations the copy brought.
    let relations_before: Vec<String> = here
        .rows(
            CHECKS,
            "SELECT oid::text FROM pg_catalog.pg_class WHERE relkind IN ('r', 'p', 'v', 'm', 'S', 'f')",
            1,
        )?
        .into_iter()
        .filter_map(|r| r[0].clone())
        .collect();
    say(&format!(
        "add_node: source \"{}\", {} other node(s): {}",
        req.src_name,
        others.len(),
        others
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));

    // ---- 2: node, disabled subscriptions and their slots
    here.run_with_dsn(
        CREATE,
        &format!(
            "spock.node_create({}, {DSN_VALUE}, {}, {}, {}::jsonb)",
            literal(&req.new_name),
            req.location.as_deref().map_or("NULL".into(), literal),
            req.country.as_deref().map_or("NULL".into(), literal),
            req.info.as_deref().map_or("NULL".into(), literal),
        ),
        &req.new_dsn,
    )?;
    created.borrow_mut().push(Created::Node {
        name: req.new_name.clone(),
    });
    let mut slots = Vec::new();
    for peer in &others {
        let sub = sub_name(&peer.name, &req.new_name);
        // A slot of this name is a leftover of an earlier attempt for this node name.
        let slot = here
            .value(
                CREATE,
                &format!(
                    "SELECT spock.spock_gen_slot_name(current_database(), {}, {})::text",
                    literal(&peer.name),
                    literal(&sub)
                ),
            )?
            .unwrap_or_default();
        drop_stale_slot(peer, &slot, &say)?;
        // The sets and forwarded origins the source takes from this node.
        let sets = subscription_args(&src, CREATE, &peer.name)?;
        here.run_with_dsn(
            CREATE,
            &format!(
                "spock.sub_create({}, {DSN_VALUE}, enabled := false{sets})",
                literal(&sub)
            ),
            &peer.dsn,
        )?;
        created.borrow_mut().push(Created::Subscription {
            node: req.new_name.clone(),
            dsn: req.new_dsn.clone(),
            sub: sub.clone(),
        });
        peer.value(
            CREATE,
            &format!(
                "SELECT lsn::text FROM pg_catalog.pg_create_logical_replication_slot({}, 'spock_output')",
                literal(&slot)
            ),
        )?;
        created.borrow_mut().push(Created::Slot {
            node: peer.name.clone(),
            dsn: peer.dsn.clone(),
            slot: slot.clone(),
        });
        say(&format!(
            "add_node: slot {slot} created on node \"{}\"",
            peer.name
        ));
        slots.push((sub, slot));
    }
    // The source must hold every change of each node from before that node's slot (the
    // events are all sent first, so the waits overlap).
    let events = others
        .iter()
        .map(|peer| peer.sync_event(CREATE))
        .collect::<Result<Vec<_>, _>>()?;
    for (peer, lsn) in others.iter().zip(&events) {
        src.wait_applied(CREATE, &peer.name, lsn, &[peer, &src], CATCH_UP)?;
    }
    say("add_node: the source holds every change of the other nodes from before their slots");

    // ---- 3: structure and data from the source
    let src_sub = sub_name(&req.src_name, &req.new_name);
    let src_slot = here
        .value(
            COPY,
            &format!(
                "SELECT spock.spock_gen_slot_name(current_database(), {}, {})::text",
                literal(&req.src_name),
                literal(&src_sub)
            ),
        )?
        .unwrap_or_default();
    drop_stale_slot(&src, &src_slot, &say)?;
    created.borrow_mut().push(Created::Structure {
        schemas_before: schemas_before.clone(),
        relations_before,
    });
    // The new node takes from the source what the other nodes take from it.
    let src_sets = match others.first() {
        Some(peer) => subscription_args(peer, COPY, &req.src_name)?,
        None => String::new(),
    };
    here.run_with_dsn(
        COPY,
        &format!(
            "spock.sub_create({}, {DSN_VALUE}, synchronize_structure := true, synchronize_data := true{src_sets})",
            literal(&src_sub)
        ),
        &req.src_dsn,
    )?;
    created.borrow_mut().push(Created::Subscription {
        node: req.new_name.clone(),
        dsn: req.new_dsn.clone(),
        sub: src_sub.clone(),
    });
    created.borrow_mut().push(Created::Slot {
        node: req.src_name.clone(),
        dsn: req.src_dsn.clone(),
        slot: src_slot,
    });
    say("add_node: copying structure and data from the source");
    let ready = format!(
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM spock.local_sync_status y JOIN spock.subscription s \
             ON s.sub_id = y.sync_subid WHERE s.sub_name = {0} AND y.sync_status = 'e') THEN 'failed' \
           WHEN (SELECT y.sync_status FROM spock.local_sync_status y JOIN spock.subscription s \
             ON s.sub_id = y.sync_subid WHERE s.sub_name = {0} AND y.sync_nspname IS NULL) = 'r' \
           THEN 'ready' ELSE 'copying' END",
        literal(&src_sub)
    );
    wait(COPY, Duration::from_secs(24 * 3600), &[&src], || match here
        .value(COPY, &ready)?
        .as_deref()
    {
        Some("ready") => Ok(true),
        Some("failed") => Err(Failure::new(
            COPY,
            format!(
                "a table could not be copied (see spock.exception_log on node \"{}\")",
                req.new_name
            ),
        )),
        _ => Ok(false),
    })
    .map_err(|f| f.unwrap_or_else(|| Failure::new(COPY, "the copy did not finish")))?;

    say("add_node: copy finished");

    // ---- 4: memberships, then the other nodes' streams from where the copy ends
    copy_memberships(&src, &here)?;
    for (peer, (sub, slot)) in others.iter().zip(&slots) {
        let position = here
            .value(
                ENABLE,
                &format!(
                    "SELECT p.remote_lsn::text FROM spock.progress p \
                     JOIN spock.local_node l ON l.node_id = p.node_id \
                     JOIN spock.node n ON n.node_id = p.remote_node_id \
                     WHERE n.node_name = {} AND p.remote_lsn <> '0/0'",
                    literal(&peer.name)
                ),
            )?
            .ok_or_else(|| {
                Failure::new(
                    ENABLE,
                    format!(
                        "the copy from node \"{}\" recorded no position for node \"{}\"",
                        req.src_name, peer.name
                    ),
                )
            })?;
        here.run(
            ENABLE,
            &format!(
                "pg_catalog.pg_replication_origin_advance({}, {}::pg_lsn)",
                literal(slot),
                literal(&position)
            ),
        )?;
        here.run(ENABLE, &format!("spock.sub_enable({})", literal(sub)))?;
        say(&format!(
            "add_node: subscription {sub} enabled, streaming node \"{}\"'s changes after {position}",
            peer.name
        ));
    }
    let old_nodes: Vec<&Conn> = std::iter::once(&src).chain(&others).collect();
    let events = old_nodes
        .iter()
        .map(|node| node.sync_event(ENABLE))
        .collect::<Result<Vec<_>, _>>()?;
    for (node, lsn) in old_nodes.iter().zip(&events) {
        here.wait_applied(ENABLE, &node.name, lsn, &[node, &here], CATCH_UP)?;
    }
    say("add_node: caught up with every node");

    // ---- 5: the old nodes subscribe to the new one (all created, then waited for)
    let mut subscribed = Vec::new();
    for &node in &old_nodes {
        let sub = sub_name(&req.new_name, &node.name);
        // Each node takes from the new one what it takes from the source (the source: what
        // the new node takes from it).
        let sets = if node.name == req.src_name {
            src_sets.clone()
        } else {
            subscription_args(node, SUBSCRIBE, &req.src_name)?
        };
        node.run_with_dsn(
            SUBSCRIBE,
            &format!("spock.sub_create({}, {DSN_VALUE}{sets})", literal(&sub)),
            &req.new_dsn,
        )?;
        created.borrow_mut().push(Created::Subscription {
            node: node.name.clone(),
            dsn: node.dsn.clone(),
            sub: sub.clone(),
        });
        let slot = node
            .value(
                SUBSCRIBE,
                &format!(
                    "SELECT sub_slot_name::text FROM spock.subscription WHERE sub_name = {}",
                    literal(&sub)
                ),
            )?
            .unwrap_or_default();
        subscribed.push((node, sub, slot));
    }
    for &(node, ref sub, ref slot) in &subscribed {
        // Its apply worker creates the slot here; changes of this node from then on reach it.
        wait(SUBSCRIBE, CATCH_UP, &[node], || {
            Ok(here
                .value(
                    SUBSCRIBE,
                    &format!(
                        "SELECT 1::text FROM pg_catalog.pg_replication_slots WHERE slot_name = {}",
                        literal(slot)
                    ),
                )?
                .is_some())
        })
        .map_err(|f| {
            f.unwrap_or_else(|| {
                Failure::new(
                    SUBSCRIBE,
                    format!(
                        "node \"{}\" did not start its subscription {sub}",
                        node.name
                    ),
                )
            })
        })?;
        say(&format!(
            "add_node: node \"{}\" subscribes to the new node",
            node.name
        ));
    }
    let lsn = here.sync_event(SUBSCRIBE)?;
    for node in &old_nodes {
        node.wait_applied(SUBSCRIBE, &req.new_name, &lsn, &[node, &here], CATCH_UP)?;
    }
    say("add_node: every node applies the new node's changes");
    let lag = here
        .value(
            SUBSCRIBE,
            "SELECT string_agg(format('%s: %s bytes, %s', origin_name, replication_lag_bytes, \
             replication_lag), '; ' ORDER BY origin_name) FROM spock.lag_tracker",
        )?
        .unwrap_or_default();
    info!(
        "node \"{}\" added to the cluster from source \"{}\" ({} node(s) now); lag: {lag}",
        req.new_name,
        req.src_name,
        others.len() + 2
    );
    created.borrow_mut().clear();
    Ok(())
}

/// The `replication_sets` and `forward_origins` arguments (with a leading comma) of
/// `node`'s subscription from node `origin`, for a new subscription to take the same; none
/// (the defaults) when `node` has no such subscription.
fn subscription_args(node: &Conn, step: &str, origin: &str) -> Result<String, Failure> {
    let rows = node.rows(
        step,
        &format!(
            "SELECT s.sub_replication_sets::text, s.sub_forward_origins::text \
             FROM spock.subscription s JOIN spock.local_node l ON l.node_id = s.sub_target \
             JOIN spock.node n ON n.node_id = s.sub_origin WHERE n.node_name = {} \
             ORDER BY s.sub_name LIMIT 1",
            literal(origin)
        ),
        2,
    )?;
    // No forwarded origins are stored as NULL.
    Ok(match rows.first().map(|r| &r[..]) {
        Some([Some(sets), forward]) => format!(
            ", replication_sets := {}::text[], forward_origins := {}::text[]",
            literal(sets),
            literal(forward.as_deref().unwrap_or("{}"))
        ),
        _ => String::new(),
    })
}

/// Drops an inactive slot of `slot`'s name on `node`, left by an earlier failed attempt.
fn drop_stale_slot(node: &Conn, slot: &str, say: &dyn Fn(&str)) -> Result<(), Failure> {
    let active = node.value(
        CHECKS,
        &format!(
            "SELECT active::text FROM pg_catalog.pg_replication_slots WHERE slot_name = {}",
            literal(slot)
        ),
    )?;
    match active.as_deref() {
        None => Ok(()),
        Some("false") => {
            node.run(
                CHECKS,
                &format!("pg_catalog.pg_drop_replication_slot({})", literal(slot)),
            )?;
            say(&format!(
                "add_node: dropped slot {slot} left on node \"{}\" by an earlier attempt",
                node.name
            ));
            Ok(())
        }
        Some(_) => Err(Failure::new(
            CHECKS,
            format!(
                "replication slot {slot} on node \"{}\" is in use: is this node being added already?",
                node.name
            ),
        )
        .code(PgSqlErrorCode::ERRCODE_OBJECT_IN_USE)),
    }
}

/// Puts the copied tables into the same replication sets here as on the source (with their
/// column lists and row filters), so the new node's own changes reach the others.
fn copy_memberships(src: &Conn, here: &Conn) -> Result<(), Failure> {
    let sets = src.rows(
        ENABLE,
        "SELECT s.set_name::text, s.replicate_insert::text, s.replicate_update::text, \
         s.replicate_delete::text, s.replicate_truncate::text FROM spock.replication_set s \
         JOIN spock.local_node l ON l.node_id = s.set_nodeid \
         WHERE s.set_name NOT IN ('default', 'default_insert_only', 'ddl_sql')",
        5,
    )?;
    for s in sets {
        let [Some(name), Some(i), Some(u), Some(d), Some(t)] = &s[..] else {
            continue;
        };
        here.run(
            ENABLE,
            &format!(
                "spock.repset_create({}, {}::boolean, {}::boolean, {}::boolean, {}::boolean)",
                literal(name),
                literal(i),
                literal(u),
                literal(d),
                literal(t)
            ),
        )?;
    }
    let members = src.rows(
        ENABLE,
        "SELECT s.set_name::text, pg_catalog.format('%I.%I', n.nspname, c.relname), \
         t.set_att_list::text, pg_catalog.pg_get_expr(t.set_row_filter, t.set_reloid) \
         FROM spock.replication_set_table t JOIN spock.replication_set s ON s.set_id = t.set_id \
         JOIN spock.local_node l ON l.node_id = s.set_nodeid \
         JOIN pg_catalog.pg_class c ON c.oid = t.set_reloid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace ORDER BY 1, 2",
        4,
    )?;
    for m in members {
        let [Some(set), Some(table), columns, filter] = &m[..] else {
            continue;
        };
        here.run(
            ENABLE,
            &format!(
                "spock.repset_add_table({}, {}::regclass, false, {}::text[], {}, false)",
                literal(set),
                literal(table),
                columns.as_deref().map_or("NULL".into(), literal),
                filter.as_deref().map_or("NULL".into(), literal),
            ),
        )?;
    }
    Ok(())
}

/// Undoes `created` in reverse; returns what it did and what it could not.
fn undo(created: &[Created]) -> Vec<String> {
    let mut said = Vec::new();
    // Subscriptions first (their workers hold slots), then slots, the copied objects, and
    // the node last (it cannot go while subscriptions use it).
    let rank = |c: &Created| match c {
        Created::Subscription { .. } => 0,
        Created::Slot { .. } => 1,
        Created::Structure { .. } => 2,
        Created::Node { .. } => 3,
    };
    let mut order: Vec<&Created> = created.iter().rev().collect();
    order.sort_by_key(|c| rank(c));
    for c in order {
        let outcome = match c {
            Created::Subscription { node, dsn, sub } => Conn::open(node, dsn, "undo")
                .and_then(|n| n.run("undo", &format!("spock.sub_drop({}, true)", literal(sub))))
                .map(|_| format!("dropped subscription {sub} on node \"{node}\"")),
            Created::Slot { node, dsn, slot } => Conn::open(node, dsn, "undo").and_then(|n| {
                n.run(
                    "undo",
                    &format!(
                        "pg_catalog.pg_drop_replication_slot(slot_name) \
                         FROM pg_catalog.pg_replication_slots WHERE slot_name = {}",
                        literal(slot)
                    ),
                )
                .map(|_| format!("dropped slot {slot} on node \"{node}\""))
            }),
            Created::Structure {
                schemas_before,
                relations_before,
            } => drop_structure(created, schemas_before, relations_before),
            Created::Node { name } => local_conn(created).and_then(|n| {
                n.run("undo", &format!("spock.node_drop({}, true)", literal(name)))
                    .map(|_| format!("dropped node \"{name}\""))
            }),
        };
        match outcome {
            Ok(done) => said.push(done),
            Err(f) => said.push(format!("left behind: {} ({})", describe(c), f.message)),
        }
    }
    said
}

/// What an undo step is about, for "left behind".
fn describe(c: &Created) -> String {
    match c {
        Created::Node { name } => format!("node \"{name}\""),
        Created::Subscription { node, sub, .. } => {
            format!("subscription {sub} on node \"{node}\"")
        }
        Created::Slot { node, slot, .. } => format!("slot {slot} on node \"{node}\""),
        Created::Structure { .. } => "the copied tables".into(),
    }
}

/// A connection to this node, through the DSN the local node was created with.
fn local_conn(created: &[Created]) -> Result<Conn, Failure> {
    let Some((name, dsn)) = created.iter().find_map(|c| match c {
        Created::Subscription { node, dsn, .. } => Some((node.clone(), dsn.clone())),
        _ => None,
    }) else {
        let dsn = local_value(
            "SELECT i.if_dsn FROM spock.local_node l \
             JOIN spock.node_interface i ON i.if_id = l.node_local_interface",
            &[],
        )
        .unwrap_or_default();
        return Conn::open("new node", &dsn, "undo");
    };
    Conn::open(&name, &dsn, "undo")
}

/// Drops what the structure copy restored: schemas that did not exist before, and the
/// relations in the others that did not (what was there before the add stays).
fn drop_structure(
    created: &[Created],
    schemas_before: &[String],
    relations_before: &[String],
) -> Result<String, Failure> {
    let here = local_conn(created)?;
    let before = schemas_before
        .iter()
        .map(|s| literal(s))
        .collect::<Vec<_>>()
        .join(", ");
    let relations = literal(&format!("{{{}}}", relations_before.join(",")));
    here.run_block(
        "undo",
        &format!(
            "DECLARE cmd text; BEGIN \
             PERFORM pg_catalog.set_config('spock.enable_ddl_replication', 'off', true); \
             FOR cmd IN SELECT pg_catalog.format('DROP SCHEMA IF EXISTS %I CASCADE', nspname) \
               FROM pg_catalog.pg_namespace WHERE nspname NOT IN ({before}) AND nspname !~ '^pg_' \
             UNION ALL \
             SELECT pg_catalog.format('DROP %s IF EXISTS %I.%I CASCADE', \
               CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' \
                 WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, \
               n.nspname, c.relname) \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND n.nspname IN ({before}) \
               AND c.oid <> ALL ({relations}::pg_catalog.oid[]) \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'spock') \
               AND n.nspname !~ '^pg_' \
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
                 WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                   AND d.objid = c.oid AND d.deptype IN ('e', 'i', 'a')) \
             LOOP EXECUTE cmd; END LOOP; END"
        ),
    )?;
    Ok("dropped the copied tables".into())
}
