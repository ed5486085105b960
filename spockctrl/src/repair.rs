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
use std::collections::BTreeMap;

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

fn upsert_sql(t: &Table) -> String {
    let cols: Vec<String> = t
        .columns
        .iter()
        .filter(|(c, _)| !t.generated.contains(c))
        .map(|(c, _)| ident(c))
        .collect();
    let key: Vec<String> = t.key.iter().map(|(c, _)| ident(c)).collect();
    let set: Vec<String> = t
        .columns
        .iter()
        .filter(|(c, _)| !t.generated.contains(c) && !t.key.iter().any(|(k, _)| k == c))
        .map(|(c, _)| format!("{0} = EXCLUDED.{0}", ident(c)))
        .collect();
    let on_conflict = if set.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!("DO UPDATE SET {}", set.join(", "))
    };
    format!(
        "INSERT INTO {tbl} ({cols}) OVERRIDING SYSTEM VALUE \
         SELECT {cols} FROM jsonb_populate_record(NULL::{tbl}, $1::jsonb) \
         ON CONFLICT ({key}) {on_conflict}",
        tbl = t.name,
        cols = cols.join(", "),
        key = key.join(", ")
    )
}

fn delete_sql(t: &Table) -> String {
    let key: Vec<String> = t.key.iter().map(|(c, _)| ident(c)).collect();
    let ph: Vec<String> = t
        .key
        .iter()
        .enumerate()
        .map(|(i, (_, ty))| format!("${}::{ty}", i + 1))
        .collect();
    format!(
        "DELETE FROM {} WHERE ({}) = ({})",
        t.name,
        key.join(", "),
        ph.join(", ")
    )
}

/// Applies one group of fixes on `conn` in one transaction, stamped when `stamp` is known.
fn apply(
    conn: &mut Conn,
    t: &Table,
    stamp: &Option<(String, String)>,
    fixes: &[Fix],
) -> Result<()> {
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
    let result = (|| -> Result<()> {
        conn.exec("BEGIN")?;
        conn.exec("SELECT spock.repair_mode(true)")?;
        conn.exec("SET LOCAL session_replication_role = replica")?;
        if let Some((_, ts)) = stamp {
            conn.query(
                "SELECT pg_replication_origin_xact_setup('0/0', $1::timestamptz)",
                &[Some(ts)],
            )?;
        }
        let (upsert, delete) = (upsert_sql(t), delete_sql(t));
        for f in fixes {
            match (&f.action, &f.json) {
                (Action::Delete, _) => {
                    let refs: Vec<Option<&str>> = f.key.iter().map(|k| Some(k.as_str())).collect();
                    conn.query(&delete, &refs)?;
                }
                (_, Some(json)) => {
                    conn.query(&upsert, &[Some(json)])?;
                }
                (_, None) => bail!("no source row for key {:?}", f.key),
            }
        }
        conn.exec("SELECT spock.repair_mode(false)")?;
        conn.exec("COMMIT")?;
        Ok(())
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
    for (target, node) in nodes.iter().enumerate() {
        if target == source {
            continue;
        }
        let fixes = plan(&report.diffs, source, target);
        if fixes.is_empty() {
            continue;
        }
        let count = |x: Action| fixes.iter().filter(|f| f.action == x).count();
        counts.push(format!(
            "{}: {} inserted, {} updated, {} deleted",
            node.name,
            count(Action::Insert),
            count(Action::Update),
            count(Action::Delete)
        ));
        for f in &fixes {
            out.push(vec![
                Some(node.name.clone()),
                Some(f.action.as_str().into()),
                Some(f.key.join(", ")),
                f.json.clone(),
            ]);
        }
        if !a.dry_run {
            let mut conn = connect(node)?;
            for (stamp, group) in by_stamp(fixes) {
                apply(&mut conn, &report.table, &stamp, &group)
                    .with_context(|| format!("repairing {} on {}", report.table.name, node.name))?;
            }
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
            "repaired {} from {} ({})",
            report.table.name,
            a.source,
            counts.join("; ")
        )
    };
    Ok(Outcome {
        rows: if out.rows.is_empty() {
            Rows::default()
        } else {
            out
        },
        verdict: Some(verdict),
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
        };
        assert_eq!(
            upsert_sql(&t),
            "INSERT INTO public.t (\"id\", \"v\") OVERRIDING SYSTEM VALUE SELECT \"id\", \"v\" \
             FROM jsonb_populate_record(NULL::public.t, $1::jsonb) ON CONFLICT (\"id\") \
             DO UPDATE SET \"v\" = EXCLUDED.\"v\""
        );
        assert_eq!(
            delete_sql(&t),
            "DELETE FROM public.t WHERE (\"id\") = ($1::integer)"
        );
    }
}
