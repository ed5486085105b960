//! Startup parameters of a `spock_output` stream (START_REPLICATION options or the SQL slot
//! functions' options), validated without touching the server.

use spock_proto::{MAX_PROTO_VERSION, MIN_PROTO_VERSION};

/// Sets a subscriber gets when it names none (a subscription's default list).
pub const DEFAULT_SETS: [&str; 3] = ["default", "default_insert_only", "ddl_sql"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// The protocol version both sides speak.
    pub proto_version: u32,
    pub expected_encoding: Option<String>,
    pub replication_sets: Vec<String>,
    /// Forward changes that came from other nodes (`spock.forward_origins = all`).
    pub forward_all_origins: bool,
    /// `spock.replicate_only_table`: (schema, table).
    pub only_table: Option<(String, String)>,
    /// The client takes send/recv binary values of the given server major
    /// (`binary.want_binary_basetypes`, `binary.basetypes_major_version`).
    pub binary_major: Option<u32>,
    /// `proto_format = json`: one JSON text per message (upstream's json format).
    pub json: bool,
    /// `no_txinfo` (json only): BEGIN and COMMIT without transaction details.
    pub no_txinfo: bool,
}

fn parse_int(key: &str, value: Option<&str>) -> Result<u32, String> {
    value
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("parameter \"{key}\" needs an integer value"))
}

/// Splits a comma-separated identifier list (double quotes keep commas and case).
fn identifiers(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = list.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c if quoted => cur.push(c),
            c if c.is_whitespace() => {}
            c => cur.extend(c.to_lowercase()),
        }
    }
    out.push(cur);
    out.retain(|s| !s.is_empty());
    out
}

pub fn parse(options: &[(String, Option<String>)]) -> Result<Params, String> {
    let get = |key: &str| {
        options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_deref())
    };
    match get("startup_params_format") {
        Some(v) if parse_int("startup_params_format", v)? == 1 => {}
        Some(v) => {
            return Err(format!(
                "client sent startup parameters in format {}, but only format 1 is supported",
                v.unwrap_or("")
            ));
        }
        None => {
            return Err("client did not send required parameter \"startup_params_format\"".into());
        }
    }
    let max = parse_int("max_proto_version", get("max_proto_version").flatten())?;
    let min = parse_int("min_proto_version", get("min_proto_version").flatten())?;
    if min > MAX_PROTO_VERSION || max < MIN_PROTO_VERSION || min > max {
        return Err(format!(
            "client wants protocol versions {min} to {max}, this spock speaks {MIN_PROTO_VERSION} to {MAX_PROTO_VERSION}"
        ));
    }
    let json = match get("proto_format").flatten() {
        None | Some("native") => false,
        Some("json") => true,
        Some(other) => return Err(format!("unknown proto_format \"{other}\"")),
    };
    let no_txinfo = matches!(
        get("no_txinfo").flatten(),
        Some("1" | "t" | "true" | "on" | "yes")
    );
    let forward_all_origins = match get("spock.forward_origins").flatten().map(identifiers) {
        None => false,
        Some(list) if list.is_empty() => false,
        Some(list) if list == ["all"] => true,
        Some(list) => {
            return Err(format!(
                "forward_origins may only be \"all\", got {}",
                list.join(",")
            ));
        }
    };
    let replication_sets = match get("spock.replication_set_names").flatten() {
        Some(list) => identifiers(list),
        None => DEFAULT_SETS.iter().map(|s| s.to_string()).collect(),
    };
    let only_table = match get("spock.replicate_only_table").flatten() {
        None => None,
        Some(qualified) => match identifiers(&qualified.replacen('.', ",", 1)).as_slice() {
            [schema, table] => Some((schema.clone(), table.clone())),
            _ => {
                return Err(format!(
                    "spock.replicate_only_table must be schema.table, got \"{qualified}\""
                ));
            }
        },
    };
    let want_binary = matches!(
        get("binary.want_binary_basetypes").flatten(),
        Some("1" | "t" | "true" | "on")
    );
    let binary_major = match get("binary.basetypes_major_version").flatten() {
        Some(v) if want_binary => Some(parse_int("binary.basetypes_major_version", Some(v))?),
        _ => None,
    };
    Ok(Params {
        binary_major,
        json,
        no_txinfo,
        proto_version: max.min(MAX_PROTO_VERSION),
        expected_encoding: get("expected_encoding").flatten().map(String::from),
        replication_sets,
        forward_all_origins,
        only_table,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect()
    }

    const BASE: [(&str, &str); 3] = [
        ("startup_params_format", "1"),
        ("max_proto_version", "4"),
        ("min_proto_version", "3"),
    ];

    #[test]
    fn minimal_parameters() {
        let p = parse(&opts(&BASE)).unwrap();
        assert_eq!(p.proto_version, 4);
        assert_eq!(p.replication_sets, DEFAULT_SETS);
        assert!(!p.forward_all_origins);
        assert_eq!(p.binary_major, None);
        assert!(!p.json && !p.no_txinfo);
    }

    #[test]
    fn json_format_and_no_txinfo() {
        let mut o = opts(&BASE);
        o.extend(opts(&[("proto_format", "json"), ("no_txinfo", "t")]));
        let p = parse(&o).unwrap();
        assert!(p.json && p.no_txinfo);
        let mut o = opts(&BASE);
        o.push(("proto_format".into(), Some("xml".into())));
        assert!(parse(&o).unwrap_err().contains("xml"));
    }

    #[test]
    fn binary_values_only_when_asked() {
        let mut o = opts(&BASE);
        o.push(("binary.basetypes_major_version".into(), Some("1700".into())));
        assert_eq!(parse(&o).unwrap().binary_major, None);
        o.push(("binary.want_binary_basetypes".into(), Some("1".into())));
        assert_eq!(parse(&o).unwrap().binary_major, Some(1700));
        o.pop();
        o.push(("binary.want_binary_basetypes".into(), Some("0".into())));
        assert_eq!(parse(&o).unwrap().binary_major, None);
    }

    #[test]
    fn sets_origins_and_table() {
        let mut o = opts(&BASE);
        o.extend(opts(&[
            ("spock.replication_set_names", "default, \"My,Set\""),
            ("spock.forward_origins", "all"),
            ("spock.replicate_only_table", "public.t1"),
        ]));
        let p = parse(&o).unwrap();
        assert_eq!(p.replication_sets, ["default", "My,Set"]);
        assert!(p.forward_all_origins);
        assert_eq!(p.only_table, Some(("public".into(), "t1".into())));
    }

    #[test]
    fn bad_parameters_are_named() {
        let e = parse(&opts(&BASE[1..])).unwrap_err();
        assert!(e.contains("startup_params_format"), "{e}");
        let e = parse(&opts(&[
            ("startup_params_format", "1"),
            ("max_proto_version", "2"),
            ("min_proto_version", "1"),
        ]))
        .unwrap_err();
        assert!(e.contains("speaks 3 to 4"), "{e}");
        let e = parse(&opts(&[
            ("startup_params_format", "1"),
            ("min_proto_version", "3"),
        ]))
        .unwrap_err();
        assert!(e.contains("max_proto_version"), "{e}");
        let mut o = opts(&BASE);
        o.push(("spock.forward_origins".into(), Some("n1".into())));
        assert!(parse(&o).unwrap_err().contains("forward_origins"));
    }
}
