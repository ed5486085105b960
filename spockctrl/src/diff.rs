//! `spockctrl table-diff`: compares a table across nodes without pulling it whole. The primary
//! key space is cut into ranges (boundaries sampled from one node); every node hashes each
//! range's rows, all nodes at once; only ranges whose count or hash differ are cut further (with
//! keys of the node holding most rows there), down to a few rows, and only those rows are
//! fetched and compared. Memory holds range hashes and the differing rows, never the
//! table. Each difference carries every node's version with its commit timestamp and origin.

use crate::{
    config::NodeConf,
    ctx::{Ctx, Outcome, connect},
    output::{Progress, Rows},
    pq::Conn,
};
use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Map, Value, json};
use std::{
    collections::HashMap,
    sync::atomic::{AtomicUsize, Ordering},
};

#[derive(Args, Debug, Clone)]
pub struct DiffArgs {
    /// The table (schema.table; search_path applies otherwise).
    pub table: String,
    /// Nodes to compare (default: all configured).
    #[arg(long, value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// Rows per first-level range.
    #[arg(long, default_value_t = 10_000)]
    pub block_rows: u64,
    /// Ranges of at most this many rows are compared row by row.
    #[arg(long, default_value_t = 100)]
    pub unit_rows: u64,
    /// Stop collecting after this many differences (memory stays bounded).
    #[arg(long, default_value_t = 10_000)]
    pub max_diffs: usize,
}

/// Column layout, the same on every node (checked).
#[derive(Debug, Clone)]
pub struct Table {
    /// `schema.table`, quoted as needed.
    pub name: String,
    /// (name, SQL type) of every column, in the first node's order.
    pub columns: Vec<(String, String)>,
    /// Columns the server computes (left out of inserts and updates).
    pub generated: Vec<String>,
    /// (name, SQL type) of the primary key columns, in key order.
    pub key: Vec<(String, String)>,
    /// Per key column: whether it has a collation (text-like). Those are ordered bytewise
    /// (`COLLATE "C"`) in every range query: cut points are chosen on one node and applied on
    /// the others, which may sort by another collation (or another glibc/ICU version of the
    /// same one), and a row would then fall in different ranges on different nodes.
    pub collated: Vec<bool>,
}

pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

impl Table {
    /// Key column `j` of `_r` as range queries compare and order it.
    fn key_expr(&self, j: usize) -> String {
        let col = format!("_r.{}", ident(&self.key[j].0));
        if self.collated.get(j).copied().unwrap_or(false) {
            format!("{col} COLLATE \"C\"")
        } else {
            col
        }
    }

    fn key_list(&self) -> String {
        (0..self.key.len())
            .map(|j| self.key_expr(j))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The row as canonical text: the columns in one agreed order, whatever each node's.
    pub fn row_text(&self) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|(c, _)| format!("_r.{}", ident(c)))
            .collect();
        format!("ROW({})::text", cols.join(", "))
    }

    /// `WHERE` of a range; parameters start at `$first`. Returns (clause, params).
    pub fn range_clause(&self, r: &Range, first: usize) -> (String, Vec<String>) {
        let mut conds = Vec::new();
        let mut params = Vec::new();
        let keys = format!("({})", self.key_list());
        for (bound, op) in [(&r.lo, ">="), (&r.hi, "<")] {
            if let Some(b) = bound {
                let ph: Vec<String> = self
                    .key
                    .iter()
                    .zip(b)
                    .map(|((_, ty), v)| {
                        params.push(v.clone());
                        format!("${}::{ty}", first + params.len() - 1)
                    })
                    .collect();
                conds.push(format!("{keys} {op} ({})", ph.join(", ")));
            }
        }
        if conds.is_empty() {
            ("true".into(), params)
        } else {
            (conds.join(" AND "), params)
        }
    }
}

/// A half-open key range `[lo, hi)`; `None` is unbounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub lo: Option<Vec<String>>,
    pub hi: Option<Vec<String>>,
}

/// The cut points of `range` that start a new part: without one equal to the range's lower
/// bound or to the cut before it (either would make an empty part). Both the ranges (`cut`)
/// and the bucket hashes (`bucket_sql`, one part per cut plus one) are built from this list,
/// so the n-th hash is always the n-th range's.
pub fn clean_cuts(range: &Range, cuts: Vec<Vec<String>>) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    for c in cuts {
        if out.last().or(range.lo.as_ref()) != Some(&c) {
            out.push(c);
        }
    }
    out
}

/// Consecutive ranges covering `[lo, hi)` cut at `cuts` (ascending, inside the range): one
/// more than `clean_cuts` keeps.
pub fn cut(range: &Range, cuts: Vec<Vec<String>>) -> Vec<Range> {
    let mut out = Vec::new();
    let mut lo = range.lo.clone();
    for c in clean_cuts(range, cuts) {
        out.push(Range {
            lo: lo.clone(),
            hi: Some(c.clone()),
        });
        lo = Some(c);
    }
    out.push(Range {
        lo,
        hi: range.hi.clone(),
    });
    out
}

/// One node's version of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Canonical row text (what is compared).
    pub text: String,
    /// The row as a JSON object (what is shown and what a repair writes).
    pub json: String,
    pub commit_ts: Option<String>,
    pub origin: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Difference {
    /// Key values as text, in key column order.
    pub key: Vec<String>,
    /// One entry per compared node (same order); `None` where the row is missing.
    pub versions: Vec<Option<Version>>,
}

pub struct Report {
    pub table: Table,
    pub nodes: Vec<String>,
    /// Rows per node.
    pub rows: Vec<i64>,
    pub diffs: Vec<Difference>,
    pub truncated: bool,
}

/// Only the rows of versions that are not all equal (and present everywhere) are differences.
pub fn merge(nodes: usize, fetched: Vec<Vec<(Vec<String>, Version)>>) -> Vec<Difference> {
    let mut order: Vec<Vec<String>> = Vec::new();
    let mut by_key: HashMap<Vec<String>, Vec<Option<Version>>> = HashMap::new();
    for (i, rows) in fetched.into_iter().enumerate() {
        for (key, v) in rows {
            let slot = by_key.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                vec![None; nodes]
            });
            slot[i] = Some(v);
        }
    }
    order
        .into_iter()
        .filter_map(|key| {
            let versions = by_key.remove(&key)?;
            let first = versions[0].as_ref().map(|v| &v.text);
            let same = versions
                .iter()
                .all(|v| v.is_some() && v.as_ref().map(|v| &v.text) == first);
            (!same).then_some(Difference { key, versions })
        })
        .collect()
}

const COLUMNS_SQL: &str = "\
    SELECT format('%I.%I', n.nspname, c.relname), a.attname::text, \
           format_type(a.atttypid, a.atttypmod), \
           (SELECT k.ord::text FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(attnum, ord) \
             WHERE i.indrelid = c.oid AND i.indisprimary AND k.attnum = a.attnum), \
           a.attgenerated::text, (a.attcollation <> 0)::text \
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
      JOIN pg_attribute a ON a.attrelid = c.oid \
     WHERE c.oid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped \
     ORDER BY a.attnum";

fn table_on(conn: &mut Conn, table: &str) -> Result<Table> {
    let rows = conn
        .query(COLUMNS_SQL, &[Some(table)])
        .with_context(|| format!("table {table} on node {}", conn.label()))?;
    let mut t = Table {
        name: String::new(),
        columns: Vec::new(),
        generated: Vec::new(),
        key: Vec::new(),
        collated: Vec::new(),
    };
    let mut key: Vec<(i32, String, String, bool)> = Vec::new();
    for r in rows.rows {
        let get = |i: usize| r[i].clone().unwrap_or_default();
        t.name = get(0);
        let (col, ty) = (get(1), get(2));
        if let Some(ord) = &r[3] {
            key.push((
                ord.parse().unwrap_or(0),
                col.clone(),
                ty.clone(),
                get(5) == "true",
            ));
        }
        if !get(4).is_empty() {
            t.generated.push(col.clone());
        }
        t.columns.push((col, ty));
    }
    key.sort();
    t.collated = key.iter().map(|k| k.3).collect();
    t.key = key.into_iter().map(|(_, c, ty, _)| (c, ty)).collect();
    if t.key.is_empty() {
        bail!(
            "table {} on node {} has no primary key; table-diff compares rows by primary key",
            t.name,
            conn.label()
        );
    }
    Ok(t)
}

/// The columns must match by name and type on every node; the order may differ.
fn same_layout(a: &Table, b: &Table, an: &str, bn: &str) -> Result<()> {
    let mut ca = a.columns.clone();
    let mut cb = b.columns.clone();
    ca.sort();
    cb.sort();
    if ca != cb || a.key != b.key {
        let show = |t: &Table| {
            t.columns
                .iter()
                .map(|(c, ty)| format!("{c} {ty}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        bail!(
            "{} has different columns or keys on {an} ({}) and {bn} ({})",
            a.name,
            show(a),
            show(b)
        );
    }
    Ok(())
}

/// Per node: a connection, and whether commit timestamps are recorded there.
struct NodeConn {
    conn: Conn,
    commit_ts: bool,
    /// Whether spock's catalog is there to name origins by node.
    spock: bool,
}

fn hash_sql(t: &Table, r: &Range) -> (String, Vec<String>) {
    let (w, params) = t.range_clause(r, 1);
    (
        // A 64-bit hash of each row's text, summed and xor-ed: no sort and no long string per
        // range (a range is defined by its keys, so order does not matter), and a changed row
        // changes both unless two changes cancel exactly in both (about 2^-64).
        format!(
            "SELECT {HASH} FROM (SELECT hashtextextended({}, 0) AS h FROM {} _r WHERE {w}) _h",
            t.row_text(),
            t.name
        ),
        params,
    )
}

/// A range's row count and hash (`None` when empty).
type RangeHash = (i64, Option<String>);

/// A text array literal of single-column keys.
fn key_array(keys: &[Vec<String>]) -> String {
    let items: Vec<String> = keys
        .iter()
        .map(|k| format!("\"{}\"", k[0].replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", items.join(","))
}

/// Single-column keys: one query per range reads its rows once (one pass over the table in
/// the first round) and hashes every part, the part found by `width_bucket` over the cut
/// points (part i holds keys from cut i to cut i+1, as `cut` makes them).
fn bucket_sql(t: &Table, r: &Range, cuts: &[Vec<String>]) -> (String, Vec<String>) {
    let (w, mut params) = t.range_clause(r, 2);
    let (k, ty) = &t.key[0];
    // Buckets in the same bytewise order as the ranges (see `Table::collated`).
    let collate = if t.collated.first().copied().unwrap_or(false) {
        " COLLATE \"C\""
    } else {
        ""
    };
    params.insert(0, key_array(cuts));
    (
        format!(
            "SELECT width_bucket(_h.k{collate}, $1::{ty}[])::text, {HASH} FROM \
             (SELECT _r.{} AS k, hashtextextended({}, 0) AS h FROM {} _r WHERE {w}) _h GROUP BY 1",
            ident(k),
            t.row_text(),
            t.name
        ),
        params,
    )
}

/// Waits for one worker per node, showing `label(done so far)` meanwhile.
fn join_workers<T>(
    handles: Vec<std::thread::ScopedJoinHandle<'_, Result<T>>>,
    progress: &mut Progress,
    label: impl Fn(usize) -> String,
    done: &AtomicUsize,
) -> Result<Vec<T>> {
    while !handles.iter().all(|h| h.is_finished()) {
        progress.show(&label(done.load(Ordering::Relaxed)));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("worker panicked")))
        })
        .collect()
}

/// Hashes of every part of every group, on every node at once (single-column keys).
fn hash_groups(
    conns: &mut [NodeConn],
    t: &Table,
    groups: &[(Range, Vec<Vec<String>>)],
    progress: &mut Progress,
    what: &str,
) -> Result<Vec<Vec<RangeHash>>> {
    let done = AtomicUsize::new(0);
    let total = groups.len() * conns.len();
    std::thread::scope(|s| {
        let handles: Vec<_> = conns
            .iter_mut()
            .map(|nc| {
                let done = &done;
                s.spawn(move || -> Result<Vec<RangeHash>> {
                    let mut out = Vec::new();
                    for (r, cuts) in groups {
                        let mut parts = vec![(0i64, None); cuts.len() + 1];
                        let (sql, params) = if cuts.is_empty() {
                            hash_sql(t, r)
                        } else {
                            bucket_sql(t, r, cuts)
                        };
                        let refs: Vec<Option<&str>> =
                            params.iter().map(|p| Some(p.as_str())).collect();
                        for row in nc.conn.query(&sql, &refs)?.rows {
                            let (b, n, h) = if cuts.is_empty() {
                                (0, row[0].clone(), row[1].clone())
                            } else {
                                let b: usize =
                                    row[0].as_deref().unwrap_or("0").parse().unwrap_or(0);
                                (b, row[1].clone(), row[2].clone())
                            };
                            let n = n.as_deref().unwrap_or("0").parse().unwrap_or(0);
                            if let Some(p) = parts.get_mut(b) {
                                *p = (n, if n == 0 { None } else { h });
                            }
                        }
                        out.extend(parts);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(out)
                })
            })
            .collect();
        join_workers(
            handles,
            progress,
            |n| format!("{what}: {n}/{total} ranges"),
            &done,
        )
    })
}

/// Ranges hashed per query.
const BATCH: usize = 100;

/// The per-range hash expression over `_r` (see `hash_sql`).
const HASH: &str = "count(*)::text, sum(h)::text || ':' || bit_xor(h)::text";

/// One query hashing several ranges bounded on both sides: their bounds are rows of a VALUES
/// list, each range's rows found through the key index by a lateral subquery. Returns rows
/// (position in `ranges`, count, hash).
fn hash_batch_sql(t: &Table, ranges: &[&Range]) -> (String, Vec<String>) {
    let k = t.key.len();
    let mut params = Vec::new();
    let mut values = Vec::new();
    for (i, r) in ranges.iter().enumerate() {
        let mut cells = vec![i.to_string()];
        for bound in [&r.lo, &r.hi] {
            for ((_, ty), v) in t.key.iter().zip(bound.as_ref().expect("bounded range")) {
                params.push(v.clone());
                cells.push(format!("${}::{ty}", params.len()));
            }
        }
        values.push(format!("({})", cells.join(", ")));
    }
    let lo: Vec<String> = (0..k).map(|j| format!("_v.l{j}")).collect();
    let hi: Vec<String> = (0..k).map(|j| format!("_v.h{j}")).collect();
    let cols: Vec<String> = std::iter::once("i".to_string())
        .chain((0..k).map(|j| format!("l{j}")))
        .chain((0..k).map(|j| format!("h{j}")))
        .collect();
    let keys = format!("({})", t.key_list());
    (
        format!(
            "SELECT _v.i::text, _x.* FROM (VALUES {}) _v({}) CROSS JOIN LATERAL \
             (SELECT {HASH} FROM (SELECT hashtextextended({}, 0) AS h FROM {} _r \
               WHERE {keys} >= ({}) AND {keys} < ({})) _h) _x ORDER BY _v.i",
            values.join(", "),
            cols.join(", "),
            t.row_text(),
            t.name,
            lo.join(", "),
            hi.join(", ")
        ),
        params,
    )
}

fn hash_ranges(
    conns: &mut [NodeConn],
    t: &Table,
    ranges: &[Range],
    progress: &mut Progress,
    what: &str,
) -> Result<Vec<Vec<RangeHash>>> {
    let done = AtomicUsize::new(0);
    let total = ranges.len() * conns.len();
    std::thread::scope(|s| {
        let handles: Vec<_> = conns
            .iter_mut()
            .map(|nc| {
                let done = &done;
                s.spawn(move || -> Result<Vec<RangeHash>> {
                    let mut out = vec![(0, None); ranges.len()];
                    // Ranges bounded on both sides go in batches (one round trip and one plan
                    // for many small ranges); the two open-ended ones alone.
                    let (inner, edges): (Vec<usize>, Vec<usize>) = (0..ranges.len())
                        .partition(|&i| ranges[i].lo.is_some() && ranges[i].hi.is_some());
                    for i in edges {
                        let (sql, params) = hash_sql(t, &ranges[i]);
                        let refs: Vec<Option<&str>> =
                            params.iter().map(|p| Some(p.as_str())).collect();
                        let rows = nc.conn.query(&sql, &refs)?;
                        let row = &rows.rows[0];
                        out[i] = (
                            row[0].as_deref().unwrap_or("0").parse().unwrap_or(0),
                            row[1].clone(),
                        );
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    for batch in inner.chunks(BATCH) {
                        let chosen: Vec<&Range> = batch.iter().map(|&i| &ranges[i]).collect();
                        let (sql, params) = hash_batch_sql(t, &chosen);
                        let refs: Vec<Option<&str>> =
                            params.iter().map(|p| Some(p.as_str())).collect();
                        let rows = nc.conn.query(&sql, &refs)?;
                        for row in rows.rows {
                            let at: usize = row[0].as_deref().unwrap_or("0").parse().unwrap_or(0);
                            out[batch[at]] = (
                                row[1].as_deref().unwrap_or("0").parse().unwrap_or(0),
                                row[2].clone(),
                            );
                        }
                        done.fetch_add(batch.len(), Ordering::Relaxed);
                    }
                    Ok(out)
                })
            })
            .collect();
        join_workers(
            handles,
            progress,
            |n| format!("{what}: {n}/{total} range hashes"),
            &done,
        )
    })
}

/// First-level cut points: every `block`-th key of node 0, from one pass over its key index
/// (a page sample, `TABLESAMPLE SYSTEM`, clusters its keys in a few pages and gave ranges of very
/// uneven size).
fn first_cuts(nc: &mut NodeConn, t: &Table, block: u64) -> Result<Vec<Vec<String>>> {
    let est: f64 = nc
        .conn
        .value(
            "SELECT reltuples::text FROM pg_class WHERE oid = $1::regclass",
            &[Some(&t.name)],
        )?
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0);
    let keys_text: Vec<String> = t
        .key
        .iter()
        .map(|(c, _)| format!("_r.{}::text", ident(c)))
        .collect();
    let keys_text = keys_text.join(", ");
    if est >= 0.0 && est < block as f64 {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {keys_text} FROM (SELECT {}, row_number() OVER (ORDER BY {}) AS rn FROM {} _r) _r \
         WHERE rn % $1 = 0 ORDER BY {}",
        t.key_list(),
        t.key_list(),
        t.name,
        t.key_list()
    );
    Ok(key_rows(nc.conn.query(&sql, &[Some(&block.to_string())])?))
}

fn key_rows(rows: Rows) -> Vec<Vec<String>> {
    rows.rows
        .into_iter()
        .map(|r| r.into_iter().map(|v| v.unwrap_or_default()).collect())
        .collect()
}

/// Cut points splitting `r` into parts of about `unit` rows of those `nc` holds there (at most 64
/// parts, so a huge range takes another round rather than thousands of queries).
fn sub_cuts(
    nc: &mut NodeConn,
    t: &Table,
    r: &Range,
    rows: i64,
    unit: u64,
) -> Result<Vec<Vec<String>>> {
    let parts = (rows as f64 / unit.max(1) as f64).ceil().clamp(2.0, 64.0);
    let step = ((rows as f64) / parts).ceil().max(1.0) as i64;
    let (w, params) = t.range_clause(r, 2);
    let keys_text: Vec<String> = t
        .key
        .iter()
        .map(|(c, _)| format!("_r.{}::text", ident(c)))
        .collect();
    let sql = format!(
        "SELECT {} FROM (SELECT {}, row_number() OVER (ORDER BY {}) AS rn FROM {} _r WHERE {w}) _r \
         WHERE rn > 1 AND (rn - 1) % $1 = 0 ORDER BY {}",
        keys_text.join(", "),
        t.key_list(),
        t.key_list(),
        t.name,
        t.key_list()
    );
    let step = step.to_string();
    let mut refs: Vec<Option<&str>> = vec![Some(&step)];
    refs.extend(params.iter().map(|p| Some(p.as_str())));
    Ok(key_rows(nc.conn.query(&sql, &refs)?))
}

/// The origin node's name of a row version, from the commit's replication origin: none means
/// this node; a subscription's origin means its provider; a repair's origin names the node
/// whose version it copied.
const ORIGIN_SQL: &str = "\
    CASE WHEN _ct.roident IS NULL THEN NULL \
         WHEN _ct.roident = 0 THEN (SELECT n.node_name::text FROM spock.local_node l \
                                     JOIN spock.node n USING (node_id)) \
         ELSE coalesce((SELECT n.node_name::text FROM pg_replication_origin o \
                          JOIN spock.subscription s ON s.sub_slot_name = o.roname \
                          JOIN spock.node n ON n.node_id = s.sub_origin \
                         WHERE o.roident = _ct.roident), \
                       (SELECT substring(o.roname from '^spockctrl_repair_(.*)$') \
                          FROM pg_replication_origin o WHERE o.roident = _ct.roident), \
                       _ct.roident::text) END";

fn fetch_rows(nc: &mut NodeConn, t: &Table, r: &Range) -> Result<Vec<(Vec<String>, Version)>> {
    let (w, params) = t.range_clause(r, 1);
    let keys_text: Vec<String> = t
        .key
        .iter()
        .map(|(c, _)| format!("_r.{}::text", ident(c)))
        .collect();
    let (ts_join, ts, origin) = if nc.commit_ts {
        (
            "LEFT JOIN LATERAL pg_xact_commit_timestamp_origin(_r.xmin) _ct ON true",
            "_ct.timestamp::text",
            // Without spock, origins are shown as PostgreSQL's (0 is this node).
            if nc.spock {
                ORIGIN_SQL
            } else {
                "_ct.roident::text"
            },
        )
    } else {
        ("", "NULL::text", "NULL::text")
    };
    let sql = format!(
        "SELECT {}, {}, to_jsonb(_r)::text, {ts}, {origin} FROM {} _r {ts_join} WHERE {w} ORDER BY {}",
        keys_text.join(", "),
        t.row_text(),
        t.name,
        t.key_list()
    );
    let refs: Vec<Option<&str>> = params.iter().map(|p| Some(p.as_str())).collect();
    let k = t.key.len();
    Ok(nc
        .conn
        .query(&sql, &refs)?
        .rows
        .into_iter()
        .map(|mut row| {
            let rest = row.split_off(k);
            let key = row.into_iter().map(|v| v.unwrap_or_default()).collect();
            let mut rest = rest.into_iter();
            let mut next = || rest.next().flatten();
            let v = Version {
                text: next().unwrap_or_default(),
                json: next().unwrap_or_default(),
                commit_ts: next(),
                origin: next(),
            };
            (key, v)
        })
        .collect())
}

/// Runs the comparison on `nodes` (at least two).
pub fn compare(nodes: &[NodeConf], a: &DiffArgs) -> Result<Report> {
    if nodes.len() < 2 {
        bail!("table-diff needs at least two nodes");
    }
    let mut progress = Progress::new();
    let opened = crate::ctx::on_nodes(nodes, |n| {
        let mut conn = connect(n)?;
        let commit_ts = conn
            .value("SELECT current_setting('track_commit_timestamp')", &[])?
            .as_deref()
            == Some("on");
        conn.exec("SET statement_timeout = 0")?;
        // Every query of a node reads one snapshot: the ranges hashed, cut and fetched agree
        // with each other even while the table changes (a range hashed before a write and
        // fetched after it would otherwise show rows that match or miss at random). The nodes'
        // snapshots are still taken independently, so writes in flight between nodes show up
        // as differences (run it again, or on a quiet table). Read only: nothing is written.
        conn.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
        let spock = conn
            .value("SELECT to_regclass('spock.local_node') IS NOT NULL", &[])?
            .as_deref()
            == Some("t");
        Ok(NodeConn {
            conn,
            commit_ts,
            spock,
        })
    });
    let mut conns = Vec::new();
    for r in opened {
        conns.push(r?);
    }
    let tables: Vec<Table> = conns
        .iter_mut()
        .map(|nc| table_on(&mut nc.conn, &a.table))
        .collect::<Result<_>>()?;
    for (i, t) in tables.iter().enumerate().skip(1) {
        same_layout(&tables[0], t, &nodes[0].name, &nodes[i].name)?;
    }
    let t = tables[0].clone();
    if !conns.iter().all(|c| c.commit_ts) {
        crate::output::warn(
            "track_commit_timestamp is off on some node: versions show no commit time or origin",
        );
    }

    let cuts = first_cuts(&mut conns[0], &t, a.block_rows.max(1))?;
    // Each round hashes the parts of some ranges: (range, its cut points).
    let all = Range { lo: None, hi: None };
    let mut groups = vec![(all.clone(), clean_cuts(&all, cuts))];
    let mut totals: Option<Vec<i64>> = None;
    let mut diffs = Vec::new();
    let mut truncated = false;
    let mut round = 0;
    while !groups.is_empty() {
        round += 1;
        let what = if round == 1 {
            "hashing".to_string()
        } else {
            format!("narrowing (round {round})")
        };
        let ranges: Vec<Range> = groups.iter().flat_map(|(r, c)| cut(r, c.clone())).collect();
        // hash_groups makes `cuts.len() + 1` parts per group; cut() as many ranges.
        debug_assert_eq!(
            ranges.len(),
            groups.iter().map(|(_, c)| c.len() + 1).sum::<usize>()
        );
        let hashes = if t.key.len() == 1 {
            hash_groups(&mut conns, &t, &groups, &mut progress, &what)?
        } else {
            hash_ranges(&mut conns, &t, &ranges, &mut progress, &what)?
        };
        if totals.is_none() {
            totals = Some(
                hashes
                    .iter()
                    .map(|h| h.iter().map(|(n, _)| n).sum())
                    .collect(),
            );
        }
        let mut next = Vec::new();
        for (i, r) in ranges.iter().enumerate() {
            let first = &hashes[0][i];
            if hashes.iter().all(|h| &h[i] == first) {
                continue;
            }
            let (holder, most) = hashes
                .iter()
                .enumerate()
                .map(|(n, h)| (n, h[i].0))
                .max_by_key(|(_, c)| *c)
                .expect("two nodes or more");
            if most as u64 > a.unit_rows && round < 64 {
                let cuts = sub_cuts(&mut conns[holder], &t, r, most, a.unit_rows)?;
                let cuts = clean_cuts(r, cuts);
                if !cuts.is_empty() {
                    next.push((r.clone(), cuts));
                    continue;
                }
            }
            // Small enough (or no longer divisible): compare row by row.
            let fetched = crate::ctx::on_nodes_mut(&mut conns, |nc| fetch_rows(nc, &t, r));
            let fetched: Vec<_> = fetched.into_iter().collect::<Result<_>>()?;
            for d in merge(nodes.len(), fetched) {
                if diffs.len() >= a.max_diffs {
                    truncated = true;
                    break;
                }
                diffs.push(d);
            }
            progress.show(&format!("{} differences so far", diffs.len()));
        }
        if truncated {
            break;
        }
        groups = next;
    }
    progress.done();
    Ok(Report {
        table: t,
        nodes: nodes.iter().map(|n| n.name.clone()).collect(),
        rows: totals.unwrap_or_default(),
        diffs,
        truncated,
    })
}

impl Report {
    pub fn verdict(&self) -> String {
        let nodes = self.nodes.join(", ");
        if self.diffs.is_empty() {
            let rows = self.rows.first().copied().unwrap_or(0);
            format!(
                "TABLES MATCH: {} is the same on {nodes} ({rows} rows)",
                self.table.name
            )
        } else {
            format!(
                "Found {}{} differences in {} between {nodes}",
                self.diffs.len(),
                if self.truncated {
                    "+ (stopped at --max-diffs)"
                } else {
                    ""
                },
                self.table.name
            )
        }
    }

    fn key_json(&self, d: &Difference) -> Value {
        let mut m = Map::new();
        for ((c, _), v) in self.table.key.iter().zip(&d.key) {
            m.insert(c.clone(), Value::String(v.clone()));
        }
        Value::Object(m)
    }

    pub fn to_json(&self) -> Value {
        let diffs: Vec<Value> = self
            .diffs
            .iter()
            .map(|d| {
                let mut versions = Map::new();
                for (n, v) in self.nodes.iter().zip(&d.versions) {
                    versions.insert(
                        n.clone(),
                        match v {
                            None => Value::Null,
                            Some(v) => json!({
                                "values": serde_json::from_str::<Value>(&v.json).unwrap_or(Value::Null),
                                "commit_ts": v.commit_ts,
                                "origin": v.origin,
                            }),
                        },
                    );
                }
                json!({ "key": self.key_json(d), "versions": versions })
            })
            .collect();
        let rows: Map<String, Value> = self
            .nodes
            .iter()
            .zip(&self.rows)
            .map(|(n, r)| (n.clone(), json!(r)))
            .collect();
        json!({
            "table": self.table.name,
            "nodes": self.nodes,
            "rows": rows,
            "differences": diffs,
            "truncated": self.truncated,
            "verdict": self.verdict(),
        })
    }

    pub fn to_rows(&self) -> Rows {
        let mut out = Rows::new(&["key", "node", "commit_ts", "origin", "values"]);
        for d in &self.diffs {
            let key = d.key.join(", ");
            for (n, v) in self.nodes.iter().zip(&d.versions) {
                out.push(match v {
                    None => vec![
                        Some(key.clone()),
                        Some(n.clone()),
                        None,
                        None,
                        Some("(missing)".into()),
                    ],
                    Some(v) => vec![
                        Some(key.clone()),
                        Some(n.clone()),
                        v.commit_ts.clone(),
                        v.origin.clone(),
                        Some(v.json.clone()),
                    ],
                });
            }
        }
        out
    }
}

pub fn run(ctx: &Ctx, a: &DiffArgs) -> Result<Outcome> {
    let nodes = ctx.cluster()?.select(&a.nodes)?;
    let report = compare(&nodes, a)?;
    Ok(Outcome {
        rows: if report.diffs.is_empty() {
            Rows::default()
        } else {
            report.to_rows()
        },
        json: Some(report.to_json()),
        verdict: Some(report.verdict()),
        exit: if report.diffs.is_empty() { 0 } else { 2 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(v: &str) -> Vec<String> {
        vec![v.to_string()]
    }

    fn table() -> Table {
        Table {
            name: "public.t".into(),
            columns: vec![("id".into(), "integer".into()), ("v".into(), "text".into())],
            generated: vec![],
            key: vec![("id".into(), "integer".into())],
            collated: vec![false],
        }
    }

    #[test]
    fn cuts_cover_the_range_without_gaps() {
        let all = Range { lo: None, hi: None };
        let parts = cut(&all, vec![k("10"), k("20")]);
        assert_eq!(parts.len(), 3);
        assert_eq!(
            parts[0],
            Range {
                lo: None,
                hi: Some(k("10"))
            }
        );
        assert_eq!(
            parts[1],
            Range {
                lo: Some(k("10")),
                hi: Some(k("20"))
            }
        );
        assert_eq!(
            parts[2],
            Range {
                lo: Some(k("20")),
                hi: None
            }
        );
        // A cut on the lower bound itself adds no empty range.
        let inner = Range {
            lo: Some(k("10")),
            hi: Some(k("20")),
        };
        assert_eq!(cut(&inner, vec![k("10"), k("15")]).len(), 2);
        assert_eq!(cut(&all, vec![]), vec![all.clone()]);
    }

    #[test]
    fn parts_and_ranges_come_from_the_same_cuts() {
        // A cut on the lower bound and a repeated cut (both possible when keys are sampled
        // on another node or round-trip through text) make no empty part, and the number of
        // bucket parts (cuts + 1) is the number of ranges, so later hashes do not shift.
        let r = Range {
            lo: Some(k("10")),
            hi: Some(k("90")),
        };
        let cuts = clean_cuts(&r, vec![k("10"), k("20"), k("20"), k("30")]);
        assert_eq!(cuts, [k("20"), k("30")]);
        let parts = cut(&r, cuts.clone());
        assert_eq!(parts.len(), cuts.len() + 1);
        assert_eq!(parts[0].hi, Some(k("20")));
        assert_eq!(parts[1].lo, Some(k("20")));
        assert_eq!(parts[2].lo, Some(k("30")));
        // Cleaning twice changes nothing (the group keeps the cleaned list).
        assert_eq!(clean_cuts(&r, cuts.clone()), cuts);
        let all = Range { lo: None, hi: None };
        assert_eq!(clean_cuts(&all, vec![k("a"), k("a")]), [k("a")]);
    }

    #[test]
    fn text_keys_bucket_bytewise() {
        let mut t = table();
        t.key = vec![("name".into(), "text".into())];
        t.collated = vec![true];
        let r = Range {
            lo: Some(k("B")),
            hi: None,
        };
        let (sql, _) = bucket_sql(&t, &r, &[k("a")]);
        assert!(
            sql.starts_with("SELECT width_bucket(_h.k COLLATE \"C\", $1::text[])::text"),
            "{sql}"
        );
        assert!(
            sql.contains("WHERE (_r.\"name\" COLLATE \"C\") >= ($2::text)"),
            "{sql}"
        );
    }

    #[test]
    fn range_clauses_cast_each_key_part() {
        let t = table();
        let r = Range {
            lo: Some(k("5")),
            hi: Some(k("9")),
        };
        let (w, p) = t.range_clause(&r, 2);
        assert_eq!(
            w,
            "(_r.\"id\") >= ($2::integer) AND (_r.\"id\") < ($3::integer)"
        );
        assert_eq!(p, ["5", "9"]);
        let open = Range { lo: None, hi: None };
        assert_eq!(t.range_clause(&open, 1).0, "true");
        let mut t2 = t.clone();
        t2.key.push(("v".into(), "text".into()));
        t2.collated.push(true);
        let r = Range {
            lo: Some(vec!["1".into(), "a".into()]),
            hi: None,
        };
        // Text keys compare bytewise, whatever each node's collation.
        assert_eq!(
            t2.range_clause(&r, 1).0,
            "(_r.\"id\", _r.\"v\" COLLATE \"C\") >= ($1::integer, $2::text)"
        );
    }

    fn v(text: &str) -> Version {
        Version {
            text: text.into(),
            json: text.into(),
            commit_ts: None,
            origin: None,
        }
    }

    #[test]
    fn merging_reports_changed_missing_and_extra_rows_only() {
        let n1 = vec![(k("1"), v("a")), (k("2"), v("b")), (k("3"), v("c"))];
        let n2 = vec![(k("1"), v("a")), (k("2"), v("B")), (k("4"), v("d"))];
        let d = merge(2, vec![n1, n2]);
        let keys: Vec<_> = d.iter().map(|d| d.key[0].as_str()).collect();
        assert_eq!(keys, ["2", "3", "4"]);
        assert_eq!(d[1].versions[1], None);
        assert_eq!(d[2].versions[0], None);
        assert_eq!(d[0].versions[1].as_ref().unwrap().text, "B");
    }

    #[test]
    fn batched_hashes_bind_both_bounds_of_each_range() {
        let t = table();
        let a = Range {
            lo: Some(k("1")),
            hi: Some(k("5")),
        };
        let b = Range {
            lo: Some(k("5")),
            hi: Some(k("9")),
        };
        let (sql, p) = hash_batch_sql(&t, &[&a, &b]);
        assert!(sql.contains("(VALUES (0, $1::integer, $2::integer), (1, $3::integer, $4::integer)) _v(i, l0, h0)"), "{sql}");
        assert!(
            sql.contains("(_r.\"id\") >= (_v.l0) AND (_r.\"id\") < (_v.h0)"),
            "{sql}"
        );
        assert_eq!(p, ["1", "5", "5", "9"]);
    }

    #[test]
    fn bucketed_hashes_take_the_cuts_as_one_array() {
        let t = table();
        let r = Range {
            lo: Some(k("1")),
            hi: None,
        };
        let (sql, p) = bucket_sql(&t, &r, &[k("10"), k("2\"0")]);
        assert!(
            sql.starts_with("SELECT width_bucket(_h.k, $1::integer[])::text"),
            "{sql}"
        );
        assert!(
            sql.ends_with("WHERE (_r.\"id\") >= ($2::integer)) _h GROUP BY 1"),
            "{sql}"
        );
        assert_eq!(p, [r#"{"10","2\"0"}"#, "1"]);
    }

    #[test]
    fn quoting_identifiers() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }
}
