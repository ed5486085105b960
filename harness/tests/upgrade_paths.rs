//! Every update path of every extension ends exactly where a fresh install starts.
//!
//! The versions come from the script names in each crate's `sql/` directory (base scripts
//! `<ext>--<v>.sql`, update steps `<ext>--<a>--<b>.sql`; the current version's script is generated
//! from the library), so scripts added later are covered without touching this file. For every
//! installable old version: CREATE EXTENSION … VERSION, write a little data, ALTER EXTENSION …
//! UPDATE, then compare every member object's definition with a fresh CREATE EXTENSION in another
//! database. Update steps into an intermediate version are held to that version's base script
//! the same way.

mod common;

// One test per major for each of these (`name::pg17`…); see `common::per_major`.
crate::per_major!(
    upstream_old_versions_install_and_work,
    every_update_path_ends_like_a_fresh_install,
);

use harness::{ClusterOptions, Node};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// The extensions of the kernel distribution and their crate directories.
const EXTENSIONS: &[(&str, &str)] = &[
    ("spock", "hooks"),
    ("snowflake", "snowflake"),
    ("lolor", "lolor"),
];

fn crate_dir(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(dir)
}

/// `default_version` from the extension's control file.
fn current_version(name: &str, dir: &str) -> String {
    let control = crate_dir(dir).join(format!("{name}.control"));
    let text = std::fs::read_to_string(&control).unwrap();
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == "default_version")
        .map(|(_, v)| v.trim().trim_matches('\'').to_string())
        .unwrap_or_else(|| panic!("{} has no default_version", control.display()))
}

/// The version graph spelled by an extension's script names.
#[derive(Debug, Default)]
struct Scripts {
    /// Versions with a base (install) script; the current one is generated, so always present.
    bases: BTreeSet<String>,
    /// Update steps (from, to).
    steps: BTreeSet<(String, String)>,
}

impl Scripts {
    fn from_names<'a>(name: &str, current: &str, files: impl Iterator<Item = &'a str>) -> Scripts {
        let prefix = format!("{name}--");
        let mut s = Scripts::default();
        s.bases.insert(current.to_string());
        for file in files {
            // `.sql.in` steps are templates `cargo xtask` renders into `.sql` scripts.
            let Some(rest) = file
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".sql").or_else(|| r.strip_suffix(".sql.in")))
            else {
                continue;
            };
            match rest.split_once("--") {
                Some((a, b)) => s.steps.insert((a.to_string(), b.to_string())),
                None => s.bases.insert(rest.to_string()),
            };
        }
        s
    }

    fn read(name: &str, dir: &str) -> Scripts {
        let sql = crate_dir(dir).join("sql");
        let files: Vec<String> = std::fs::read_dir(&sql)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", sql.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        Scripts::from_names(
            name,
            &current_version(name, dir),
            files.iter().map(|f| f.as_str()),
        )
    }

    /// Every version a script names, oldest first.
    fn versions(&self) -> Vec<String> {
        let mut all: BTreeSet<String> = self.bases.clone();
        for (a, b) in &self.steps {
            all.insert(a.clone());
            all.insert(b.clone());
        }
        let mut all: Vec<String> = all.into_iter().collect();
        all.sort_by_key(|v| version_key(v));
        all
    }

    /// Whether a chain of update steps leads from `from` to `to` (PostgreSQL's rule).
    fn reaches(&self, from: &str, to: &str) -> bool {
        let mut seen = BTreeSet::from([from.to_string()]);
        let mut todo = vec![from.to_string()];
        while let Some(v) = todo.pop() {
            if v == to {
                return true;
            }
            for (a, b) in &self.steps {
                if *a == v && seen.insert(b.clone()) {
                    todo.push(b.clone());
                }
            }
        }
        false
    }

    /// CREATE EXTENSION … VERSION 'v' works: a base script for v, or for a version updating to it.
    fn installable(&self, v: &str) -> bool {
        self.bases.iter().any(|b| self.reaches(b, v))
    }
}

/// Orders "1.2" < "1.10" < "2.0" (numerically per component).
fn version_key(v: &str) -> Vec<(u64, String)> {
    v.split('.')
        .map(|p| (p.parse().unwrap_or(u64::MAX), p.to_string()))
        .collect()
}

/// One line per fact about the extension's member objects: object, property, value (JSON-quoted
/// so that multi-line function bodies stay on one line). `{ext}` is the extension name.
const FACTS: &str = r#"
WITH ext AS (SELECT e.oid AS extoid, e.* FROM pg_extension e WHERE e.extname = '{ext}'),
m AS (
    SELECT d.classid, d.objid, d.objsubid, pg_describe_object(d.classid, d.objid, d.objsubid) AS obj
      FROM pg_depend d JOIN ext ON d.refobjid = ext.extoid
     WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
),
facts(obj, prop, val) AS (
    SELECT obj, 'member', '' FROM m
  UNION ALL
    SELECT 'extension', x.prop, x.val FROM ext, LATERAL (VALUES
        ('version', ext.extversion),
        ('schema', ext.extnamespace::regnamespace::text),
        ('relocatable', ext.extrelocatable::text),
        ('owner', pg_get_userbyid(ext.extowner)::text),
        ('comment', obj_description(ext.extoid, 'pg_extension')),
        ('schema acl', (SELECT nspacl::text FROM pg_namespace WHERE oid = ext.extnamespace)),
        ('schema owner', (SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace
                           WHERE oid = ext.extnamespace)),
        ('dumped tables', (SELECT string_agg(c::regclass::text || ' ' || coalesce(w, ''), ', '
                                             ORDER BY c::regclass::text)
                             FROM unnest(ext.extconfig, ext.extcondition) AS u(c, w)))
    ) x(prop, val)
  UNION ALL
    SELECT m.obj, 'comment', d.description
      FROM m JOIN pg_description d
        ON d.classoid = m.classid AND d.objoid = m.objid AND d.objsubid = m.objsubid
  UNION ALL
    SELECT m.obj, 'initial privileges ' || i.objsubid, i.initprivs::text
      FROM m JOIN pg_init_privs i ON i.classoid = m.classid AND i.objoid = m.objid
  UNION ALL
    SELECT m.obj, x.prop, x.val
      FROM m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
      JOIN pg_language l ON l.oid = p.prolang,
      LATERAL (VALUES
        ('kind', p.prokind::text),
        ('arguments', pg_get_function_arguments(p.oid)),
        ('result', pg_get_function_result(p.oid)),
        ('language', l.lanname::text),
        ('source (C symbol)', p.prosrc),
        ('library', p.probin),
        ('volatility', p.provolatile::text),
        ('strict', p.proisstrict::text),
        ('security definer', p.prosecdef::text),
        ('leakproof', p.proleakproof::text),
        ('config', p.proconfig::text),
        ('parallel', p.proparallel::text),
        ('cost', p.procost::text),
        ('rows', p.prorows::text),
        ('support', p.prosupport::regproc::text),
        ('acl', p.proacl::text),
        ('owner', pg_get_userbyid(p.proowner)::text)
      ) x(prop, val)
  UNION ALL
    SELECT m.obj, 'aggregate',
           ROW(a.aggkind, a.aggnumdirectargs, a.aggtransfn::regprocedure, a.aggfinalfn::regproc,
               a.aggcombinefn::regproc, a.aggserialfn::regproc, a.aggdeserialfn::regproc,
               a.aggfinalextra, a.aggfinalmodify, a.aggsortop::regoperator,
               a.aggtranstype::regtype, a.aggtransspace, a.agginitval)::text
      FROM m JOIN pg_aggregate a ON m.classid = 'pg_proc'::regclass AND a.aggfnoid = m.objid
  UNION ALL
    SELECT m.obj, x.prop, x.val
      FROM m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid,
      LATERAL (VALUES
        ('kind', c.relkind::text),
        ('persistence', c.relpersistence::text),
        ('acl', c.relacl::text),
        ('options', c.reloptions::text),
        ('replica identity', c.relreplident::text),
        ('row security', ROW(c.relrowsecurity, c.relforcerowsecurity)::text),
        ('owner', pg_get_userbyid(c.relowner)::text),
        ('view definition', CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END)
      ) x(prop, val)
  UNION ALL
    -- Columns by position among the live ones: an update that drops and re-adds columns leaves
    -- holes in attnum but must keep the order a fresh table has.
    SELECT m.obj, 'column ' || row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum),
           ROW(a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated, a.attstorage,
               a.attcollation::regcollation, a.attacl, col_description(a.attrelid, a.attnum))::text
      FROM m JOIN pg_attribute a ON m.classid = 'pg_class'::regclass AND a.attrelid = m.objid
      LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
     WHERE a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
    SELECT m.obj, 'constraint ' || con.conname, pg_get_constraintdef(con.oid)
      FROM m JOIN pg_constraint con
        ON (m.classid = 'pg_class'::regclass AND con.conrelid = m.objid)
        OR (m.classid = 'pg_type'::regclass AND con.contypid = m.objid)
  UNION ALL
    SELECT m.obj, 'index ' || i.relname,
           pg_get_indexdef(x.indexrelid)
           || CASE WHEN x.indisclustered THEN ' (clustered)' ELSE '' END
           || CASE WHEN x.indisreplident THEN ' (replica identity)' ELSE '' END
      FROM m JOIN pg_index x ON m.classid = 'pg_class'::regclass AND x.indrelid = m.objid
      JOIN pg_class i ON i.oid = x.indexrelid
  UNION ALL
    SELECT m.obj, 'trigger ' || t.tgname, pg_get_triggerdef(t.oid) || ' ' || t.tgenabled::text
      FROM m JOIN pg_trigger t ON m.classid = 'pg_class'::regclass AND t.tgrelid = m.objid
     WHERE NOT t.tgisinternal
  UNION ALL
    SELECT m.obj, 'policy ' || p.polname,
           ROW(p.polcmd, p.polpermissive, p.polroles::regrole[], pg_get_expr(p.polqual, p.polrelid),
               pg_get_expr(p.polwithcheck, p.polrelid))::text
      FROM m JOIN pg_policy p ON m.classid = 'pg_class'::regclass AND p.polrelid = m.objid
  UNION ALL
    SELECT m.obj, 'sequence',
           ROW(s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmax, s.seqmin, s.seqcache,
               s.seqcycle)::text
      FROM m JOIN pg_sequence s ON m.classid = 'pg_class'::regclass AND s.seqrelid = m.objid
  UNION ALL
    SELECT m.obj, 'owned by', pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid)
      FROM m JOIN pg_depend d ON m.classid = 'pg_class'::regclass AND d.classid = m.classid
       AND d.objid = m.objid AND d.objsubid = 0 AND d.deptype IN ('a', 'i')
       AND d.refclassid = 'pg_class'::regclass
      JOIN pg_class c ON c.oid = m.objid AND c.relkind = 'S'
  UNION ALL
    SELECT m.obj, x.prop, x.val
      FROM m JOIN pg_type t ON m.classid = 'pg_type'::regclass AND t.oid = m.objid,
      LATERAL (VALUES
        ('definition', ROW(t.typtype, t.typcategory, t.typlen, t.typbyval, t.typalign,
                           t.typstorage, t.typelem::regtype, t.typrelid::regclass,
                           t.typinput::regproc, t.typoutput::regproc, t.typreceive::regproc,
                           t.typsend::regproc, t.typmodin::regproc, t.typmodout::regproc,
                           t.typanalyze::regproc, t.typsubscript::regproc, t.typnotnull,
                           t.typbasetype::regtype, t.typtypmod, t.typdefault,
                           t.typcollation::regcollation)::text),
        ('acl', t.typacl::text),
        ('owner', pg_get_userbyid(t.typowner)::text),
        ('enum labels', (SELECT string_agg(enumlabel::text, ', ' ORDER BY enumsortorder)
                           FROM pg_enum WHERE enumtypid = t.oid)),
        ('attributes', (SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod),
                                          ', ' ORDER BY attnum)
                          FROM pg_attribute
                         WHERE attrelid = t.typrelid AND attnum > 0 AND NOT attisdropped))
      ) x(prop, val)
  UNION ALL
    SELECT m.obj, 'event trigger',
           ROW(e.evtevent, e.evtfoid::regprocedure, e.evtenabled, e.evttags,
               pg_get_userbyid(e.evtowner))::text
      FROM m JOIN pg_event_trigger e ON m.classid = 'pg_event_trigger'::regclass AND e.oid = m.objid
  UNION ALL
    SELECT m.obj, 'schema', ROW(n.nspacl, pg_get_userbyid(n.nspowner))::text
      FROM m JOIN pg_namespace n ON m.classid = 'pg_namespace'::regclass AND n.oid = m.objid
)
SELECT obj || E'\t' || prop || E'\t' || coalesce(to_json(val)::text, 'null')
  FROM facts ORDER BY obj, prop
"#;

/// (object, property) → value, for the extension `ext` installed in `db`.
type Facts = BTreeMap<(String, String), String>;

fn facts(node: &Node, db: &str, ext: &str) -> Facts {
    let text = node
        .sql_in(db, &FACTS.replace("{ext}", ext))
        .unwrap_or_else(|e| panic!("cannot list the objects of {ext} in {db}: {e}"));
    let mut facts = Facts::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, '\t');
        let (Some(obj), Some(prop), Some(val)) = (parts.next(), parts.next(), parts.next()) else {
            panic!("unexpected fact line {line:?}");
        };
        facts.insert((obj.to_string(), prop.to_string()), val.to_string());
    }
    facts
}

/// Every difference between `got` and the fresh install `want`, one line each, naming the object.
fn differences(got: &Facts, want: &Facts) -> Vec<String> {
    let members = |f: &Facts| -> BTreeSet<String> {
        f.keys()
            .filter(|(_, p)| p == "member")
            .map(|(o, _)| o.clone())
            .collect()
    };
    let (got_members, want_members) = (members(got), members(want));
    let mut out = Vec::new();
    for o in want_members.difference(&got_members) {
        out.push(format!("{o}: missing (a fresh install has it)"));
    }
    for o in got_members.difference(&want_members) {
        out.push(format!("{o}: left over (a fresh install does not have it)"));
    }
    // Properties of the objects both have (and of the extension itself).
    let shared =
        |o: &str| o == "extension" || (got_members.contains(o) && want_members.contains(o));
    let keys: BTreeSet<&(String, String)> = got.keys().chain(want.keys()).collect();
    for key @ (obj, prop) in keys {
        if !shared(obj) {
            continue;
        }
        let (g, w) = (got.get(key), want.get(key));
        if g != w {
            let show = |v: Option<&String>| v.map_or("(none)".to_string(), |v| v.clone());
            out.push(format!(
                "{obj}: {prop} is {} but a fresh install has {}",
                show(g),
                show(w)
            ));
        }
    }
    out
}

/// A database name for one scenario (lower case, no dots).
fn db_name(parts: &[&str]) -> String {
    parts.join("_").replace(['.', '-'], "_")
}

fn create_db(node: &Node, db: &str) {
    node.sql(&format!("CREATE DATABASE {db}")).unwrap();
}

/// Installs `ext` (at `version`, or the default) in a new database `db`; the error text if that
/// fails.
fn install(node: &Node, db: &str, ext: &str, version: Option<&str>) -> Result<(), String> {
    create_db(node, db);
    let at = version.map_or(String::new(), |v| format!(" VERSION '{v}'"));
    node.sql_in(db, &format!("CREATE EXTENSION {ext}{at} CASCADE"))
        .map(drop)
        .map_err(|e| e.to_string())
}

fn extversion(node: &Node, db: &str, ext: &str) -> String {
    node.sql_in(
        db,
        &format!("SELECT extversion FROM pg_extension WHERE extname = '{ext}'"),
    )
    .unwrap()
}

/// Data written at an old version that the update must keep usable: (write, check, expected).
fn kept_data(ext: &str) -> Option<(&'static str, &'static str, &'static str)> {
    match ext {
        // An explicit OID needs no lolor.node; reading it back through lo_get proves the
        // functions still reach lolor's tables after the update.
        "lolor" => Some((
            "SELECT lo_from_bytea(4242, 'kept')",
            "SELECT convert_from(lo_get(4242), 'UTF8')",
            "kept",
        )),
        "snowflake" => Some((
            "CREATE TABLE kept AS SELECT snowflake.nextval() AS id",
            "SELECT snowflake.nextval() > id AND snowflake.get_node(id) = 1 FROM kept",
            "t",
        )),
        _ => None,
    }
}

/// Checks every update path of `ext` on `node`; returns the problems found.
fn check_extension(node: &Node, ext: &str, dir: &str) -> Vec<String> {
    let scripts = Scripts::read(ext, dir);
    let current = current_version(ext, dir);
    let mut problems = Vec::new();

    // The fresh install every path must end at.
    let fresh_db = db_name(&[ext, "fresh"]);
    if let Err(e) = install(node, &fresh_db, ext, None) {
        return vec![format!("{ext}: CREATE EXTENSION {ext} failed: {e}")];
    }
    let fresh = facts(node, &fresh_db, ext);
    let got = extversion(node, &fresh_db, ext);
    if got != current {
        problems.push(format!(
            "{ext}: a fresh install is at version {got}, the control file says {current}"
        ));
    }
    if !fresh.keys().any(|(_, p)| p == "member") {
        problems.push(format!("{ext}: a fresh install has no member objects"));
    }

    // Each base script that is not the current version is a target of its own: updates into it
    // must end where CREATE EXTENSION … VERSION puts it.
    let mut at_version: BTreeMap<String, Facts> = BTreeMap::new();
    at_version.insert(current.clone(), fresh);
    for v in scripts.versions() {
        if v == current {
            continue;
        }
        if !scripts.reaches(&v, &current) {
            problems.push(format!("{ext} {v}: no update path to {current}"));
        }
        if !scripts.installable(&v) {
            // A version only databases made by upstream can be at (e.g. spock 4.0.x, which
            // upstream reaches 5.0.0 from by update steps alone): CREATE EXTENSION cannot put a
            // database there, so its steps are covered only from the first installable version.
            eprintln!("{ext} {v}: update steps only, no base script; not installable here");
            continue;
        }
        if scripts.bases.contains(&v) {
            let db = db_name(&[ext, "at", &v]);
            match install(node, &db, ext, Some(&v)) {
                Ok(()) => {
                    at_version.insert(v.clone(), facts(node, &db, ext));
                }
                Err(e) => problems.push(format!(
                    "{ext}: CREATE EXTENSION {ext} VERSION '{v}' failed: {e}"
                )),
            }
        }
    }

    for from in scripts.versions() {
        if from == current || !scripts.installable(&from) {
            continue;
        }
        for (to, want) in &at_version {
            if *to == from || !scripts.reaches(&from, to) {
                continue;
            }
            let db = db_name(&[ext, &from, "to", to]);
            if let Err(e) = install(node, &db, ext, Some(&from)) {
                problems.push(format!(
                    "{ext}: CREATE EXTENSION {ext} VERSION '{from}' failed: {e}"
                ));
                continue;
            }
            let kept = kept_data(ext).filter(|_| *to == current);
            if let Some((write, _, _)) = kept {
                node.sql_in(&db, write).unwrap_or_else(|e| {
                    panic!("{ext} {from}: cannot write data before the update: {e}")
                });
            }
            let update = if *to == current {
                format!("ALTER EXTENSION {ext} UPDATE")
            } else {
                format!("ALTER EXTENSION {ext} UPDATE TO '{to}'")
            };
            if let Err(e) = node.sql_in(&db, &update) {
                problems.push(format!("{ext} {from} → {to}: {update} failed: {e}"));
                continue;
            }
            let path = format!("{ext} {from} → {to} (vs CREATE EXTENSION at {to})");
            for d in differences(&facts(node, &db, ext), want) {
                problems.push(format!("{path}: {d}"));
            }
            if let Some((_, check, expected)) = kept {
                match node.sql_in(&db, check) {
                    Ok(v) if v == expected => {}
                    other => problems.push(format!(
                        "{path}: data written at {from} is not usable after the update: \
                         `{check}` gave {other:?}, expected {expected}"
                    )),
                }
            }
        }
    }
    problems
}

fn every_update_path_ends_like_a_fresh_install(kernel: &harness::Kernel) {
    // spock must be preloaded (the default); snowflake ids need a node number.
    let cluster = harness::Cluster::start(
        kernel,
        &ClusterOptions::default().setting("snowflake.node", "1"),
    )
    .unwrap();
    let node = cluster.node(0);
    let mut problems = Vec::new();
    for (ext, dir) in EXTENSIONS {
        problems.extend(check_extension(node, ext, dir));
    }
    assert!(
        problems.is_empty(),
        "PostgreSQL {}: {} update-path problem(s):\n  {}\nlog:\n{}",
        kernel.major,
        problems.len(),
        problems.join("\n  "),
        node.log_tail(30)
    );
}

/// Upstream's old versions that databases in the field may be at: each has a script and installs.
fn upstream_old_versions_install_and_work(kernel: &harness::Kernel) {
    // From upstream's release trees (shared spec, upstream-versions.md).
    let expected: &[(&str, &str, &[&str])] = &[
        (
            "snowflake",
            "snowflake",
            &["1.0", "1.1", "1.2", "2.0", "2.2", "2.3"],
        ),
        ("lolor", "lolor", &["1.0", "1.2.1"]),
    ];
    for (ext, dir, versions) in expected {
        let scripts = Scripts::read(ext, dir);
        for v in *versions {
            assert!(
                scripts.installable(v),
                "{ext} {v}: no script installs it (have {:?})",
                scripts.versions()
            );
        }
    }
    let cluster = harness::Cluster::start(
        kernel,
        &ClusterOptions::default()
            .preload(None)
            .setting("snowflake.node", "7"),
    )
    .unwrap();
    let n = cluster.node(0);
    let major = kernel.major;

    install(n, "sf10", "snowflake", Some("1.0"))
        .unwrap_or_else(|e| panic!("PostgreSQL {major}: snowflake VERSION '1.0': {e}"));
    assert_eq!(extversion(n, "sf10", "snowflake"), "1.0");
    assert_eq!(
        n.sql_in(
            "sf10",
            "SELECT snowflake.get_node(snowflake.nextval()), \
             snowflake.format(snowflake.nextval()) ? 'node'"
        )
        .unwrap(),
        "7|t",
        "PostgreSQL {major}: snowflake 1.0 issues ids (its format() says \"node\")"
    );

    // The pre-2.4 conversion finds the referencing columns with one recursive query (2.4
    // has a helper function for that); a reference cycle must not loop.
    install(n, "sf23", "snowflake", Some("2.3"))
        .unwrap_or_else(|e| panic!("PostgreSQL {major}: snowflake VERSION '2.3': {e}"));
    assert_eq!(
        n.sql_in(
            "sf23",
            "CREATE TABLE a (id serial PRIMARY KEY); \
             CREATE TABLE b (id int PRIMARY KEY REFERENCES a); \
             ALTER TABLE a ADD FOREIGN KEY (id) REFERENCES b; \
             CREATE TABLE c (a_id int REFERENCES a, n int); \
             SET client_min_messages = warning; \
             SELECT snowflake.convert_sequence_to_snowflake('a_id_seq'); \
             SELECT string_agg(attrelid::regclass || '.' || attname || ':' || atttypid::regtype, ' ' \
                               ORDER BY attrelid::regclass::text, attname) \
               FROM pg_attribute \
              WHERE attrelid IN ('a'::regclass, 'b'::regclass, 'c'::regclass) AND attnum > 0; \
             SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'a'::regclass; \
             SELECT snowflake.get_node(snowflake.nextval('a_id_seq')) = 7"
        )
        .unwrap(),
        "3\na.id:bigint b.id:bigint c.a_id:bigint c.n:integer\n\
         snowflake.nextval('a_id_seq'::regclass)\nt",
        "PostgreSQL {major}: snowflake 2.3 converts a serial and the columns referencing it"
    );

    install(n, "lo121", "lolor", Some("1.2.1"))
        .unwrap_or_else(|e| panic!("PostgreSQL {major}: lolor VERSION '1.2.1': {e}"));
    assert_eq!(extversion(n, "lo121", "lolor"), "1.2.1");
    assert_eq!(
        n.sql_in(
            "lo121",
            "SELECT lo_from_bytea(77, 'old'); SELECT convert_from(lo_get(77), 'UTF8'), \
             (SELECT count(*) FROM lolor.pg_largeobject_metadata), \
             to_regprocedure('lolor.is_enabled()') IS NULL"
        )
        .unwrap(),
        "77\nold|1|t",
        "PostgreSQL {major}: lolor 1.2.1 stores objects in its tables and has no is_enabled()"
    );
    // Without lolor.disable() (added in 1.2.2) DROP EXTENSION still gives the built-in
    // functions their names back.
    n.sql_in("lo121", "SELECT lo_unlink(77); DROP EXTENSION lolor")
        .unwrap_or_else(|e| panic!("PostgreSQL {major}: DROP EXTENSION lolor at 1.2.1: {e}"));
    assert_eq!(
        n.sql_in(
            "lo121",
            "SELECT count(*) FROM pg_proc WHERE proname IN ('lo_open_orig', 'lo_get_orig', 'lolor_lo_open', 'lolor_lo_get'); \
             SELECT lo_unlink(lo_from_bytea(0, 'native'))"
        )
        .unwrap(),
        "0\n1",
        "PostgreSQL {major}: after DROP EXTENSION lolor at 1.2.1 the built-ins are back"
    );
}

#[test]
fn script_names_spell_the_version_graph() {
    let files = [
        "x--1.0.sql",
        "x--1.0--1.1.sql",
        "x--1.1--2.0.sql",
        "x--0.9--1.0.sql",
        "x--3.0--3.1.sql",
        "x.sql",
        "y--1.0.sql",
    ];
    let s = Scripts::from_names("x", "2.0", files.into_iter());
    assert_eq!(s.versions(), ["0.9", "1.0", "1.1", "2.0", "3.0", "3.1"]);
    assert!(s.installable("1.1") && s.installable("2.0"));
    assert!(!s.installable("0.9") && !s.installable("3.0"));
    assert!(s.reaches("0.9", "2.0") && !s.reaches("3.0", "2.0"));
    assert!(version_key("1.10") > version_key("1.9"));
}
