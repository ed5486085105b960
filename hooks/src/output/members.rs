//! Which tables a stream publishes, with which actions and columns. The subscribed sets are
//! resolved once at startup; table membership is read on first use with the decoding snapshot
//! (the spock catalog tables are user catalog tables), so it matches the WAL position, and is
//! forgotten when the relation changes or the stream passes a membership change.

use super::filter::RowFilter;
use super::params::Params;
use crate::catalog;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::{cell::RefCell, collections::HashMap, rc::Rc};

pub use crate::catalog::sets::SetFlags;

#[derive(Debug, Clone, Default)]
pub struct Actions {
    pub insert: bool,
    pub update: bool,
    pub delete: bool,
    pub truncate: bool,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub flags: Actions,
    /// The column list; `None` publishes every column.
    pub columns: Option<Vec<String>>,
    /// The row filters of its memberships (all must pass); `None` publishes every row.
    pub filter: Option<Rc<RowFilter>>,
    /// RELATION metadata already sent on this stream.
    pub relation_sent: bool,
    /// How its rows are written, worked out at its first row (like the member itself, it
    /// goes with any invalidation of the relation).
    pub layout: Option<Rc<[super::tuples::Column]>>,
}

pub struct Members {
    /// `None` caches "not published".
    by_rel: HashMap<pg_sys::Oid, Option<Member>>,
    /// spock.replication_set_table and spock.replication_set.
    membership_tables: [pg_sys::Oid; 2],
    /// spock.queue: its inserts are published by their own set list, not by membership.
    queue: pg_sys::Oid,
    /// spock.repair_mode_switch: an insert turns repair mode on or off for the transaction.
    repair_switch: pg_sys::Oid,
}

thread_local! {
    /// Relations invalidated since the last lookup; `None` in the list means all of them.
    static INVALIDATED: RefCell<Vec<Option<pg_sys::Oid>>> = const { RefCell::new(Vec::new()) };
    static CALLBACK_REGISTERED: RefCell<bool> = const { RefCell::new(false) };
}

#[pg_guard]
unsafe extern "C-unwind" fn relcache_callback(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let entry = (relid != pg_sys::InvalidOid).then_some(relid);
    INVALIDATED.with(|i| i.borrow_mut().push(entry));
}

/// Reads this node's id and the subscribed sets; ERROR without a local node or for an unknown set.
pub fn load_startup(params: &Params) -> (u16, Vec<SetFlags>, Members) {
    // SAFETY: decoding startup may run outside a transaction (walsender); we need one for SPI.
    let own_xact = unsafe { !pg_sys::IsTransactionState() };
    if own_xact {
        // SAFETY: no transaction is open.
        unsafe { pg_sys::StartTransactionCommand() };
    }
    // SPI needs a snapshot; the walsender has none at startup.
    // SAFETY: a snapshot of our own transaction, popped below.
    let own_snapshot = unsafe { !pg_sys::ActiveSnapshotSet() };
    if own_snapshot {
        // SAFETY: as above.
        unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
    }
    let loaded = (|| {
        let Some(node) = catalog::nodes::local_id() else {
            return Ok(None);
        };
        let node = pg_sys::Oid::from(node);
        let mut sets = Vec::new();
        for name in &params.replication_sets {
            match catalog::sets::named(node, name) {
                Some(flags) => sets.push(flags),
                None => return Ok(Some(Err(name.clone()))),
            }
        }
        let tables = Spi::connect(|client| {
            let tables = client.select(
                "SELECT 'spock.replication_set_table'::regclass::oid, 'spock.replication_set'::regclass::oid, \
                 'spock.queue'::regclass::oid, 'spock.repair_mode_switch'::regclass::oid",
                None,
                &[],
            )?;
            let tables = tables.first();
            // regclass casts: an oid, or an ERROR if the table is missing.
            let oid = |i| -> Result<pg_sys::Oid, pgrx::spi::Error> {
                Ok(tables.get::<pg_sys::Oid>(i)?.unwrap_or(pg_sys::InvalidOid))
            };
            Ok::<_, pgrx::spi::Error>([oid(1)?, oid(2)?, oid(3)?, oid(4)?])
        })?;
        Ok::<_, pgrx::spi::Error>(Some(Ok((
            node,
            sets,
            [tables[0], tables[1]],
            tables[2],
            tables[3],
        ))))
    })();
    if own_snapshot {
        // SAFETY: the snapshot pushed above.
        unsafe { pg_sys::PopActiveSnapshot() };
    }
    if own_xact {
        // SAFETY: the transaction we started above.
        unsafe { pg_sys::CommitTransactionCommand() };
    }
    let (node, sets, membership_tables, queue, repair_switch) = match loaded {
        Ok(Some(Ok(found))) => found,
        Ok(Some(Err(set))) => crate::raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("replication set {set} not found"),
        ),
        Ok(None) => crate::raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "local spock node not found".into(),
        ),
        Err(e) => crate::raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("spock_output: cannot read the spock catalog: {e}"),
        ),
    };
    CALLBACK_REGISTERED.with(|r| {
        if !*r.borrow() {
            // SAFETY: registering a callback for the life of the process.
            unsafe {
                pg_sys::CacheRegisterRelcacheCallback(
                    Some(relcache_callback),
                    pg_sys::Datum::from(0),
                )
            };
            *r.borrow_mut() = true;
        }
    });
    INVALIDATED.with(|i| i.borrow_mut().clear());
    let node_id = node.to_u32() as u16;
    (
        node_id,
        sets,
        Members {
            by_rel: HashMap::new(),
            membership_tables,
            queue,
            repair_switch,
        },
    )
}

impl Members {
    pub fn is_membership_table(&self, relid: pg_sys::Oid) -> bool {
        self.membership_tables.contains(&relid)
    }

    /// Whether a row inserted into spock.queue goes to this stream: its replication_sets is
    /// NULL or names one of the subscribed sets.
    ///
    /// # Safety
    /// `relation` is spock.queue and `tuple` one of its rows.
    pub unsafe fn queued_for(
        relation: pg_sys::Relation,
        tuple: pg_sys::HeapTuple,
        params: &Params,
    ) -> bool {
        let mut isnull = false;
        // SAFETY: forwarded from the caller; column 3 is replication_sets text[].
        let sets = unsafe {
            Vec::<String>::from_datum(
                pg_sys::heap_getattr(tuple, 3, (*relation).rd_att, &mut isnull),
                isnull,
            )
        };
        sets.is_none_or(|sets| sets.iter().any(|s| params.replication_sets.contains(s)))
    }

    pub fn is_repair_switch(&self, relid: pg_sys::Oid) -> bool {
        relid == self.repair_switch
    }

    pub fn is_queue(&self, relid: pg_sys::Oid) -> bool {
        relid == self.queue
    }

    pub fn forget_all(&mut self) {
        self.by_rel.clear();
    }

    pub fn mark_sent(&mut self, relid: pg_sys::Oid) {
        if let Some(Some(m)) = self.by_rel.get_mut(&relid) {
            m.relation_sent = true;
        }
    }

    pub fn set_layout(&mut self, relid: pg_sys::Oid, layout: Rc<[super::tuples::Column]>) {
        if let Some(Some(m)) = self.by_rel.get_mut(&relid) {
            m.layout = Some(layout);
        }
    }

    pub fn get(&self, relid: pg_sys::Oid) -> Option<&Member> {
        self.by_rel.get(&relid).and_then(Option::as_ref)
    }

    /// The publication of `relation` on this stream, or `None` if it is not published.
    ///
    /// # Safety
    /// Call from a decoding callback, with `relation` open.
    pub unsafe fn lookup(
        &mut self,
        relation: pg_sys::Relation,
        params: &Params,
        sets: &[SetFlags],
    ) -> Option<&Member> {
        INVALIDATED.with(|i| {
            for entry in i.borrow_mut().drain(..) {
                match entry {
                    Some(relid) => {
                        self.by_rel.remove(&relid);
                    }
                    None => self.by_rel.clear(),
                }
            }
        });
        // SAFETY: forwarded from the caller.
        let relid = unsafe { (*relation).rd_id };
        if !self.by_rel.contains_key(&relid) {
            // SAFETY: forwarded from the caller.
            let member = if relid == self.queue {
                Some(Member {
                    flags: Actions {
                        insert: true,
                        ..Actions::default()
                    },
                    columns: None,
                    filter: None,
                    relation_sent: false,
                    layout: None,
                })
            } else {
                // SAFETY: the decoding callback's relation, open for the call.
                unsafe { self.read(relation, params, sets) }
            };
            self.by_rel.insert(relid, member);
        }
        self.get(relid)
    }

    /// Scans spock.replication_set_table for the relation's memberships in the subscribed sets.
    unsafe fn read(
        &self,
        relation: pg_sys::Relation,
        params: &Params,
        sets: &[SetFlags],
    ) -> Option<Member> {
        // SAFETY: catalog scan with the decoding snapshot; tuples are read before the scan ends.
        unsafe {
            let relid = (*relation).rd_id;
            let mut flags = Actions::default();
            let mut columns: Option<Vec<String>> = None;
            let mut all_columns = false;
            let mut found = false;
            let mut filters: Vec<String> = Vec::new();

            let table =
                pg_sys::table_open(self.membership_tables[0], pg_sys::AccessShareLock as i32);
            let desc = (*table).rd_att;
            let scan = pg_sys::systable_beginscan(
                table,
                pg_sys::InvalidOid,
                false,
                std::ptr::null_mut(),
                0,
                std::ptr::null_mut(),
            );
            loop {
                let tup = pg_sys::systable_getnext(scan);
                if tup.is_null() {
                    break;
                }
                let mut isnull = false;
                let set_id = pg_sys::Oid::from_datum(
                    pg_sys::heap_getattr(tup, 1, desc, &mut isnull),
                    isnull,
                );
                let rel = pg_sys::Oid::from_datum(
                    pg_sys::heap_getattr(tup, 2, desc, &mut isnull),
                    isnull,
                );
                if rel != Some(relid) {
                    continue;
                }
                let Some(set) = sets.iter().find(|s| Some(s.set_id) == set_id) else {
                    continue;
                };
                found = true;
                flags.insert |= set.insert;
                flags.update |= set.update;
                flags.delete |= set.delete;
                flags.truncate |= set.truncate;
                let tree = pg_sys::heap_getattr(tup, 4, desc, &mut isnull);
                if let Some(tree) = String::from_datum(tree, isnull) {
                    filters.push(tree);
                }
                let att_list = pg_sys::heap_getattr(tup, 3, desc, &mut isnull);
                match Vec::<String>::from_datum(att_list, isnull) {
                    None => all_columns = true,
                    Some(list) => {
                        let cols = columns.get_or_insert_with(Vec::new);
                        for c in list {
                            if !cols.contains(&c) {
                                cols.push(c);
                            }
                        }
                    }
                }
            }
            pg_sys::systable_endscan(scan);
            pg_sys::table_close(table, pg_sys::AccessShareLock as i32);

            if let Some((schema, name)) = &params.only_table {
                let nsp = super::tuples::namespace_name((*(*relation).rd_rel).relnamespace);
                let rel = pgrx::name_data_to_str(&(*(*relation).rd_rel).relname);
                if nsp != *schema || rel != name {
                    return None;
                }
                return Some(Member {
                    flags: Actions {
                        insert: true,
                        update: true,
                        delete: true,
                        truncate: true,
                    },
                    columns: if all_columns { None } else { columns },
                    filter: None,
                    relation_sent: false,
                    layout: None,
                });
            }
            found.then(|| Member {
                flags,
                columns: if all_columns { None } else { columns },
                filter: (!filters.is_empty()).then(|| Rc::new(RowFilter::new(relation, &filters))),
                relation_sent: false,
                layout: None,
            })
        }
    }
}
