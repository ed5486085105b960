//! What commands print: result rows as an aligned table or JSON, and log lines on stderr filtered
//! by `-v` (0 errors, 1 warnings, 2 info, 3 debug: every SQL statement sent).

use serde_json::{Map, Value};
use std::{
    io::{IsTerminal, Write},
    sync::atomic::{AtomicU8, Ordering},
};

static VERBOSITY: AtomicU8 = AtomicU8::new(1);

pub fn set_verbosity(v: u8) {
    VERBOSITY.store(v.min(3), Ordering::Relaxed);
}

fn log(level: u8, tag: &str, msg: &str) {
    if VERBOSITY.load(Ordering::Relaxed) >= level {
        eprintln!("{tag}: {msg}");
    }
}

pub fn warn(msg: &str) {
    log(1, "warning", msg);
}

/// Progress of a long command (workflow steps): shown unless `-v 0`.
pub fn note(msg: &str) {
    if VERBOSITY.load(Ordering::Relaxed) >= 1 {
        eprintln!("{msg}");
    }
}

pub fn info(msg: &str) {
    log(2, "info", msg);
}

pub fn debug(msg: &str) {
    log(3, "debug", msg);
}

/// `-f table` or `-f json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// Rows of text values (NULL as `None`) under named columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Rows {
    pub fn new(columns: &[&str]) -> Rows {
        Rows {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<Option<String>>) {
        self.rows.push(row);
    }

    /// The value of `column` in the first row.
    pub fn first(&self, column: &str) -> Option<&str> {
        let i = self.columns.iter().position(|c| c == column)?;
        self.rows.first()?.get(i)?.as_deref()
    }

    /// Appends `other`'s rows, prefixing each with a `node` column.
    pub fn append_for_node(&mut self, node: &str, other: Rows) {
        if self.columns.is_empty() {
            self.columns.push("node".into());
            self.columns.extend(other.columns.iter().cloned());
        }
        for r in other.rows {
            let mut row = vec![Some(node.to_string())];
            row.extend(r);
            self.rows.push(row);
        }
    }

    pub fn to_json(&self) -> Value {
        Value::Array(
            self.rows
                .iter()
                .map(|r| {
                    let mut m = Map::new();
                    for (c, v) in self.columns.iter().zip(r) {
                        m.insert(c.clone(), v.clone().map_or(Value::Null, Value::String));
                    }
                    Value::Object(m)
                })
                .collect(),
        )
    }

    /// A psql-like aligned table: header, rule, rows, and a row count.
    pub fn to_table(&self) -> String {
        if self.columns.is_empty() {
            return String::new();
        }
        let cell = |v: &Option<String>| v.clone().unwrap_or_default().replace('\n', "\\n");
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
        for r in &self.rows {
            for (w, v) in widths.iter_mut().zip(r) {
                *w = (*w).max(cell(v).chars().count());
            }
        }
        let line = |vals: Vec<String>| {
            let cells: Vec<String> = vals
                .iter()
                .zip(&widths)
                .map(|(v, w)| format!("{v:<w$}"))
                .collect();
            cells.join(" | ").trim_end().to_string()
        };
        let mut out = String::new();
        out.push_str(&line(self.columns.clone()));
        out.push('\n');
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&rule.join("-+-"));
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r.iter().map(cell).collect()));
            out.push('\n');
        }
        let n = self.rows.len();
        out.push_str(&format!("({n} row{})\n", if n == 1 { "" } else { "s" }));
        out
    }

    pub fn print(&self, format: Format) {
        let text = match format {
            Format::Table => self.to_table(),
            Format::Json => serde_json::to_string_pretty(&self.to_json()).expect("json") + "\n",
        };
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
    }
}

/// Progress on a terminal only: one line on stderr rewritten in place, cleared at the end.
pub struct Progress {
    on: bool,
    last: std::time::Instant,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            on: std::io::stderr().is_terminal() && VERBOSITY.load(Ordering::Relaxed) >= 1,
            last: std::time::Instant::now(),
        }
    }

    pub fn show(&mut self, msg: &str) {
        if self.on && self.last.elapsed().as_millis() >= 100 {
            self.last = std::time::Instant::now();
            eprint!("\r\x1b[K{msg}");
        }
    }

    pub fn done(&mut self) {
        if self.on {
            eprint!("\r\x1b[K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Rows {
        let mut r = Rows::new(&["name", "value"]);
        r.push(vec![Some("a".into()), None]);
        r.push(vec![Some("longer".into()), Some("x\ny".into())]);
        r
    }

    #[test]
    fn tables_align_and_count() {
        assert_eq!(
            sample().to_table(),
            "name   | value\n-------+------\na      |\nlonger | x\\ny\n(2 rows)\n"
        );
    }

    #[test]
    fn json_keeps_nulls() {
        assert_eq!(
            sample().to_json().to_string(),
            r#"[{"name":"a","value":null},{"name":"longer","value":"x\ny"}]"#
        );
    }

    #[test]
    fn node_rows_get_a_node_column() {
        let mut all = Rows::default();
        all.append_for_node("n1", sample());
        assert_eq!(all.columns, ["node", "name", "value"]);
        assert_eq!(all.rows[1][0].as_deref(), Some("n1"));
        assert_eq!(all.first("name"), Some("a"));
    }
}
