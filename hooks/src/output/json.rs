//! The `proto_format = json` framing of `spock_output` (upstream's shape): one JSON text per message.

use std::fmt::Write;

/// Appends `s` as a JSON string literal (quotes included), escaped as PostgreSQL's `escape_json`.
pub fn escape(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// An LSN as PostgreSQL prints it (`X/X`).
pub fn lsn(lsn: u64) -> String {
    crate::catalog::format_lsn(lsn)
}

/// `{"action":"S", "params": {…}}`: the startup parameters, every value a string.
pub fn startup(params: &[(String, String)]) -> String {
    let mut out = String::from("{\"action\":\"S\", \"params\": {");
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        escape(&mut out, k);
        out.push(':');
        escape(&mut out, v);
    }
    out.push_str("}}");
    out
}

/// What a BEGIN message tells.
pub struct Begin {
    pub has_catalog_changes: bool,
    /// The replication origin of a forwarded transaction (none for local ones).
    pub origin_id: Option<u16>,
    pub xid: u32,
    pub first_lsn: u64,
    pub origin_lsn: u64,
    /// The commit time as PostgreSQL prints it; none when unknown.
    pub commit_time: Option<String>,
}

/// The BEGIN message; with `no_txinfo` only the action, catalog flag and origin.
pub fn begin(b: &Begin, no_txinfo: bool) -> String {
    let mut out = format!(
        "{{\"action\":\"B\", \"has_catalog_changes\":\"{}\"",
        if b.has_catalog_changes { 't' } else { 'f' }
    );
    if let Some(origin) = b.origin_id {
        let _ = write!(out, ", \"origin_id\":\"{origin}\"");
    }
    if !no_txinfo {
        let _ = write!(
            out,
            ", \"xid\":\"{}\", \"first_lsn\":\"{}\", \"origin_lsn\":\"{}\"",
            b.xid,
            lsn(b.first_lsn),
            lsn(b.origin_lsn)
        );
        if let Some(t) = &b.commit_time {
            out.push_str(", \"commit_time\":");
            escape(&mut out, t);
        }
    }
    out.push('}');
    out
}

/// The COMMIT message; with `no_txinfo` only the action.
pub fn commit(final_lsn: u64, end_lsn: u64, no_txinfo: bool) -> String {
    if no_txinfo {
        return "{\"action\":\"C\"}".into();
    }
    format!(
        "{{\"action\":\"C\", \"final_lsn\":\"{}\", \"end_lsn\":\"{}\"}}",
        lsn(final_lsn),
        lsn(end_lsn)
    )
}

/// A row change: `action` is `I`, `U` or `D`; the tuples are JSON objects already.
pub fn change(
    action: char,
    schema: &str,
    table: &str,
    old: Option<&str>,
    new: Option<&str>,
) -> String {
    let mut out = format!("{{\"action\":\"{action}\",\"relation\":[");
    escape(&mut out, schema);
    out.push(',');
    escape(&mut out, table);
    out.push(']');
    if let Some(old) = old {
        out.push_str(",\"oldtuple\":");
        out.push_str(old);
    }
    if let Some(new) = new {
        out.push_str(",\"newtuple\":");
        out.push_str(new);
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_postgres() {
        let mut s = String::new();
        escape(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
    }

    #[test]
    fn lsns_print_like_pg_lsn() {
        assert_eq!(lsn(0x1_0000_00AB), "1/AB");
        assert_eq!(lsn(0), "0/0");
    }

    #[test]
    fn startup_commit_and_change() {
        assert_eq!(
            startup(&[("a".into(), "1".into()), ("b\"".into(), "t".into())]),
            r#"{"action":"S", "params": {"a":"1","b\"":"t"}}"#
        );
        assert_eq!(
            commit(0x10, 0x1_0000_0020, false),
            r#"{"action":"C", "final_lsn":"0/10", "end_lsn":"1/20"}"#
        );
        assert_eq!(commit(1, 2, true), r#"{"action":"C"}"#);
        assert_eq!(
            change('I', "public", "t\"1", None, Some(r#"{"id":1}"#)),
            r#"{"action":"I","relation":["public","t\"1"],"newtuple":{"id":1}}"#
        );
        assert_eq!(
            change('U', "s", "t", Some("{}"), Some("{}")),
            r#"{"action":"U","relation":["s","t"],"oldtuple":{},"newtuple":{}}"#
        );
    }

    #[test]
    fn begin_with_and_without_txinfo() {
        let mut b = Begin {
            has_catalog_changes: false,
            origin_id: None,
            xid: 742,
            first_lsn: 0x1_0000_0010,
            origin_lsn: 0,
            commit_time: Some("2026-01-01 00:00:00+00".into()),
        };
        assert_eq!(
            begin(&b, false),
            r#"{"action":"B", "has_catalog_changes":"f", "xid":"742", "first_lsn":"1/10", "origin_lsn":"0/0", "commit_time":"2026-01-01 00:00:00+00"}"#
        );
        b.origin_id = Some(3);
        b.has_catalog_changes = true;
        assert_eq!(
            begin(&b, true),
            r#"{"action":"B", "has_catalog_changes":"t", "origin_id":"3"}"#
        );
    }
}
