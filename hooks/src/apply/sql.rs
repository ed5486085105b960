//! The SQL the apply worker runs for a remote row change, with the row's values as parameters
//! of type `unknown` (resolved against the local columns like string literals).

use spock_proto::{Column, Value};

/// A relation as the provider described it.
#[derive(Debug, Clone)]
pub struct RemoteRel {
    pub nspname: String,
    pub relname: String,
    pub columns: Vec<Column>,
    /// The local type of each column (same order as `columns`), as SQL text.
    pub local_types: Vec<String>,
    /// … and their oids.
    pub local_type_oids: Vec<u32>,
    /// The local table's oid (tombstones are kept by it).
    pub local_relid: u32,
    /// Positions in `columns` of the local replica-identity index's columns, in index order:
    /// the row key of tombstones (empty when the local table has no such index).
    pub key: Vec<usize>,
    /// Delta-apply columns (attribute option `delta_apply_function`).
    pub delta: Vec<DeltaColumn>,
}

/// A delta-apply column: its position in `columns` and the function that merges (old, new,
/// local) values, by qualified name and oid.
#[derive(Debug, Clone)]
pub struct DeltaColumn {
    pub col: usize,
    pub func: String,
    pub oid: u32,
}

/// A locked local row: the xmin of its version, the table (partition) holding it and its
/// ctid there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowAt {
    pub xmin: u32,
    pub table: String,
    pub ctid: String,
}

impl RowAt {
    /// Reads `lock_row`'s answer: `xmin tableoid ctid`.
    pub fn parse(text: &str) -> Option<RowAt> {
        let mut parts = text.splitn(3, ' ');
        Some(RowAt {
            xmin: parts.next()?.parse().ok()?,
            table: parts.next()?.to_string(),
            ctid: parts.next()?.to_string(),
        })
    }
}

/// A statement and its parameters (`None` is NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Option<String>>,
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

impl RemoteRel {
    fn table(&self) -> String {
        format!("{}.{}", ident(&self.nspname), ident(&self.relname))
    }

    fn check(&self, values: &[Value]) -> Result<(), String> {
        if values.len() != self.columns.len() {
            return Err(format!(
                "tuple for {}.{} has {} columns, its RELATION message {}",
                self.nspname,
                self.relname,
                values.len(),
                self.columns.len()
            ));
        }
        Ok(())
    }

    /// `key = $n AND …` over the replica-identity columns of `values`.
    fn key_filter(
        &self,
        values: &[Value],
        params: &mut Vec<Option<String>>,
    ) -> Result<String, String> {
        let mut parts = Vec::new();
        for (c, v) in self.columns.iter().zip(values) {
            if !c.key {
                continue;
            }
            match param(v)? {
                // Equal rows of a table without a key may hold NULLs.
                Some(None) => parts.push(format!("{} IS NULL", ident(&c.name))),
                Some(p) => {
                    params.push(p);
                    parts.push(format!(
                        "{} = {}",
                        ident(&c.name),
                        self.placeholder(c, params.len())
                    ));
                }
                None => {
                    return Err(format!(
                        "replica identity column {} is unchanged-TOAST",
                        c.name
                    ));
                }
            }
        }
        if parts.is_empty() {
            return Err(format!(
                "{}.{} has no replica identity columns",
                self.nspname, self.relname
            ));
        }
        Ok(parts.join(" AND "))
    }

    /// `$n::type` for column `c`.
    fn placeholder(&self, c: &Column, n: usize) -> String {
        let i = self
            .columns
            .iter()
            .position(|x| x.name == c.name)
            .expect("own column");
        format!("${n}::{}", self.local_types[i])
    }

    pub fn insert(&self, new: &[Value]) -> Result<Statement, String> {
        self.check(new)?;
        let mut cols = Vec::new();
        let mut params = Vec::new();
        let mut placeholders = Vec::new();
        for (c, v) in self.columns.iter().zip(new) {
            if let Some(p) = param(v)? {
                cols.push(ident(&c.name));
                params.push(p);
                placeholders.push(self.placeholder(c, params.len()));
            }
        }
        Ok(Statement {
            sql: format!(
                "INSERT INTO {} ({}) VALUES ({})",
                self.table(),
                cols.join(", "),
                placeholders.join(", ")
            ),
            params,
        })
    }

    /// `SET col = $n, …` of the sendable values of `new` (all columns, or only the delta
    /// columns' merges when the remote write lost), and `WHERE` the row at `at`.
    fn update_at_with(
        &self,
        at: &RowAt,
        old: Option<&[Value]>,
        new: &[Value],
        wins: bool,
    ) -> Result<Statement, String> {
        self.check(new)?;
        if let Some(old) = old {
            self.check(old)?;
        }
        let mut params = Vec::new();
        let mut sets = Vec::new();
        for (i, (c, v)) in self.columns.iter().zip(new).enumerate() {
            let delta = old.and_then(|old| self.delta_of(i, old));
            if delta.is_none() && !wins {
                continue;
            }
            let Some(p) = param(v)? else { continue };
            params.push(p);
            let new_value = self.placeholder(c, params.len());
            let col = ident(&c.name);
            match (delta, old) {
                (Some(f), Some(old)) => {
                    params.push(param(&old[i])?.flatten());
                    let old_value = self.placeholder(c, params.len());
                    sets.push(format!("{col} = {f}({old_value}, {new_value}, {col})"));
                }
                _ => sets.push(format!("{col} = {new_value}")),
            }
        }
        params.push(Some(at.table.clone()));
        params.push(Some(at.ctid.clone()));
        let n = params.len();
        Ok(Statement {
            sql: format!(
                "UPDATE {} SET {} WHERE tableoid = ${}::pg_catalog.oid AND ctid = ${n}::pg_catalog.tid",
                self.table(),
                sets.join(", "),
                n - 1
            ),
            params,
        })
    }

    /// The merge function of column `i` when it is a delta-apply column and `old` carries its
    /// old value.
    fn delta_of(&self, i: usize, old: &[Value]) -> Option<&str> {
        self.delta
            .iter()
            .find(|d| d.col == i)
            .filter(|_| matches!(old.get(i), Some(Value::Text(_))))
            .map(|d| d.func.as_str())
    }

    /// Whether an UPDATE with this old tuple merges delta-apply columns.
    pub fn merges_deltas(&self, old: Option<&[Value]>) -> bool {
        old.is_some_and(|old| (0..self.columns.len()).any(|i| self.delta_of(i, old).is_some()))
    }

    /// UPDATE of the (locked) row at `at` with a remote write that won: every sendable column
    /// takes its new value, except delta-apply columns with an old value, which take
    /// `f(old, new, local)` (concurrent increments on different nodes all count).
    pub fn update_at(
        &self,
        at: &RowAt,
        old: Option<&[Value]>,
        new: &[Value],
    ) -> Result<Statement, String> {
        self.update_at_with(at, old, new, true)
    }

    /// UPDATE of the (locked) row at `at` with a remote write that lost: only the delta-apply
    /// columns merge; `None` when there is none to merge.
    pub fn merge_deltas_at(
        &self,
        at: &RowAt,
        old: Option<&[Value]>,
        new: &[Value],
    ) -> Result<Option<Statement>, String> {
        if !self.merges_deltas(old) {
            return Ok(None);
        }
        self.update_at_with(at, old, new, false).map(Some)
    }

    /// DELETE of the (locked) row at `at`.
    pub fn delete_at(&self, at: &RowAt) -> Statement {
        Statement {
            sql: format!(
                "DELETE FROM {} WHERE tableoid = $1::pg_catalog.oid AND ctid = $2::pg_catalog.tid",
                self.table()
            ),
            params: vec![Some(at.table.clone()), Some(at.ctid.clone())],
        }
    }

    pub fn delete(&self, old: &[Value]) -> Result<Statement, String> {
        self.check(old)?;
        let mut params = Vec::new();
        let filter = self.key_filter(old, &mut params)?;
        Ok(Statement {
            sql: format!("DELETE FROM {} WHERE {filter}", self.table()),
            params,
        })
    }

    /// INSERT that does nothing when a unique index already holds the row.
    pub fn insert_or_skip(&self, new: &[Value]) -> Result<Statement, String> {
        let mut s = self.insert(new)?;
        s.sql.push_str(" ON CONFLICT DO NOTHING");
        Ok(s)
    }

    /// Locks one local row with the key of `values` (for a table without a key: one row equal
    /// to them, as core's apply does) and returns where it is (see `RowAt::parse`).
    pub fn lock_row(&self, values: &[Value]) -> Result<Statement, String> {
        self.check(values)?;
        let mut params = Vec::new();
        let filter = self.key_filter(values, &mut params)?;
        Ok(Statement {
            sql: format!(
                "SELECT xmin::text || ' ' || tableoid::text || ' ' || ctid::text FROM {} \
                 WHERE {filter} LIMIT 1 FOR UPDATE",
                self.table()
            ),
            params,
        })
    }

    /// The local row with the key of `values` as JSON (for conflict reports).
    pub fn row_json(&self, values: &[Value]) -> Result<Statement, String> {
        self.check(values)?;
        let mut params = Vec::new();
        let filter = self.key_filter(values, &mut params)?;
        Ok(Statement {
            sql: format!(
                "SELECT row_to_json(t)::text FROM {} t WHERE {filter}",
                self.table()
            ),
            params,
        })
    }

    /// `values` as a JSON object of text values (unchanged TOAST values left out).
    pub fn tuple_json(&self, values: &[Value]) -> String {
        let mut out = String::from("{");
        for (c, v) in self.columns.iter().zip(values) {
            let value = match v {
                Value::Null => "null".to_string(),
                Value::Text(t) => json_string(&String::from_utf8_lossy(t)),
                _ => continue,
            };
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(&json_string(&c.name));
            out.push(':');
            out.push_str(&value);
        }
        out.push('}');
        out
    }

    /// Whether a key column has a type of a user's (oid past the built-in range): its input
    /// function can run user code (a domain's CHECK), so the tombstone key must be computed
    /// with the table owner's rights (`key_bytes`), not inside spock's own statements.
    pub fn user_typed_key(&self) -> bool {
        self.key
            .iter()
            .any(|&i| self.local_type_oids[i] >= pgrx::pg_sys::FirstNormalObjectId)
    }

    /// The key columns of `values` with their local types, as `$n::type` placeholders after
    /// `params`' current ones.
    fn key_row(
        &self,
        values: &[Value],
        params: &mut Vec<Option<String>>,
    ) -> Result<String, String> {
        self.check(values)?;
        if self.key.is_empty() {
            return Err(format!(
                "{}.{} has no replica identity index",
                self.nspname, self.relname
            ));
        }
        let mut parts = Vec::new();
        for &i in &self.key {
            match param(&values[i])? {
                Some(p) => {
                    params.push(p);
                    parts.push(format!("${}::{}", params.len(), self.local_types[i]));
                }
                None => {
                    return Err(format!(
                        "key column {} is unchanged-TOAST",
                        self.columns[i].name
                    ));
                }
            }
        }
        Ok(format!("pg_catalog.record_send(ROW({}))", parts.join(", ")))
    }

    /// The tombstone key of `values` (a `bytea` as text), to run with the owner's rights.
    pub fn key_bytes(&self, values: &[Value]) -> Result<Statement, String> {
        let mut params = Vec::new();
        let key = self.key_row(values, &mut params)?;
        Ok(Statement {
            sql: format!("SELECT {key}::text"),
            params,
        })
    }

    /// `record_send(ROW(…))` of `values`' key, in the same form the local delete trigger
    /// (`spock.tombstone_trigger`) writes, after `$1` (the relation); `key` is that key when
    /// `key_bytes` computed it already.
    fn tombstone_key(
        &self,
        values: &[Value],
        key: Option<&str>,
    ) -> Result<(String, Vec<Option<String>>), String> {
        let mut params = vec![Some(self.local_relid.to_string())];
        match key {
            Some(k) => {
                self.key_row(values, &mut Vec::new())?;
                params.push(Some(k.to_string()));
                Ok(("$2::pg_catalog.bytea".into(), params))
            }
            None => Ok((self.key_row(values, &mut params)?, params)),
        }
    }

    /// Locks the row's tombstone, if any, and returns its xmin (the deleting transaction).
    pub fn lock_tombstone(&self, values: &[Value], key: Option<&str>) -> Result<Statement, String> {
        let (key, params) = self.tombstone_key(values, key)?;
        Ok(Statement {
            sql: format!(
                "SELECT xmin::text FROM spock.tombstones WHERE relid = $1::oid AND key = {key} FOR UPDATE"
            ),
            params,
        })
    }

    /// Records (or renews) the row's tombstone with the applying transaction's version.
    pub fn write_tombstone(
        &self,
        values: &[Value],
        key: Option<&str>,
    ) -> Result<Statement, String> {
        let (key, params) = self.tombstone_key(values, key)?;
        Ok(Statement {
            sql: format!(
                "INSERT INTO spock.tombstones (relid, key) VALUES ($1::oid, {key}) \
                 ON CONFLICT (relid, key) DO UPDATE SET relid = EXCLUDED.relid"
            ),
            params,
        })
    }

    pub fn drop_tombstone(&self, values: &[Value], key: Option<&str>) -> Result<Statement, String> {
        let (key, params) = self.tombstone_key(values, key)?;
        Ok(Statement {
            sql: format!("DELETE FROM spock.tombstones WHERE relid = $1::oid AND key = {key}"),
            params,
        })
    }

    /// Finds and locks the rows older than their own tombstone (the rare race where a local
    /// transaction deleted or inserted a row while this worker applied a change of it); the
    /// first column is their ctids as a `tid[]` literal (NULL when there are none).
    pub fn reconcile_find(&self) -> Option<Statement> {
        if self.key.is_empty() {
            return None;
        }
        let cols: Vec<String> = self
            .key
            .iter()
            .map(|&i| format!("t.{}", ident(&self.columns[i].name)))
            .collect();
        Some(Statement {
            sql: format!(
                "WITH lost AS (SELECT t.ctid FROM {} t JOIN spock.tombstones tb \
                 ON tb.relid = $1::oid AND tb.key = pg_catalog.record_send(ROW({})) \
                 WHERE spock.apply_local_newer(tb.xmin, t.xmin) FOR UPDATE OF t) \
                 SELECT pg_catalog.array_agg(ctid)::text FROM lost",
                self.table(),
                cols.join(", ")
            ),
            params: vec![Some(self.local_relid.to_string())],
        })
    }

    /// Deletes the rows `reconcile_find` found (`ctids`: its `tid[]` literal).
    pub fn reconcile_delete(&self, ctids: String) -> Statement {
        Statement {
            sql: format!(
                "DELETE FROM {} WHERE ctid = ANY ($1::pg_catalog.tid[])",
                self.table()
            ),
            params: vec![Some(ctids)],
        }
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `Some(param)` for a sendable value, `None` for an unchanged TOAST value (left alone).
fn param(v: &Value) -> Result<Option<Option<String>>, String> {
    match v {
        Value::Null => Ok(Some(None)),
        Value::UnchangedToast => Ok(None),
        Value::Text(t) => String::from_utf8(t.clone())
            .map(|s| Some(Some(s)))
            .map_err(|_| "text value is not UTF-8".to_string()),
        Value::Binary(_) | Value::Internal(_) => Err(
            "binary values are not supported by this apply worker; the stream must use text".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel() -> RemoteRel {
        let col = |name: &str, key: bool| Column {
            key,
            name: name.into(),
            type_oid: 25,
            typmod: -1,
        };
        RemoteRel {
            nspname: "public".into(),
            relname: "T\"x".into(),
            columns: vec![col("id", true), col("v", false), col("big", false)],
            local_types: vec!["integer".into(), "text".into(), "bytea".into()],
            local_type_oids: vec![23, 25, 17],
            local_relid: 16384,
            key: vec![0],
            delta: Vec::new(),
        }
    }

    fn t(s: &str) -> Value {
        Value::Text(s.as_bytes().to_vec())
    }

    #[test]
    fn insert_skips_nothing_but_unchanged_toast() {
        let s = rel().insert(&[t("1"), Value::Null, t("b")]).unwrap();
        assert_eq!(
            s.sql,
            "INSERT INTO \"public\".\"T\"\"x\" (\"id\", \"v\", \"big\") VALUES ($1::integer, $2::text, $3::bytea)"
        );
        assert_eq!(s.params, vec![Some("1".into()), None, Some("b".into())]);
    }

    fn at() -> RowAt {
        RowAt::parse("742 16384 (0,3)").unwrap()
    }

    #[test]
    fn updates_address_the_locked_row_and_keep_unchanged_toast() {
        assert_eq!(
            at(),
            RowAt {
                xmin: 742,
                table: "16384".into(),
                ctid: "(0,3)".into()
            }
        );
        let s = rel()
            .update_at(
                &at(),
                Some(&[t("1"), Value::Null, Value::Null]),
                &[t("2"), t("a"), Value::UnchangedToast],
            )
            .unwrap();
        assert_eq!(
            s.sql,
            "UPDATE \"public\".\"T\"\"x\" SET \"id\" = $1::integer, \"v\" = $2::text \
             WHERE tableoid = $3::pg_catalog.oid AND ctid = $4::pg_catalog.tid"
        );
        assert_eq!(
            s.params,
            vec![
                Some("2".into()),
                Some("a".into()),
                Some("16384".into()),
                Some("(0,3)".into())
            ]
        );
        let d = rel().delete_at(&at());
        assert!(
            d.sql
                .ends_with("WHERE tableoid = $1::pg_catalog.oid AND ctid = $2::pg_catalog.tid")
        );
    }

    #[test]
    fn rows_are_locked_by_key_or_whole_with_nulls() {
        let s = rel().lock_row(&[t("7"), Value::Null, Value::Null]).unwrap();
        assert_eq!(
            s.sql,
            "SELECT xmin::text || ' ' || tableoid::text || ' ' || ctid::text FROM \"public\".\"T\"\"x\" \
             WHERE \"id\" = $1::integer LIMIT 1 FOR UPDATE"
        );
        // A table without a key: every column is compared, a NULL as IS NULL.
        let mut r = rel();
        r.key.clear();
        for c in &mut r.columns {
            c.key = true;
        }
        let s = r.lock_row(&[t("7"), Value::Null, t("b")]).unwrap();
        assert!(
            s.sql.ends_with(
                "WHERE \"id\" = $1::integer AND \"v\" IS NULL AND \"big\" = $2::bytea LIMIT 1 FOR UPDATE"
            ),
            "{}",
            s.sql
        );
        assert_eq!(s.params, vec![Some("7".into()), Some("b".into())]);
    }

    #[test]
    fn delete_by_key_and_bad_tuples() {
        let s = rel().delete(&[t("7"), Value::Null, Value::Null]).unwrap();
        assert_eq!(
            s.sql,
            "DELETE FROM \"public\".\"T\"\"x\" WHERE \"id\" = $1::integer"
        );
        assert!(
            rel()
                .delete(&[t("7")])
                .unwrap_err()
                .contains("has 1 columns")
        );
        assert!(
            rel()
                .insert(&[Value::Binary(vec![1]), Value::Null, Value::Null])
                .is_err()
        );
    }

    #[test]
    fn tombstones_use_the_local_key_in_index_order() {
        let mut r = rel();
        r.key = vec![1, 0];
        let s = r
            .lock_tombstone(&[t("7"), t("a"), Value::Null], None)
            .unwrap();
        assert_eq!(
            s.sql,
            "SELECT xmin::text FROM spock.tombstones WHERE relid = $1::oid AND key = pg_catalog.record_send(ROW($2::text, $3::integer)) FOR UPDATE"
        );
        assert_eq!(
            s.params,
            vec![Some("16384".into()), Some("a".into()), Some("7".into())]
        );
        let w = r
            .write_tombstone(&[t("7"), t("a"), Value::Null], None)
            .unwrap();
        let k = r
            .drop_tombstone(&[t("7"), t("a"), Value::Null], Some("\\x01"))
            .unwrap();
        assert_eq!(
            k.sql,
            "DELETE FROM spock.tombstones WHERE relid = $1::oid AND key = $2::pg_catalog.bytea"
        );
        assert_eq!(k.params, vec![Some("16384".into()), Some("\\x01".into())]);
        assert!(
            w.sql.contains("ON CONFLICT (relid, key) DO UPDATE"),
            "{}",
            w.sql
        );
        r.key.clear();
        assert!(
            r.drop_tombstone(&[t("7"), t("a"), Value::Null], None)
                .is_err()
        );
        assert!(r.reconcile_find().is_none());
    }

    #[test]
    fn tuples_as_json() {
        let j = rel().tuple_json(&[t("1"), Value::Null, t("a\"b\\\n")]);
        assert_eq!(j, r#"{"id":"1","v":null,"big":"a\"b\\\u000a"}"#);
    }

    #[test]
    fn conditional_and_reconciling_statements() {
        let s = rel().insert_or_skip(&[t("1"), t("a"), t("b")]).unwrap();
        assert!(s.sql.ends_with("ON CONFLICT DO NOTHING"));
        let s = rel().reconcile_find().unwrap();
        assert!(s.sql.contains("record_send(ROW(t.\"id\"))"), "{}", s.sql);
        let d = rel().reconcile_delete("{\"(0,1)\"}".into());
        assert_eq!(
            d.sql,
            "DELETE FROM \"public\".\"T\"\"x\" WHERE ctid = ANY ($1::pg_catalog.tid[])"
        );
    }

    #[test]
    fn delta_columns_merge_and_the_rest_follow_last_update_wins() {
        let mut r = rel();
        let old = [t("1"), t("5"), Value::Null];
        let new = [t("1"), t("6"), t("x")];
        assert!(!r.merges_deltas(Some(&old)));
        assert_eq!(r.merge_deltas_at(&at(), Some(&old), &new).unwrap(), None);
        r.delta = vec![DeltaColumn {
            col: 1,
            func: "spock.delta_apply".into(),
            oid: 0,
        }];
        // No old value for the delta column: nothing to merge.
        let no_old = [t("1"), Value::Null, Value::Null];
        assert!(!r.merges_deltas(Some(&no_old)));
        assert!(!r.merges_deltas(None));
        // The remote write won: the delta column merges, the others take their new values.
        let s = r.update_at(&at(), Some(&old), &new).unwrap();
        assert_eq!(
            s.sql,
            "UPDATE \"public\".\"T\"\"x\" SET \"id\" = $1::integer, \
             \"v\" = spock.delta_apply($3::text, $2::text, \"v\"), \"big\" = $4::bytea \
             WHERE tableoid = $5::pg_catalog.oid AND ctid = $6::pg_catalog.tid"
        );
        assert_eq!(
            s.params,
            vec![
                Some("1".into()),
                Some("6".into()),
                Some("5".into()),
                Some("x".into()),
                Some("16384".into()),
                Some("(0,3)".into())
            ]
        );
        // It lost: only the delta column merges.
        let s = r.merge_deltas_at(&at(), Some(&old), &new).unwrap().unwrap();
        assert_eq!(
            s.sql,
            "UPDATE \"public\".\"T\"\"x\" SET \"v\" = spock.delta_apply($2::text, $1::text, \"v\") \
             WHERE tableoid = $3::pg_catalog.oid AND ctid = $4::pg_catalog.tid"
        );
    }
}
