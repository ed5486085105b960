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

    pub fn update(&self, old: Option<&[Value]>, new: &[Value]) -> Result<Statement, String> {
        self.check(new)?;
        let mut params = Vec::new();
        let mut sets = Vec::new();
        for (c, v) in self.columns.iter().zip(new) {
            if let Some(p) = param(v)? {
                params.push(p);
                sets.push(format!(
                    "{} = {}",
                    ident(&c.name),
                    self.placeholder(c, params.len())
                ));
            }
        }
        let key_source = match old {
            Some(old) => {
                self.check(old)?;
                old
            }
            None => new,
        };
        let filter = self.key_filter(key_source, &mut params)?;
        Ok(Statement {
            sql: format!(
                "UPDATE {} SET {} WHERE {filter}",
                self.table(),
                sets.join(", ")
            ),
            params,
        })
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

    #[test]
    fn update_keeps_unchanged_toast_and_uses_the_old_key() {
        let s = rel()
            .update(
                Some(&[t("1"), Value::Null, Value::Null]),
                &[t("2"), t("a"), Value::UnchangedToast],
            )
            .unwrap();
        assert_eq!(
            s.sql,
            "UPDATE \"public\".\"T\"\"x\" SET \"id\" = $1::integer, \"v\" = $2::text WHERE \"id\" = $3::integer"
        );
        assert_eq!(
            s.params,
            vec![Some("2".into()), Some("a".into()), Some("1".into())]
        );
        let s = rel().update(None, &[t("2"), t("a"), t("b")]).unwrap();
        assert!(s.sql.ends_with("WHERE \"id\" = $4::integer"), "{}", s.sql);
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
}
