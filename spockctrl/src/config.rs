//! The two files that name a cluster's nodes: upstream's `spockctrl.json` (`-c`) and a
//! pgEdge-CLI-style cluster spec (`--spec`). Both become the same list of nodes; a bad file is
//! reported with the file, the entry and the key at fault.

use crate::pq::conninfo_value;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConf {
    pub name: String,
    /// Where spockctrl connects.
    pub host: String,
    pub port: u16,
    pub db: String,
    pub user: String,
    /// Only ever passed to libpq, never printed; absent means libpq's own sources (PGPASSFILE…).
    pub password: Option<String>,
    /// Where the other nodes connect for replication (the spec's private_ip, else `host`).
    pub repl_host: String,
}

impl NodeConf {
    /// Connection string spockctrl uses (may contain the password).
    pub fn conninfo(&self) -> String {
        let mut s = format!(
            "host={} port={} dbname={} user={} application_name=spockctrl",
            conninfo_value(&self.host),
            self.port,
            conninfo_value(&self.db),
            conninfo_value(&self.user)
        );
        if std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
            s.push_str(" connect_timeout=10");
        }
        if let Some(p) = &self.password {
            s.push_str(&format!(" password={}", conninfo_value(p)));
        }
        s
    }

    /// The DSN stored in spock's catalog for the other nodes: never a password (servers find
    /// theirs in their own `.pgpass`, as libpq does for any client).
    pub fn dsn(&self) -> String {
        format!(
            "host={} port={} dbname={} user={}",
            conninfo_value(&self.repl_host),
            self.port,
            conninfo_value(&self.db),
            conninfo_value(&self.user)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub name: String,
    pub nodes: Vec<NodeConf>,
    /// Automatic DDL replication (spec `pgedge.spock.auto_ddl`).
    pub auto_ddl: bool,
}

impl Cluster {
    pub fn node(&self, name: &str) -> Result<&NodeConf> {
        self.nodes.iter().find(|n| n.name == name).with_context(|| {
            let known: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            format!(
                "no node {name} in the configuration (nodes: {})",
                known.join(", ")
            )
        })
    }

    /// The nodes named in `names` (all when empty), in the order given.
    pub fn select(&self, names: &[String]) -> Result<Vec<NodeConf>> {
        if names.is_empty() {
            return Ok(self.nodes.clone());
        }
        names.iter().map(|n| self.node(n).cloned()).collect()
    }
}

fn read_json(path: &Path, what: &str) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{what} {} is not valid JSON", path.display()))
}

/// A string, or a number written as one.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn port(v: Option<&Value>, place: &str) -> Result<u16> {
    let v = v.with_context(|| format!("{place}: missing port"))?;
    scalar(v)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|p| *p > 0)
        .with_context(|| format!("{place}: port {v} is not a TCP port"))
}

fn required(obj: &Value, key: &str, place: &str) -> Result<String> {
    match obj.get(key).and_then(scalar) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => bail!("{place}: missing {key}"),
    }
}

fn check_unique(nodes: &[NodeConf], place: &str) -> Result<()> {
    if nodes.is_empty() {
        bail!("{place}: no nodes");
    }
    for (i, n) in nodes.iter().enumerate() {
        if nodes[..i].iter().any(|m| m.name == n.name) {
            bail!("{place}: node {} is listed twice", n.name);
        }
    }
    Ok(())
}

/// Upstream's `spockctrl.json`.
pub fn load_config(path: &Path) -> Result<Cluster> {
    parse_config(
        &read_json(path, "configuration")?,
        &path.display().to_string(),
    )
}

pub fn parse_config(v: &Value, file: &str) -> Result<Cluster> {
    let name = v
        .pointer("/global/spock/cluster_name")
        .and_then(scalar)
        .unwrap_or_else(|| "pgedge".into());
    let list = v
        .get("spock-nodes")
        .and_then(Value::as_array)
        .with_context(|| format!("configuration {file}: missing the \"spock-nodes\" list"))?;
    let mut nodes = Vec::new();
    for (i, n) in list.iter().enumerate() {
        let place = format!("configuration {file}: spock-nodes[{i}]");
        let node_name = required(n, "node_name", &place)?;
        let place = format!("{place} ({node_name})");
        let pg = n
            .get("postgres")
            .with_context(|| format!("{place}: missing \"postgres\""))?;
        let host = required(pg, "postgres_ip", &place)?;
        nodes.push(NodeConf {
            name: node_name,
            port: port(pg.get("postgres_port"), &place)?,
            db: required(pg, "postgres_db", &place)?,
            user: required(pg, "postgres_user", &place)?,
            password: pg
                .get("postgres_password")
                .and_then(scalar)
                .filter(|p| !p.is_empty()),
            repl_host: host.clone(),
            host,
        });
    }
    check_unique(&nodes, &format!("configuration {file}"))?;
    Ok(Cluster {
        name,
        nodes,
        auto_ddl: false,
    })
}

/// A pgEdge-CLI cluster spec (`json_version` 1.1).
pub fn load_spec(path: &Path) -> Result<Cluster> {
    parse_spec(
        &read_json(path, "cluster spec")?,
        &path.display().to_string(),
    )
}

fn truthy(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" => Some(true),
            "off" | "false" | "no" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

pub fn parse_spec(v: &Value, file: &str) -> Result<Cluster> {
    let place = format!("cluster spec {file}");
    let name = required(v, "cluster_name", &place)?;
    let db = v
        .pointer("/pgedge/databases/0")
        .with_context(|| format!("{place}: missing pgedge.databases (a database name and user)"))?;
    let db_place = format!("{place}: pgedge.databases[0]");
    let db_name = required(db, "db_name", &db_place)?;
    let db_user = required(db, "db_user", &db_place)?;
    let password = db
        .get("db_password")
        .and_then(scalar)
        .filter(|p| !p.is_empty());
    let auto_ddl = match v.pointer("/pgedge/spock/auto_ddl") {
        None | Some(Value::Null) => false,
        Some(a) => truthy(a).with_context(|| {
            format!("{place}: pgedge.spock.auto_ddl must be on/off or true/false, not {a}")
        })?,
    };
    let groups = v
        .get("node_groups")
        .and_then(Value::as_array)
        .with_context(|| format!("{place}: missing the \"node_groups\" list"))?;
    let mut nodes = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let gp = format!("{place}: node_groups[{i}]");
        let node_name = required(g, "name", &gp)?;
        let gp = format!("{gp} ({node_name})");
        if g.get("is_active").and_then(truthy) == Some(false) {
            continue;
        }
        let public = g
            .get("public_ip")
            .and_then(scalar)
            .filter(|s| !s.is_empty());
        let private = g
            .get("private_ip")
            .and_then(scalar)
            .filter(|s| !s.is_empty());
        let host = public
            .clone()
            .or(private.clone())
            .with_context(|| format!("{gp}: missing public_ip (or private_ip)"))?;
        nodes.push(NodeConf {
            name: node_name,
            port: port(g.get("port"), &gp)?,
            db: db_name.clone(),
            user: db_user.clone(),
            password: password.clone(),
            repl_host: private.unwrap_or_else(|| host.clone()),
            host,
        });
    }
    check_unique(&nodes, &place)?;
    Ok(Cluster {
        name,
        nodes,
        auto_ddl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> Value {
        json!({
            "json_version": "1.1", "cluster_name": "demo",
            "pgedge": { "pg_version": "17", "spock": { "spock_version": "5.0.5", "auto_ddl": "on" },
                        "databases": [ { "db_name": "app", "db_user": "admin", "db_password": "s3cret" } ] },
            "node_groups": [
                { "name": "n1", "is_active": "on", "public_ip": "10.0.0.1", "private_ip": "192.168.0.1", "port": 5432 },
                { "name": "n2", "is_active": true, "public_ip": "10.0.0.2", "port": "5433" },
                { "name": "n3", "is_active": "off", "public_ip": "10.0.0.3", "port": 5434 }
            ]
        })
    }

    #[test]
    fn spec_nodes_use_the_first_database_and_skip_inactive_groups() {
        let c = parse_spec(&spec(), "s.json").unwrap();
        assert_eq!(c.name, "demo");
        assert!(c.auto_ddl);
        assert_eq!(c.nodes.len(), 2);
        assert_eq!(
            c.nodes[0].dsn(),
            "host=192.168.0.1 port=5432 dbname=app user=admin"
        );
        assert_eq!(c.nodes[1].port, 5433);
        assert!(c.nodes[0].conninfo().contains("host=10.0.0.1"));
        assert!(c.nodes[0].conninfo().contains("password=s3cret"));
        assert!(!c.nodes[0].dsn().contains("s3cret"));
    }

    #[test]
    fn spec_errors_name_the_entry_and_key() {
        let mut s = spec();
        s["node_groups"][1]["port"] = json!("x");
        let e = parse_spec(&s, "s.json").unwrap_err().to_string();
        assert_eq!(
            e,
            "cluster spec s.json: node_groups[1] (n2): port \"x\" is not a TCP port"
        );
        let mut s = spec();
        s["node_groups"][1]["name"] = json!("n1");
        let e = parse_spec(&s, "s.json").unwrap_err().to_string();
        assert_eq!(e, "cluster spec s.json: node n1 is listed twice");
        let mut s = spec();
        s.as_object_mut().unwrap().remove("node_groups");
        let e = parse_spec(&s, "s.json").unwrap_err().to_string();
        assert_eq!(e, "cluster spec s.json: missing the \"node_groups\" list");
        let mut s = spec();
        s["pgedge"]["databases"] = json!([]);
        assert!(parse_spec(&s, "s.json").is_err());
    }

    #[test]
    fn upstream_config_is_read() {
        let v = json!({
            "global": { "spock": { "cluster_name": "pgedge", "version": "1.0.0" },
                        "log": { "log_level": "INFO" } },
            "spock-nodes": [ { "node_name": "n1", "postgres": { "postgres_ip": "127.0.0.1",
                "postgres_port": 5432, "postgres_user": "pgedge", "postgres_password": "",
                "postgres_db": "pgedge" } } ]
        });
        let c = parse_config(&v, "spockctrl.json").unwrap();
        assert_eq!(c.nodes[0].name, "n1");
        assert_eq!(c.nodes[0].password, None);
        assert!(c.node("n9").unwrap_err().to_string().contains("nodes: n1"));
        let bad = json!({ "spock-nodes": [ { "node_name": "n1", "postgres": {} } ] });
        assert_eq!(
            parse_config(&bad, "c.json").unwrap_err().to_string(),
            "configuration c.json: spock-nodes[0] (n1): missing postgres_ip"
        );
    }
}
