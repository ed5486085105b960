//! Rows of the provider's `spock.queue` (replicate_ddl's SQL, table sync requests): each is
//! kept in the local queue too and carried out inside the transaction that brought it, at its
//! place in the stream.

use pgrx::prelude::*;
use spock_proto::{Column, Value};

/// What a queue row asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Queued {
    /// SQL to run as `role` (`'Q'` from replicate_ddl, `'D'` automatic DDL).
    Sql { role: String, sql: String },
    /// Copy a table again (`'A'`, from repset_add_table's synchronize_data).
    TableSync { schema: String, table: String },
    /// Set a sequence (`'S'`, from sync_seq or repset_add_seq's synchronize_data).
    Sequence {
        schema: String,
        name: String,
        value: i64,
    },
    /// Anything else is only kept.
    Other,
}

fn text<'a>(columns: &[Column], row: &'a [Value], name: &str) -> Option<&'a str> {
    let i = columns.iter().position(|c| c.name == name)?;
    match row.get(i)? {
        Value::Text(t) => std::str::from_utf8(t).ok(),
        _ => None,
    }
}

/// Reads a queue row; `json` extracts a JSON document's string or object fields (the server
/// does it, so escapes are decoded as PostgreSQL does).
pub fn decode(
    columns: &[Column],
    row: &[Value],
    json: impl Fn(&str, &str) -> Result<Option<String>, String>,
) -> Result<Queued, String> {
    let message = text(columns, row, "message").unwrap_or("null");
    match text(columns, row, "message_type") {
        Some("Q") | Some("D") => {
            let sql = json(message, "")?.ok_or("queued SQL must be a JSON string")?;
            let role = text(columns, row, "role")
                .ok_or("queued SQL has no role")?
                .to_string();
            Ok(Queued::Sql { role, sql })
        }
        Some("A") => {
            let field = |f| required(&json, message, "table sync request", f);
            Ok(Queued::TableSync {
                schema: field("schema_name")?,
                table: field("table_name")?,
            })
        }
        Some("S") => {
            let field = |f| required(&json, message, "sequence message", f);
            let value = field("last_value")?;
            Ok(Queued::Sequence {
                schema: field("schema_name")?,
                name: field("sequence_name")?,
                value: value
                    .parse()
                    .map_err(|_| format!("sequence message with a bad last_value: {value}"))?,
            })
        }
        _ => Ok(Queued::Other),
    }
}

/// A field a queue message of kind `what` must have.
fn required(
    json: impl Fn(&str, &str) -> Result<Option<String>, String>,
    message: &str,
    what: &str,
    field: &str,
) -> Result<String, String> {
    json(message, field)?.ok_or_else(|| format!("{what} without {field}"))
}

/// `field` of a JSON object, or with an empty name the document itself if it is a string.
pub fn json_field(doc: &str, field: &str) -> Result<Option<String>, String> {
    let sql = if field.is_empty() {
        "SELECT CASE WHEN json_typeof($1::json) = 'string' THEN $1::json #>> '{}' END"
    } else {
        "SELECT $1::json ->> $2"
    };
    Spi::get_one_with_args::<String>(sql, &[doc.into(), field.into()]).map_err(|e| e.to_string())
}

/// Runs queued SQL as its recorded role, locked in it: nothing the statements or the functions
/// they call do can return to the worker's superuser identity, create temporary objects in its
/// session or keep a setting (the queued text sets its own search_path). Statements run one
/// at a time, each read only after the ones before it ran (see `ddl::next_queued_statement`).
pub fn run_sql(role: &str, sql: &str) {
    let switched = crate::identity::become_role_locked(crate::identity::role_oid(role));
    let mut rest = sql;
    while let Some((statement, next)) = crate::ddl::next_queued_statement(rest) {
        Spi::run(statement)
            .unwrap_or_else(|e| error!("{e}\nduring execution of queued SQL statement: {sql}"));
        rest = next;
    }
    switched.restore();
}

/// Moves a sequence to the provider's pushed value.
pub fn set_sequence(schema: &str, name: &str, value: i64) {
    Spi::run_with_args(
        "SELECT pg_catalog.setval(pg_catalog.format('%I.%I', $1, $2)::pg_catalog.regclass, $3)",
        &[schema.into(), name.into(), value.into()],
    )
    .unwrap_or_else(|e| error!("cannot set sequence {schema}.{name}: {e}"));
}

/// Marks a table for a copy (done by the worker between transactions) unless it is waiting
/// already.
pub fn request_sync(sub_id: u32, schema: &str, table: &str) {
    let exists = Spi::get_one_with_args::<bool>(
        "SELECT to_regclass(format('%I.%I', $1, $2)) IS NOT NULL",
        &[schema.into(), table.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if !exists {
        warning!(
            "table sync came from queue for {schema}.{table}, which does not exist here; skipping"
        );
        return;
    }
    let added = crate::catalog::sync_status::request_table(sub_id, schema, table);
    if !added {
        info!(
            "table sync came from queue for {schema}.{table}, but it is already being synchronized, skipping"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str) -> Column {
        Column {
            key: false,
            name: name.into(),
            type_oid: 0,
            typmod: -1,
        }
    }

    fn row(kind: &str, message: &str) -> (Vec<Column>, Vec<Value>) {
        (
            [
                "queued_at",
                "role",
                "replication_sets",
                "message_type",
                "message",
            ]
            .map(col)
            .to_vec(),
            vec![
                Value::Text(b"2026-01-01".to_vec()),
                Value::Text(b"alice".to_vec()),
                Value::Null,
                Value::Text(kind.as_bytes().to_vec()),
                Value::Text(message.as_bytes().to_vec()),
            ],
        )
    }

    /// A stand-in for the server's JSON functions, for the documents used here.
    fn fake_json(doc: &str, field: &str) -> Result<Option<String>, String> {
        Ok(match field {
            "" => doc
                .strip_prefix('"')
                .and_then(|d| d.strip_suffix('"'))
                .map(String::from),
            "schema_name" => Some("public".into()),
            "table_name" => doc.contains("t1").then(|| "t1".into()),
            "sequence_name" => Some("s1".into()),
            "last_value" => doc.contains("1042").then(|| "1042".into()),
            _ => None,
        })
    }

    #[test]
    fn sql_table_sync_and_other_rows() {
        let (c, r) = row("Q", "\"CREATE TABLE x()\"");
        assert_eq!(
            decode(&c, &r, fake_json).unwrap(),
            Queued::Sql {
                role: "alice".into(),
                sql: "CREATE TABLE x()".into()
            }
        );
        let (c, r) = row("A", "{\"table_name\": \"t1\"}");
        assert_eq!(
            decode(&c, &r, fake_json).unwrap(),
            Queued::TableSync {
                schema: "public".into(),
                table: "t1".into()
            }
        );
        let (c, r) = row("S", "{\"last_value\": 1042}");
        assert_eq!(
            decode(&c, &r, fake_json).unwrap(),
            Queued::Sequence {
                schema: "public".into(),
                name: "s1".into(),
                value: 1042
            }
        );
        let (c, r) = row("X", "{}");
        assert_eq!(decode(&c, &r, fake_json).unwrap(), Queued::Other);
    }

    #[test]
    fn malformed_rows_are_errors() {
        let (c, r) = row("Q", "{\"not\": \"a string\"}");
        assert!(
            decode(&c, &r, fake_json)
                .unwrap_err()
                .contains("JSON string")
        );
        let (c, r) = row("A", "{}");
        assert!(
            decode(&c, &r, fake_json)
                .unwrap_err()
                .contains("without table_name")
        );
    }
}
