//! `spockctrl table-repair`: makes the other nodes hold the source of truth's version of every
//! row table-diff finds different (insert, update or delete), nothing else. Each fix runs in
//! spock's repair mode with `session_replication_role = replica`, so it stays on the node it
//! repairs (not replicated again, user triggers quiet). A fixed row keeps the source version's
//! commit timestamp and origin: the fix commits under a replication origin
//! `spockctrl_repair_<origin node>` with that timestamp (PostgreSQL's own
//! `pg_replication_origin_xact_setup`), so last-update-wins later compares with the original
//! write's time, and table-diff reports the original origin.

use crate::{
    config::NodeConf,
    ctx::{Ctx, Outcome, connect},
    diff::{self, DiffArgs, Difference, Table, ident},
    output::Rows,
    pq::Conn,
};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::collections::{BTreeMap, HashSet};

#[derive(Args, Debug)]
pub struct RepairArgs {
    #[command(flatten)]
    pub diff: DiffArgs,
    /// The node whose rows are right.
    #[arg(long = "source-of-truth", alias = "source_of_truth")]
    pub source: String,
    /// Show what would change, change nothing.
    #[arg(long = "dry-run", alias = "dry_run")]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Insert,
    Update,
    Delete,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Insert => "insert",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

/// One fix on one node: the key, and the source's version (absent for a delete).
#[derive(Debug, Clone)]
pub struct Fix {
    pub action: Action,
    pub key: Vec<String>,
    pub json: Option<String>,
    /// The target's version as the diff saw it (row text; absent for an insert): the fix
    /// applies only if the row is still that, so that it never overwrites a write made since
    /// (or deletes a row whose insert had not replicated yet). A repair is not replicated, so
    /// overwriting a newer row would make the nodes differ for good.
    pub seen: Option<String>,
    /// (origin node, commit timestamp) of the source's version, when known.
    pub stamp: Option<(String, String)>,
}

/// The fixes node `target` needs to match node `source` (indexes into each difference's
/// versions).
pub fn plan(diffs: &[Difference], source: usize, target: usize) -> Vec<Fix> {
    diffs
        .iter()
        .filter_map(|d| {
            let (s, t) = (&d.versions[source], &d.versions[target]);
            let action = match (s, t) {
                (Some(s), Some(t)) if s.text == t.text => return None,
                (Some(_), Some(_)) => Action::Update,
                (Some(_), None) => Action::Insert,
                (None, Some(_)) => Action::Delete,
                (None, None) => return None,
            };
            Some(Fix {
                action,
                key: d.key.clone(),
                json: s.as_ref().map(|s| s.json.clone()),
                seen: t.as_ref().map(|t| t.text.clone()),
                stamp: s
                    .as_ref()
                    .and_then(|s| Some((s.origin.clone()?, s.commit_ts.clone()?))),
            })
        })
        .collect()
}

/// Fixes grouped by the version stamp they must commit with (one transaction each).
pub fn by_stamp(fixes: Vec<Fix>) -> BTreeMap<Option<(String, String)>, Vec<Fix>> {
    let mut groups: BTreeMap<Option<(String, String)>, Vec<Fix>> = BTreeMap::new();
    for f in fixes {
        groups.entry(f.stamp.clone()).or_default().push(f);
    }
    groups
}

fn writable(t: &Table) -> Vec<String> {
    t.columns
        .iter()
        .filter(|(c, _)| !t.generated.contains(c))
        .map(|(c, _)| ident(c))
        .collect()
}

/// `(key columns of _r) = ($first, …)`, each parameter cast to its column's type.
fn key_match(t: &Table, first: usize) -> String {
    let key: Vec<String> = t
        .key
        .iter()
        .map(|(c, _)| format!("_r.{}", ident(c)))
        .collect();
    let ph: Vec<String> = t
        .key
        .iter()
        .enumerate()
        .map(|(i, (_, ty))| format!("${}::{ty}", first + i))
        .collect();
    format!("({}) = ({})", key.join(", "), ph.join(", "))
}

/// Inserts the source's row ($1, JSON) only if the key is still absent: a row inserted since
/// the diff (or whose replicated insert arrived) is left alone. Returns a row when it inserted.
fn insert_sql(t: &Table) -> String {
    let key: Vec<String> = t.key.iter().map(|(c, _)| ident(c)).collect();
    format!(
        "INSERT INTO {tbl} ({cols}) OVERRIDING SYSTEM VALUE \
         SELECT {cols} FROM jsonb_populate_record(NULL::{tbl}, $1::jsonb) \
         ON CONFLICT ({key}) DO NOTHING RETURNING 1",
        tbl = t.name,
        cols = writable(t).join(", "),
        key = key.join(", ")
    )
}

/// Sets the row of key $2… to the source's version ($1, JSON) only if it is still the version
/// the diff saw (the last parameter, its row text). Returns a row when it updated.
fn update_sql(t: &Table) -> String {
    let set: Vec<String> = writable(t)
        .into_iter()
        .filter(|c| !t.key.iter().any(|(k, _)| &ident(k) == c))
        .collect();
    // Rows differing only in generated columns: nothing to write, but the statement still
    // tells whether the row is as seen.
    let assign = if set.is_empty() {
        format!("{0} = _r.{0}", ident(&t.key[0].0))
    } else {
        format!(
            "({0}) = (SELECT {0} FROM jsonb_populate_record(NULL::{1}, $1::jsonb))",
            set.join(", "),
            t.name
        )
    };
    format!(
        "UPDATE {} _r SET {assign} WHERE {} AND {} = ${} RETURNING 1",
        t.name,
        key_match(t, 2),
        t.row_text(),
        t.key.len() + 2
    )
}

/// Deletes the row of key $1… only if it is still the version the diff saw (the last
/// parameter). Returns a row when it deleted.
fn delete_sql(t: &Table) -> String {
    format!(
        "DELETE FROM {} _r WHERE {} AND {} = ${} RETURNING 1",
        t.name,
        key_match(t, 1),
        t.row_text(),
        t.key.len() + 1
    )
}

/// Applies one group of fixes on `conn` in one transaction, stamped when `stamp` is known.
/// Returns the keys left alone because the row changed since the diff. Every key's fix is one
/// statement, so it is never half applied.
fn apply(
    conn: &mut Conn,
    t: &Table,
    stamp: &Option<(String, String)>,
    fixes: &[Fix],
) -> Result<Vec<Vec<String>>> {
    if let Some((origin, _)) = stamp {
        let name = format!("spockctrl_repair_{origin}");
        conn.query(
            "SELECT pg_replication_origin_create($1) WHERE NOT EXISTS \
             (SELECT 1 FROM pg_replication_origin WHERE roname = $1)",
            &[Some(&name)],
        )?;
        conn.query(
            "SELECT pg_replication_origin_session_setup($1)",
            &[Some(&name)],
        )?;
    }
    let result = (|| -> Result<Vec<Vec<String>>> {
        conn.exec("BEGIN")?;
        conn.exec("SELECT spock.repair_mode(true)")?;
        conn.exec("SET LOCAL session_replication_role = replica")?;
        if let Some((_, ts)) = stamp {
            conn.query(
                "SELECT pg_replication_origin_xact_setup('0/0', $1::timestamptz)",
                &[Some(ts)],
            )?;
        }
        let (insert, update, delete) = (insert_sql(t), update_sql(t), delete_sql(t));
        let mut changed = Vec::new();
        for f in fixes {
            let keys = f.key.iter().map(|k| Some(k.as_str()));
            let params: Vec<Option<&str>> = match (f.action, &f.json, &f.seen) {
                (Action::Insert, Some(json), _) => vec![Some(json.as_str())],
                (Action::Update, Some(json), Some(seen)) => std::iter::once(Some(json.as_str()))
                    .chain(keys)
                    .chain([Some(seen.as_str())])
                    .collect(),
                (Action::Delete, _, Some(seen)) => keys.chain([Some(seen.as_str())]).collect(),
                _ => bail!("incomplete fix for key {:?}", f.key),
            };
            let sql = match f.action {
                Action::Insert => &insert,
                Action::Update => &update,
                Action::Delete => &delete,
            };
            if conn.query(sql, &params)?.rows.is_empty() {
                changed.push(f.key.clone());
            }
        }
        conn.exec("SELECT spock.repair_mode(false)")?;
        conn.exec("COMMIT")?;
        Ok(changed)
    })();
    if result.is_err() {
        let _ = conn.exec("ROLLBACK");
    }
    if stamp.is_some() {
        let _ = conn.exec("SELECT pg_replication_origin_session_reset()");
    }
    result
}

pub fn run(ctx: &Ctx, a: &RepairArgs) -> Result<Outcome> {
    let nodes: Vec<NodeConf> = ctx.cluster()?.select(&a.diff.nodes)?;
    let source = nodes
        .iter()
        .position(|n| n.name == a.source)
        .with_context(|| {
            format!(
                "source of truth {} is not among the compared nodes ({})",
                a.source,
                nodes
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    let report = diff::compare(&nodes, &a.diff)?;
    let mut out = Rows::new(&["node", "action", "key", "values"]);
    let mut counts: Vec<String> = Vec::new();
    let mut skipped = 0;
    for (target, node) in nodes.iter().enumerate() {
        if target == source {
            continue;
        }
        let fixes = plan(&report.diffs, source, target);
        if fixes.is_empty() {
            continue;
        }
        let mut changed: HashSet<Vec<String>> = HashSet::new();
        if !a.dry_run {
            let mut conn = connect(node)?;
            for (stamp, group) in by_stamp(fixes.clone()) {
                changed.extend(
                    apply(&mut conn, &report.table, &stamp, &group).with_context(|| {
                        format!("repairing {} on {}", report.table.name, node.name)
                    })?,
                );
            }
        }
        let done = |f: &&Fix| !changed.contains(&f.key);
        let count = |x: Action| fixes.iter().filter(done).filter(|f| f.action == x).count();
        counts.push(format!(
            "{}: {} inserted, {} updated, {} deleted",
            node.name,
            count(Action::Insert),
            count(Action::Update),
            count(Action::Delete)
        ));
        skipped += changed.len();
        for f in &fixes {
            let action = if changed.contains(&f.key) {
                format!("{} skipped: changed since the diff", f.action.as_str())
            } else {
                f.action.as_str().to_string()
            };
            out.push(vec![
                Some(node.name.clone()),
                Some(action),
                Some(f.key.join(", ")),
                f.json.clone(),
            ]);
        }
    }
    let verdict = if counts.is_empty() {
        format!("{}; nothing to repair", report.verdict())
    } else if a.dry_run {
        format!(
            "dry run, nothing changed: would make {} match {} ({})",
            report.table.name,
            a.source,
            counts.join("; ")
        )
    } else {
        format!(
            "repaired {} from {} ({}){}",
            report.table.name,
            a.source,
            counts.join("; "),
            if skipped > 0 {
                format!(
                    "; {skipped} rows changed since the diff and were left alone: run table-diff again"
                )
            } else {
                String::new()
            }
        )
    };
    Ok(Outcome {
        rows: if out.rows.is_empty() {
            Rows::default()
        } else {
            out
        },
        verdict: Some(verdict),
        // Like table-diff finding differences: ran fine, but the tables may still differ.
        exit: if skipped > 0 { 2 } else { 0 },
        ..Outcome::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::Version;

    fn v(text: &str, origin: &str) -> Option<Version> {
        Some(Version {
            text: text.into(),
            json: format!("{{\"v\":\"{text}\"}}"),
            commit_ts: Some("2025-01-01 00:00:00+00".into()),
            origin: Some(origin.into()),
        })
    }

    #[test]
    fn plans_insert_update_delete_against_the_source() {
        let diffs = vec![
            Difference {
                key: vec!["1".into()],
                versions: vec![v("a", "n1"), v("x", "n2")],
            },
            Difference {
                key: vec!["2".into()],
                versions: vec![v("b", "n3"), None],
            },
            Difference {
                key: vec!["3".into()],
                versions: vec![None, v("c", "n2")],
            },
        ];
        let fixes = plan(&diffs, 0, 1);
        let acts: Vec<_> = fixes.iter().map(|f| f.action).collect();
        assert_eq!(acts, [Action::Update, Action::Insert, Action::Delete]);
        assert_eq!(fixes[1].stamp.as_ref().unwrap().0, "n3");
        assert!(fixes[2].json.is_none());
        // What the target held is kept, to apply the fix only if it still holds it.
        assert_eq!(fixes[0].seen.as_deref(), Some("x"));
        assert_eq!(fixes[1].seen, None);
        assert_eq!(fixes[2].seen.as_deref(), Some("c"));
        let groups = by_stamp(fixes);
        assert_eq!(groups.len(), 3);
        // The reverse direction is the mirror image.
        let back: Vec<_> = plan(&diffs, 1, 0).iter().map(|f| f.action).collect();
        assert_eq!(back, [Action::Update, Action::Delete, Action::Insert]);
    }

    #[test]
    fn statements_leave_generated_columns_to_the_server() {
        let t = Table {
            name: "public.t".into(),
            columns: vec![
                ("id".into(), "integer".into()),
                ("v".into(), "text".into()),
                ("g".into(), "integer".into()),
            ],
            generated: vec!["g".into()],
            key: vec![("id".into(), "integer".into())],
            collated: vec![false],
        };
        assert_eq!(
            insert_sql(&t),
            "INSERT INTO public.t (\"id\", \"v\") OVERRIDING SYSTEM VALUE SELECT \"id\", \"v\" \
             FROM jsonb_populate_record(NULL::public.t, $1::jsonb) ON CONFLICT (\"id\") \
             DO NOTHING RETURNING 1"
        );
        // Updates and deletes apply only to the row as the diff saw it.
        assert_eq!(
            update_sql(&t),
            "UPDATE public.t _r SET (\"v\") = (SELECT \"v\" FROM \
             jsonb_populate_record(NULL::public.t, $1::jsonb)) WHERE (_r.\"id\") = ($2::integer) \
             AND ROW(_r.\"id\", _r.\"v\", _r.\"g\")::text = $3 RETURNING 1"
        );
        assert_eq!(
            delete_sql(&t),
            "DELETE FROM public.t _r WHERE (_r.\"id\") = ($1::integer) \
             AND ROW(_r.\"id\", _r.\"v\", _r.\"g\")::text = $2 RETURNING 1"
        );
    }
}
