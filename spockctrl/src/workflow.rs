//! `spockctrl -w workflow.json`: upstream's workflow files. Steps run in order; a `spock` step is
//! a spockctrl command named by an upper-case verb (`CREATE SUBSCRIPTION`) with `--name=value`
//! arguments, a `sql` step runs SQL on a node. `sleep` waits before a step, `ignore_errors` lets
//! the workflow go on past a failing step (otherwise it stops there). Arguments may refer to
//! earlier results: `${step}` is the first value a step returned, `${step.column}` a column of
//! its first row (a step is named by its `name`, else `step<N>`, counting from 1), and
//! `${node.<name>.dsn}` is a configured node's DSN.

use crate::{
    config::Cluster,
    ctx::{Ctx, Outcome},
    output::{Rows, info, note},
};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::{collections::HashMap, path::Path, time::Duration};

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: String,
    pub kind: StepKind,
    pub node: Option<String>,
    pub command: String,
    pub description: String,
    pub args: Vec<String>,
    pub sleep: u64,
    pub ignore_errors: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Spock,
    Sql,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    pub name: String,
    pub description: String,
    pub steps: Vec<Step>,
}

pub fn parse(v: &Value, file: &str) -> Result<Workflow> {
    let place = format!("workflow {file}");
    let steps = v
        .get("steps")
        .and_then(Value::as_array)
        .with_context(|| format!("{place}: missing the \"steps\" list"))?;
    let mut out = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let sp = format!("{place}: step {}", i + 1);
        let (kind, body) = if let Some(b) = s.get("spock") {
            (StepKind::Spock, b)
        } else if let Some(b) = s.get("sql") {
            (StepKind::Sql, b)
        } else if s.get("shell").is_some() {
            bail!("{sp}: shell steps are not supported");
        } else {
            bail!("{sp}: a step is an object with a \"spock\" or \"sql\" key");
        };
        let text = |k: &str| body.get(k).and_then(Value::as_str).map(String::from);
        let command = text("command").with_context(|| format!("{sp}: missing \"command\""))?;
        let args = match body.get("args") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(String::from)
                        .with_context(|| format!("{sp}: \"args\" must be a list of strings"))
                })
                .collect::<Result<_>>()?,
            Some(_) => bail!("{sp}: \"args\" must be a list of strings"),
        };
        let sleep = match body.get("sleep") {
            None | Some(Value::Null) => 0,
            Some(x) => x
                .as_u64()
                .with_context(|| format!("{sp}: \"sleep\" must be a number of seconds"))?,
        };
        out.push(Step {
            name: text("name").unwrap_or_else(|| format!("step{}", i + 1)),
            kind,
            node: text("node"),
            description: text("description").unwrap_or_else(|| command.clone()),
            command,
            args,
            sleep,
            ignore_errors: body
                .get("ignore_errors")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        });
    }
    Ok(Workflow {
        name: v
            .get("workflow_name")
            .and_then(Value::as_str)
            .unwrap_or("workflow")
            .to_string(),
        description: v
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        steps: out,
    })
}

/// The spockctrl command words of an upstream verb (`CREATE SUBSCRIPTION` → `sub create`);
/// lower-case commands are taken as the words themselves (`sub create`).
pub fn verb(command: &str) -> Result<Vec<String>> {
    let words: &[&str] = match command.trim().to_uppercase().as_str() {
        "CREATE NODE" => &["node", "create"],
        "DROP NODE" => &["node", "drop"],
        "ADD INTERFACE" => &["node", "add-interface"],
        "DROP INTERFACE" => &["node", "drop-interface"],
        "CREATE SUBSCRIPTION" => &["sub", "create"],
        "DROP SUBSCRIPTION" => &["sub", "drop"],
        "ENABLE SUBSCRIPTION" => &["sub", "enable"],
        "DISABLE SUBSCRIPTION" => &["sub", "disable"],
        "SHOW SUBSCRIPTION STATUS" => &["sub", "show-status"],
        "SHOW SUBSCRIPTION TABLE" => &["sub", "show-table"],
        "RESYNC TABLE" => &["sub", "resync-table"],
        "WAIT FOR SYNC" => &["sub", "wait-for-sync"],
        "CREATE REPSET" => &["repset", "create"],
        "DROP REPSET" => &["repset", "drop"],
        "ADD TABLE" => &["repset", "add-table"],
        "REMOVE TABLE" => &["repset", "remove-table"],
        "CREATE SLOT" => &["slot", "create"],
        "DROP SLOT" => &["slot", "drop"],
        "SQL" => &["sql"],
        _ if command.chars().all(|c| !c.is_ascii_uppercase()) => {
            return Ok(command.split_whitespace().map(String::from).collect());
        }
        _ => bail!("unknown workflow command {command:?}"),
    };
    Ok(words.iter().map(|w| w.to_string()).collect())
}

/// Replaces `${…}` references with earlier results and node DSNs.
pub fn substitute(
    s: &str,
    results: &HashMap<String, Rows>,
    cluster: Option<&Cluster>,
) -> Result<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .with_context(|| format!("unclosed ${{ in {s:?}"))?;
        let reference = &after[..end];
        let parts: Vec<&str> = reference.split('.').collect();
        let value = match parts.as_slice() {
            ["node", n, "dsn"] => cluster
                .with_context(|| format!("${{{reference}}} needs a configuration"))?
                .node(n)?
                .dsn(),
            [step] => results
                .get(*step)
                .and_then(|r| r.rows.first())
                .and_then(|r| r.first().cloned().flatten())
                .with_context(|| {
                    format!("${{{reference}}}: no earlier step {step} returned a value")
                })?,
            [step, column] => results
                .get(*step)
                .and_then(|r| r.first(column).map(String::from))
                .with_context(|| {
                    format!("${{{reference}}}: no earlier step {step} returned a column {column}")
                })?,
            _ => bail!("cannot resolve ${{{reference}}}"),
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The command line of a step (after the program name).
pub fn argv(
    step: &Step,
    results: &HashMap<String, Rows>,
    cluster: Option<&Cluster>,
) -> Result<Vec<String>> {
    let mut argv = match step.kind {
        StepKind::Spock => verb(&step.command)?,
        StepKind::Sql => vec!["sql".to_string()],
    };
    if let Some(n) = &step.node {
        argv.push(format!("--node={n}"));
    }
    for a in &step.args {
        // Upstream's own flag for this is handled here, by the step's `ignore_errors`.
        if a == "--ignore-errors" {
            continue;
        }
        argv.push(substitute(a, results, cluster)?);
    }
    Ok(argv)
}

/// A step's command line as logged: arguments may carry DSNs (`${node.n1.dsn}`, a
/// `--provider_dsn=… password=…`), and the log is no place for a password.
fn step_line(argv: &[String]) -> String {
    crate::pq::mask_password(&format!("spockctrl {}", argv.join(" ")))
}

pub fn run(
    ctx: &mut Ctx,
    path: &Path,
    dispatch: &dyn Fn(&mut Ctx, &[String]) -> Result<Outcome>,
) -> Result<Outcome> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read workflow {}", path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("workflow {} is not valid JSON", path.display()))?;
    let wf = parse(&v, &path.display().to_string())?;
    note(&format!("workflow {}: {}", wf.name, wf.description));
    let mut results: HashMap<String, Rows> = HashMap::new();
    let mut out = Rows::new(&["step", "node", "description", "result"]);
    let mut failed_ignored = 0;
    for (i, step) in wf.steps.iter().enumerate() {
        if step.sleep > 0 {
            info(&format!("sleeping {}s before step {}", step.sleep, i + 1));
            std::thread::sleep(Duration::from_secs(step.sleep));
        }
        let cluster = ctx.cluster().ok().cloned();
        let outcome = argv(step, &results, cluster.as_ref()).and_then(|a| {
            info(&format!("step {}: {}", i + 1, step_line(&a)));
            dispatch(ctx, &a)
        });
        let label = format!("[step {:02}] {}", i + 1, step.description);
        let result = match outcome {
            Ok(o) => {
                note(&format!("{label} [OK]"));
                results.insert(step.name.clone(), o.rows);
                "ok".to_string()
            }
            Err(e) if step.ignore_errors => {
                note(&format!("{label} [FAILED, ignored]: {e:#}"));
                failed_ignored += 1;
                format!("failed (ignored): {e:#}")
            }
            Err(e) => {
                note(&format!("{label} [FAILED]"));
                return Err(e.context(format!(
                    "workflow {} stopped at step {} ({})",
                    wf.name,
                    i + 1,
                    step.description
                )));
            }
        };
        out.push(vec![
            Some(format!("{}", i + 1)),
            step.node.clone(),
            Some(step.description.clone()),
            Some(result),
        ]);
    }
    Ok(Outcome {
        rows: out,
        verdict: Some(format!(
            "workflow {}: {} steps done{}",
            wf.name,
            wf.steps.len(),
            if failed_ignored > 0 {
                format!(", {failed_ignored} failed and ignored")
            } else {
                String::new()
            }
        )),
        ..Outcome::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn upstream_steps_parse_with_defaults() {
        let v = json!({
            "workflow_name": "Remove Node", "description": "d",
            "steps": [
                { "spock": { "node": "n3", "command": "DROP SUBSCRIPTION", "description": "drop",
                             "args": ["--sub_name=sub_n2_n3"], "on_success": {}, "on_failure": {} } },
                { "sql": { "node": "n1", "command": "SQL", "name": "ev", "sleep": 2,
                           "ignore_errors": true, "args": ["--sql=SELECT spock.sync_event()"] } }
            ]
        });
        let wf = parse(&v, "w.json").unwrap();
        assert_eq!(wf.steps.len(), 2);
        assert_eq!(wf.steps[0].name, "step1");
        assert_eq!(wf.steps[1].name, "ev");
        assert_eq!(wf.steps[1].sleep, 2);
        assert!(wf.steps[1].ignore_errors);
        let a = argv(&wf.steps[0], &HashMap::new(), None).unwrap();
        assert_eq!(a, ["sub", "drop", "--node=n3", "--sub_name=sub_n2_n3"]);
        let bad = json!({ "steps": [ { "shell": { "command": "ls" } } ] });
        assert_eq!(
            parse(&bad, "w.json").unwrap_err().to_string(),
            "workflow w.json: step 1: shell steps are not supported"
        );
    }

    #[test]
    fn references_take_earlier_results() {
        let mut results = HashMap::new();
        let mut r = Rows::new(&["sync_event"]);
        r.push(vec![Some("0/1A2B".into())]);
        results.insert("ev".to_string(), r);
        assert_eq!(
            substitute(
                "--sql=CALL w('${ev}'::pg_lsn, '${ev.sync_event}')",
                &results,
                None
            )
            .unwrap(),
            "--sql=CALL w('0/1A2B'::pg_lsn, '0/1A2B')"
        );
        assert!(substitute("${nope}", &results, None).is_err());
        assert!(substitute("${ev.other}", &results, None).is_err());
        assert_eq!(substitute("plain", &results, None).unwrap(), "plain");
    }

    #[test]
    fn verbs_map_to_commands() {
        assert_eq!(verb("WAIT FOR SYNC").unwrap(), ["sub", "wait-for-sync"]);
        assert_eq!(verb("repset list").unwrap(), ["repset", "list"]);
        assert!(verb("FROB NODE").is_err());
    }

    #[test]
    fn logged_step_lines_hide_passwords() {
        let argv: Vec<String> = [
            "sub",
            "create",
            "--provider_dsn=host=h port=5432 password=s3cret user=u",
            "--db_password=other",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let line = step_line(&argv);
        assert!(
            !line.contains("s3cret") && !line.contains("other"),
            "{line}"
        );
        assert_eq!(
            line,
            "spockctrl sub create --provider_dsn=host=h port=5432 password=******** user=u \
             --db_password=********"
        );
    }
}
