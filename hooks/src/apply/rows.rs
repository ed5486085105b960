//! The row engine: one path from a decoded change to a local row. Each change finds and locks
//! the local row, decides with the one last-update-wins function (`conflict::remote_wins`,
//! tombstones taking part as deletes), then writes. The executor store (`exec.rs`: a
//! replica-identity index lookup, speculative insertion, updates and deletes of the locked
//! row, delta merges) serves every table it can; the rest — partitioned parents, a table with
//! indexes but no replica-identity index, a sent column generated here, and rows the executor
//! did not find — go through SQL statements (`sql.rs`) in the same steps, with the same
//! decision made here in Rust. Conflicts are reported through `resolved`.
//!
//! The rest of the worker sees one interface: `apply_insert`, `apply_update` and
//! `apply_delete`, which pick the store for the table (`target`) and never let a caller
//! choose one.

use super::conflict::{self, Kind, Local, Version};
use super::sql::{RemoteRel, RowAt, Statement};
use super::{Applier, MAX_ATTEMPTS, binary, exec, has_tombstones, versions};
use crate::stats::{self, Counter};
use crate::{identity, raise, settings};
use pgrx::PgSqlErrorCode as Code;
use pgrx::pg_sys;
use pgrx::prelude::*;
use spock_proto::Value;
use std::rc::Rc;

impl Applier {
    /// A remote INSERT of `new` into remote relation `relid`, by whichever store serves it.
    pub(super) fn apply_insert(&mut self, relid: u32, rel: &RemoteRel, new: &[Value]) {
        match self.target(relid, rel, new) {
            Some(t) => self.insert_exec(rel, &t, new),
            None => self.insert(rel, &binary::as_text(rel, new)),
        }
    }

    /// A remote UPDATE (`old`: the old key or row, when sent), by whichever store serves it.
    pub(super) fn apply_update(
        &mut self,
        relid: u32,
        rel: &RemoteRel,
        old: Option<&[Value]>,
        new: &[Value],
    ) {
        match self.target(relid, rel, old.unwrap_or(new)) {
            Some(t) => self.update_exec(rel, &t, old, new),
            None => {
                let old = old.map(|o| binary::as_text(rel, o));
                self.update(rel, old.as_deref(), &binary::as_text(rel, new));
            }
        }
    }

    /// A remote DELETE of the row whose key or values are `old`, by whichever store serves it.
    pub(super) fn apply_delete(&mut self, relid: u32, rel: &RemoteRel, old: &[Value]) {
        match self.target(relid, rel, old) {
            Some(t) => self.delete_exec(rel, &t, old),
            None => self.delete(rel, &binary::as_text(rel, old)),
        }
    }

    /// The executor-level mapping for a change of `relid` whose key is in `key_values`, or
    /// `None` when the change takes the SQL path.
    fn target(
        &mut self,
        relid: u32,
        rel: &RemoteRel,
        key_values: &[Value],
    ) -> Option<Rc<exec::Target>> {
        for changed in exec::take_invalidated() {
            match changed {
                None => self.targets.clear(),
                Some(oid) => self
                    .targets
                    .retain(|_, t| t.as_ref().is_none_or(|t| t.relid != oid)),
            }
        }
        if settings::USE_SPI.get() {
            return None;
        }
        let t = self
            .targets
            .entry(relid)
            .or_insert_with(|| exec::Target::new(rel).map(Rc::new))
            .clone()?;
        t.has_key(key_values).then_some(t)
    }

    /// The open executor state for `t`'s table: the one the previous change left open when it
    /// was on the same table, else a new one (any other is finished first).
    fn change(&self, t: &Rc<exec::Target>) -> exec::Change {
        match self.batch.borrow_mut().take() {
            Some(open) if open.relid() == t.relid => open,
            other => {
                if let Some(open) = other {
                    open.finish();
                }
                exec::Change::open(t.clone())
            }
        }
    }

    /// Leaves a change's executor state open for the next change of the same table.
    fn keep_open(&self, change: exec::Change) {
        let previous = self.batch.borrow_mut().replace(change);
        debug_assert!(previous.is_none());
    }

    /// Finishes the open executor state, if any: before anything else runs in the transaction
    /// (SQL, a change of another kind, the commit), so it sees every row written so far.
    pub(super) fn end_batch(&self) {
        if let Some(open) = self.batch.borrow_mut().take() {
            open.finish();
        }
    }

    /// After an error: the transaction's abort has released the open executor state.
    pub(super) fn forget_batch(&self) {
        // Change holds only pointers into the aborted transaction and does nothing on drop.
        drop(self.batch.borrow_mut().take());
    }

    /// Remote INSERT through the executor: a new row, unless the key exists (then
    /// last-update-wins decides) or a newer delete of it is remembered. A row that holds the
    /// same value of another unique index is a conflict too: if the remote row is the newer,
    /// the local one gives way; otherwise the remote row is dropped (and reported).
    fn insert_exec(&mut self, rel: &RemoteRel, t: &Rc<exec::Target>, new: &[Value]) {
        // Looked at (and cached for the transaction) before the table is opened: it may query.
        let tombstones = self.may_have_tombstones(rel);
        let remote = self.remote_version();
        let mut gave_way = None;
        let mut change = self.change(t);
        for _ in 0..MAX_ATTEMPTS {
            if change.insert_or_skip(new) {
                if tombstones || gave_way.is_some() {
                    change.finish();
                    if let Some(local) = gave_way {
                        self.resolved(
                            rel,
                            Kind::InsertExists,
                            true,
                            local,
                            &binary::as_text(rel, new),
                        );
                    }
                    if tombstones {
                        self.after_revival(rel, &binary::as_text(rel, new), Kind::InsertExists);
                    }
                } else {
                    self.keep_open(change);
                }
                return;
            }
            if let Some(xmin) = change.lock_row(new) {
                let local = versions::local_version(xmin);
                let wins = conflict::remote_wins(remote, local);
                change.update_if(wins, new, &[]);
                change.finish();
                self.resolved(
                    rel,
                    Kind::InsertExists,
                    wins,
                    local,
                    &binary::as_text(rel, new),
                );
                return;
            }
            // The key is new: another unique index holds the value.
            let Some(xmin) = change.lock_conflicting() else {
                continue;
            };
            let local = versions::local_version(xmin);
            if conflict::remote_wins(remote, local) {
                change.delete_found();
                gave_way = Some(local);
                continue;
            }
            change.keep_found();
            change.finish();
            self.resolved(
                rel,
                Kind::InsertExists,
                false,
                local,
                &binary::as_text(rel, new),
            );
            return;
        }
        change.finish();
        raise(
            Code::ERRCODE_T_R_SERIALIZATION_FAILURE,
            self.moving_row(rel, "INSERT"),
        );
    }

    /// Remote UPDATE through the executor: applied to the locked row if newer; a missing row
    /// goes to the SQL path (tombstones decide whether it is revived).
    fn update_exec(
        &mut self,
        rel: &RemoteRel,
        t: &Rc<exec::Target>,
        old: Option<&[Value]>,
        new: &[Value],
    ) {
        let remote = self.remote_version();
        let mut change = self.change(t);
        match change.lock_row(old.unwrap_or(new)) {
            Some(xmin) => {
                let local = versions::local_version(xmin);
                let wins = conflict::remote_wins(remote, local);
                let merged = change.merged_deltas(old, new);
                if !wins && !merged.is_empty() {
                    // The local row stays the newer one; its delta columns still count the
                    // remote change.
                    change.merge_found(&merged, versions::commit_ts_data(xmin));
                    change.finish();
                    stats::count(self.sub_id, rel.local_relid, Counter::DeltaApply);
                    self.resolved(
                        rel,
                        Kind::UpdateUpdate,
                        false,
                        local,
                        &binary::as_text(rel, new),
                    );
                    return;
                }
                // Another row holding the new values of a unique index: the newer of the two
                // writes keeps them (the local row gives way, or the update is dropped).
                let collided = wins
                    .then(|| change.lock_colliding(new))
                    .flatten()
                    .map(versions::local_version);
                if let Some(other) = collided {
                    let gives_way = conflict::remote_wins(remote, other);
                    if gives_way {
                        change.delete_other();
                    }
                    change.update_if(gives_way, new, &merged);
                    change.finish();
                    self.resolved(
                        rel,
                        Kind::UpdateUpdate,
                        gives_way,
                        other,
                        &binary::as_text(rel, new),
                    );
                    return;
                }
                change.update_if(wins, new, &merged);
                if wins && !conflict::is_conflict(remote, local) {
                    self.keep_open(change);
                    return;
                }
                change.finish();
                self.resolved(
                    rel,
                    Kind::UpdateUpdate,
                    wins,
                    local,
                    &binary::as_text(rel, new),
                );
            }
            None => {
                change.finish();
                let old = old.map(|o| binary::as_text(rel, o));
                self.update(rel, old.as_deref(), &binary::as_text(rel, new));
            }
        }
    }

    /// Remote DELETE through the executor: applied to the locked row if newer and remembered
    /// as a tombstone; a missing row goes to the SQL path.
    fn delete_exec(&mut self, rel: &RemoteRel, t: &Rc<exec::Target>, old: &[Value]) {
        let remote = self.remote_version();
        let mut change = self.change(t);
        let found = change.lock_row(old);
        let wins = found.map(|xmin| {
            let local = versions::local_version(xmin);
            (conflict::remote_wins(remote, local), local)
        });
        match wins {
            Some((true, _)) => change.delete_found(),
            Some((false, _)) => change.keep_found(),
            None => {}
        }
        change.finish();
        let old = binary::as_text(rel, old);
        match wins {
            Some((true, local)) => {
                if !rel.key.is_empty() {
                    self.exec(rel.write_tombstone(&old, self.owner_key(rel, &old).as_deref()));
                }
                if conflict::is_conflict(remote, local) {
                    self.resolved(rel, Kind::DeleteUpdate, true, local, &old);
                }
            }
            Some((false, local)) => self.resolved(rel, Kind::DeleteUpdate, false, local, &old),
            None => self.delete(rel, &old),
        }
    }

    /// Runs a statement of spock's own (its catalog) with the worker's rights; returns the
    /// rows it processed and the first column of its first row.
    pub(super) fn exec(&self, stmt: Result<Statement, String>) -> (u64, Option<String>) {
        self.end_batch();
        let stmt = stmt.unwrap_or_else(|e| self.bad_change(e));
        run_with_text_params(&stmt)
    }

    /// Runs a statement on `rel`'s local table with the table owner's rights: its triggers,
    /// constraints, defaults and index expressions never run as the worker's superuser.
    pub(super) fn write(
        &self,
        rel: &RemoteRel,
        stmt: Result<Statement, String>,
    ) -> (u64, Option<String>) {
        self.end_batch();
        let stmt = stmt.unwrap_or_else(|e| self.bad_change(e));
        let owner = identity::rel_owner(pg_sys::Oid::from(rel.local_relid));
        identity::as_owner(owner, || run_with_text_params(&stmt))
    }

    pub(super) fn remote_version(&self) -> Version {
        Version {
            ts: self.xact.commit_time,
            node: self.sub.provider,
        }
    }

    /// Locks the local row with `key`'s key and returns where it is and its version, or
    /// `None` if absent.
    fn lock_row(&self, rel: &RemoteRel, key: &[Value]) -> Option<(RowAt, Local)> {
        let (_, found) = self.write(rel, rel.lock_row(key));
        let at = RowAt::parse(&found?).unwrap_or_else(|| error!("unexpected row address"));
        let local = versions::local_version(pg_sys::TransactionId::from(at.xmin));
        Some((at, local))
    }

    /// The tombstone key of `values` computed with the owner's rights when a key column has a
    /// user's type (see `RemoteRel::user_typed_key`); `None` when spock's statement may
    /// compute it.
    fn owner_key(&self, rel: &RemoteRel, values: &[Value]) -> Option<String> {
        rel.user_typed_key()
            .then(|| self.write(rel, rel.key_bytes(values)).1)
            .flatten()
    }

    /// Locks the row's tombstone and returns its version, or `None` if there is none.
    fn lock_tombstone(&self, rel: &RemoteRel, key: &[Value]) -> Option<Local> {
        if rel.key.is_empty() {
            return None;
        }
        let (_, xmin) = self.exec(rel.lock_tombstone(key, self.owner_key(rel, key).as_deref()));
        xmin.map(|x| versions::local_version(parse_xid(&x)))
    }

    /// Whether the table had tombstones when this transaction first touched it.
    fn may_have_tombstones(&mut self, rel: &RemoteRel) -> bool {
        if rel.key.is_empty() {
            return false;
        }
        if let Some(&had) = self.xact.had_tombstones.get(&rel.local_relid) {
            return had;
        }
        // Clean at the end of the previous transaction: assumed clean now, and checked again
        // before this one commits.
        let had = !self.clean.contains(&rel.local_relid) && {
            self.end_batch();
            has_tombstones(rel.local_relid)
        };
        self.xact.had_tombstones.insert(rel.local_relid, had);
        had
    }

    /// Remote INSERT: a new row, unless the key exists (then last-update-wins decides) or a
    /// newer delete of it is remembered.
    fn insert(&mut self, rel: &RemoteRel, new: &[Value]) {
        let remote = self.remote_version();
        for _ in 0..MAX_ATTEMPTS {
            if self.write(rel, rel.insert_or_skip(new)).0 == 1 {
                if self.may_have_tombstones(rel) {
                    self.after_revival(rel, new, Kind::InsertExists);
                }
                return;
            }
            match self.lock_row(rel, new) {
                Some((at, local)) => {
                    let wins = conflict::remote_wins(remote, local);
                    if wins {
                        self.write(rel, rel.update_at(&at, None, new));
                    }
                    self.resolved(rel, Kind::InsertExists, wins, local, new);
                    return;
                }
                // The conflict was on another unique index: let the plain INSERT report it.
                None if !rel.key.is_empty() && self.write(rel, rel.insert(new)).0 == 1 => {
                    self.after_revival(rel, new, Kind::InsertExists);
                    return;
                }
                None => {}
            }
        }
        raise(
            Code::ERRCODE_T_R_SERIALIZATION_FAILURE,
            self.moving_row(rel, "INSERT"),
        );
    }

    /// A row was just inserted for a remote change: if a newer delete of it is remembered, the
    /// delete wins and the row goes again; otherwise the older tombstone is dropped.
    fn after_revival(&mut self, rel: &RemoteRel, new: &[Value], kind: Kind) {
        // A local delete of the row that our insert waited for has committed its tombstone by
        // now, so this look finds it.
        let Some(tomb) = self.lock_tombstone(rel, new) else {
            return;
        };
        let remote = self.remote_version();
        if conflict::remote_wins(remote, tomb) {
            self.exec(rel.drop_tombstone(new, self.owner_key(rel, new).as_deref()));
            if kind != Kind::InsertExists {
                self.resolved(rel, Kind::UpdateDelete, true, tomb, new);
            }
        } else {
            self.write(rel, rel.delete(new));
            self.resolved(rel, kind_for_deleted(kind), false, tomb, new);
        }
    }

    /// Remote UPDATE: applied to the locked row if newer (its delta-apply columns merge
    /// either way); a missing row is revived unless a newer delete of it is remembered.
    fn update(&mut self, rel: &RemoteRel, old: Option<&[Value]>, new: &[Value]) {
        let remote = self.remote_version();
        let key = old.unwrap_or(new);
        for _ in 0..MAX_ATTEMPTS {
            if let Some((at, local)) = self.lock_row(rel, key) {
                let wins = conflict::remote_wins(remote, local);
                if wins {
                    self.write(rel, rel.update_at(&at, old, new));
                } else if let Some(merge) = rel
                    .merge_deltas_at(&at, old, new)
                    .unwrap_or_else(|e| self.bad_change(e))
                {
                    self.merge_keeping_version(rel, merge, at.xmin);
                }
                if conflict::is_conflict(remote, local) {
                    self.resolved(rel, Kind::UpdateUpdate, wins, local, new);
                }
                return;
            }
            if rel.key.is_empty() {
                self.resolved(rel, Kind::UpdateDelete, false, Local::Unknown, new);
                return;
            }
            if let Some(tomb) = self.lock_tombstone(rel, key)
                && !conflict::remote_wins(remote, tomb)
            {
                self.resolved(rel, Kind::UpdateDelete, false, tomb, new);
                return;
            }
            if new.iter().any(|v| matches!(v, Value::UnchangedToast)) {
                warning!(
                    "CONFLICT: remote UPDATE on relation {}.{} found no row and carries unchanged TOAST values; the row cannot be revived. Resolution: skip.",
                    rel.nspname,
                    rel.relname
                );
                return;
            }
            if self.write(rel, rel.insert_or_skip(new)).0 == 1 {
                self.after_revival(rel, new, Kind::UpdateDelete);
                return;
            }
            // Inserted concurrently meanwhile: lock it and decide again.
        }
        raise(
            Code::ERRCODE_T_R_SERIALIZATION_FAILURE,
            self.moving_row(rel, "UPDATE"),
        );
    }

    /// The delta-apply columns of a remote UPDATE that lost merge into the local row, which
    /// stays the newer one and keeps its version (`versions::keeping_version`).
    fn merge_keeping_version(&self, rel: &RemoteRel, merge: Statement, xmin: u32) {
        let keep = versions::commit_ts_data(pg_sys::TransactionId::from(xmin));
        versions::keeping_version(keep, || {
            self.write(rel, Ok(merge));
        });
        stats::count(self.sub_id, rel.local_relid, Counter::DeltaApply);
    }

    /// Remote DELETE: applied to the locked row if newer, and remembered as a tombstone so a
    /// late older INSERT or UPDATE of the same key cannot bring the row back.
    fn delete(&mut self, rel: &RemoteRel, old: &[Value]) {
        let remote = self.remote_version();
        if let Some((at, local)) = self.lock_row(rel, old) {
            let wins = conflict::remote_wins(remote, local);
            if wins {
                self.write(rel, Ok(rel.delete_at(&at)));
                if !rel.key.is_empty() {
                    self.exec(rel.write_tombstone(old, self.owner_key(rel, old).as_deref()));
                }
            }
            if conflict::is_conflict(remote, local) {
                self.resolved(rel, Kind::DeleteUpdate, wins, local, old);
            }
            return;
        }
        if rel.key.is_empty() {
            self.resolved(rel, Kind::DeleteDelete, false, Local::Unknown, old);
            return;
        }
        let tomb = self.lock_tombstone(rel, old);
        if tomb.is_none_or(|t| conflict::remote_wins(remote, t)) {
            self.exec(rel.write_tombstone(old, self.owner_key(rel, old).as_deref()));
        }
        // A local insert of the key may commit while we run.
        self.xact.reconcile.insert(rel.local_relid);
        self.resolved(
            rel,
            Kind::DeleteDelete,
            false,
            tomb.unwrap_or(Local::Unknown),
            old,
        );
    }

    /// A remote change that does not fit its relation (column count, key values).
    pub(super) fn bad_change(&self, e: String) -> ! {
        raise(
            Code::ERRCODE_PROTOCOL_VIOLATION,
            format!("subscription \"{}\": {e}", self.sub.name),
        )
    }

    /// The message of a change that kept meeting concurrent changes of its row: a
    /// serialization failure, so the transaction is simply tried again.
    fn moving_row(&self, rel: &RemoteRel, what: &str) -> String {
        format!(
            "subscription \"{}\": remote {what} on {}.{} kept meeting concurrent changes of its row",
            self.sub.name, rel.nspname, rel.relname
        )
    }
}

/// Runs a statement through the backend's prepared plans (`crate::prepared`); returns the
/// number of rows it processed and the first column of the first row it returned.
pub(super) fn run_with_text_params(stmt: &Statement) -> (u64, Option<String>) {
    crate::prepared::run(&stmt.sql, &stmt.params)
}

fn parse_xid(text: &str) -> pg_sys::TransactionId {
    pg_sys::TransactionId::from(
        text.parse::<u32>()
            .unwrap_or_else(|_| error!("bad xid {text}")),
    )
}

fn kind_for_deleted(kind: Kind) -> Kind {
    match kind {
        Kind::InsertExists => Kind::InsertExists,
        _ => Kind::UpdateDelete,
    }
}
