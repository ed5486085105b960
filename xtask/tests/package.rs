//! The `pgedge-<M>` packages as a packager checks them: metadata and file lists through dpkg-deb
//! and rpm, lintian and rpmlint, byte-for-byte reproducibility, a real apt install on this
//! machine with two installed-package nodes replicating through spock, removal and purge, the
//! maintainer scripts in an empty dpkg root, and the .rpm installed into an rpm root whose
//! server loads the extensions. Needs root (CI runs the suite as root on Debian 12).

mod package_support;

use package_support::*;
use std::{fs, os::unix::fs::MetadataExt, path::Path};

/// Files every package must carry, relative to `/`.
fn expected_files(major: u32) -> Vec<String> {
    let p = format!("usr/pgedge-{major}");
    let mut v: Vec<String> = [
        "bin/postgres",
        "bin/initdb",
        "bin/pg_ctl",
        "bin/psql",
        "bin/pg_dump",
        "bin/pg_config",
        "bin/spockctrl",
        "lib/libpq.so.5",
        "lib/postgresql/spock.so",
        "lib/postgresql/spock_output.so",
        "lib/postgresql/snowflake.so",
        "lib/postgresql/lolor.so",
        "lib/postgresql/pg_stat_statements.so",
        "lib/postgresql/pgxs/src/makefiles/pgxs.mk",
        "include/postgresql/server/postgres.h",
        "include/libpq-fe.h",
        "share/postgresql/extension/spock.control",
        "share/postgresql/extension/spock--5.0.5.sql",
        "share/postgresql/extension/snowflake.control",
        "share/postgresql/extension/lolor.control",
        "share/postgresql/extension/pg_stat_statements.control",
        "share/postgresql/pgedge.conf.sample",
        "share/postgresql/postgresql.conf.sample",
    ]
    .iter()
    .map(|f| format!("{p}/{f}"))
    .collect();
    v.push(format!("usr/share/doc/pgedge-{major}/copyright"));
    v
}

fn field(info: &str, name: &str) -> String {
    // dpkg-deb writes " Name: value", rpm "Name        : value".
    info.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {name} in\n{info}"))
}

fn pg_version(major: u32) -> String {
    let pg_config = std::env::var(format!("PGEDGE_PG_CONFIG_{major}")).unwrap();
    let v = run(&mut cmd(&pg_config, &["--version"]));
    // "PostgreSQL 17.11 (pgEdge 0.1.0)"
    v.split_whitespace().nth(1).unwrap().to_string()
}

#[test]
fn deb_metadata_and_contents() {
    for major in majors() {
        let pkgs = packages(major);
        let deb = pkgs.deb.display().to_string();
        let name = pkgs.deb.file_name().unwrap().to_string_lossy().into_owned();
        let version = format!("{}-1", pg_version(major));
        assert_eq!(name, format!("pgedge-{major}_{version}_amd64.deb"));
        let info = run(&mut cmd("dpkg-deb", &["--info", &deb]));
        assert_eq!(field(&info, "Package"), format!("pgedge-{major}"));
        assert_eq!(field(&info, "Version"), version);
        assert_eq!(field(&info, "Architecture"), "amd64");
        assert!(field(&info, "Maintainer").contains('@'), "{info}");
        let depends = field(&info, "Depends");
        for dep in [
            "libc6 (>= ",
            "libssl3",
            "libicu72",
            "libzstd1",
            "liblz4-1",
            "libxml2",
            "zlib1g",
            "tzdata",
            "passwd",
        ] {
            assert!(depends.contains(dep), "Depends lacks {dep}: {depends}");
        }
        assert!(
            !depends.contains("libpq"),
            "private libpq must not be a dependency: {depends}"
        );
        for f in ["Conflicts", "Replaces"] {
            let v = field(&info, f);
            for ext in ["spock", "snowflake", "lolor"] {
                assert!(v.contains(&format!("pgedge-{major}-{ext}")), "{f}: {v}");
            }
        }
        for script in ["postinst", "postrm", "prerm"] {
            assert!(info.contains(script), "no {script} in\n{info}");
        }
        let contents = run(&mut cmd("dpkg-deb", &["--contents", &deb]));
        for line in contents.lines() {
            assert!(line.contains(" root/root "), "not owned by root: {line}");
        }
        let names: Vec<&str> = contents
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .collect();
        for want in expected_files(major) {
            assert!(
                names.contains(&format!("./{want}").as_str()),
                "missing ./{want}"
            );
        }
        assert!(names.contains(&format!("./lib/systemd/system/pgedge-{major}@.service").as_str()));
        let mode_of = |path: &str| {
            contents
                .lines()
                .find(|l| l.ends_with(path) || l.contains(&format!("{path} -> ")))
                .unwrap_or_else(|| panic!("no {path}"))
                .split_whitespace()
                .next()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            mode_of(&format!("./usr/pgedge-{major}/bin/postgres")),
            "-rwxr-xr-x"
        );
        assert_eq!(
            mode_of(&format!("./usr/pgedge-{major}/lib/postgresql/spock.so")),
            "-rw-r--r--"
        );
        assert!(
            mode_of(&format!(
                "./usr/pgedge-{major}/lib/postgresql/spock_output.so"
            ))
            .starts_with('l')
        );
        // The source date is every file's mtime.
        assert!(
            contents.lines().all(|l| l.contains("2026-01-01 00:00")),
            "mtimes"
        );
    }
}

#[test]
fn rpm_metadata_and_contents() {
    for major in majors() {
        let pkgs = packages(major);
        let rpm = pkgs.rpm.display().to_string();
        let version = pg_version(major);
        assert_eq!(
            pkgs.rpm.file_name().unwrap().to_string_lossy(),
            format!("pgedge-{major}-{version}-1.x86_64.rpm")
        );
        let info = run(&mut cmd("rpm", &["-qip", &rpm]));
        assert_eq!(field(&info, "Name"), format!("pgedge-{major}"));
        assert_eq!(field(&info, "Version"), version);
        assert_eq!(field(&info, "Release"), "1");
        assert_eq!(field(&info, "Architecture"), "x86_64");
        assert_eq!(field(&info, "License"), "PostgreSQL");
        let date = run(&mut cmd("rpm", &["-qp", "--qf", "%{BUILDTIME}", &rpm]));
        assert_eq!(date, EPOCH.to_string());
        let requires = run(&mut cmd("rpm", &["-qp", "--requires", &rpm]));
        for want in [
            "libc.so.6()(64bit)",
            "libssl.so.3()(64bit)",
            "libicuuc.so.72()(64bit)",
            "libzstd.so.1()(64bit)",
            "tzdata",
        ] {
            assert!(
                requires.lines().any(|l| l.trim() == want),
                "no {want} in\n{requires}"
            );
        }
        assert!(
            requires.lines().any(|l| l.starts_with("libc.so.6(GLIBC_")),
            "{requires}"
        );
        let provides = run(&mut cmd("rpm", &["-qp", "--provides", &rpm]));
        assert!(
            !provides.contains(".so"),
            "private libraries advertised:\n{provides}"
        );
        let conflicts = run(&mut cmd(
            "rpm",
            &["-qp", "--conflicts", "--obsoletes", &rpm],
        ));
        for ext in ["spock", "snowflake", "lolor"] {
            assert!(
                conflicts.contains(&format!("pgedge-{major}-{ext}")),
                "{conflicts}"
            );
        }
        let list = run(&mut cmd("rpm", &["-qlp", &rpm]));
        let files: Vec<&str> = list.lines().collect();
        for want in expected_files(major) {
            let want = format!("/{want}").replace("/usr/share/doc/", "/usr/share/licenses/");
            assert!(files.contains(&want.as_str()), "missing {want}");
        }
        assert!(
            files.contains(&format!("/usr/lib/systemd/system/pgedge-{major}@.service").as_str())
        );
        // Only directories of its own: never /usr or /usr/lib.
        let dirs = run(&mut cmd("rpm", &["-qlvp", &rpm]));
        for line in dirs.lines().filter(|l| l.starts_with('d')) {
            let path = line.split_whitespace().last().unwrap();
            assert!(
                path.starts_with(&format!("/usr/pgedge-{major}"))
                    || path.ends_with(&format!("pgedge-{major}")),
                "foreign directory {path}"
            );
        }
        // Scriptlets exist and are valid shell.
        let scripts = run(&mut cmd("rpm", &["-qp", "--scripts", &rpm]));
        for kind in ["preinstall", "postinstall", "preuninstall", "postuninstall"] {
            assert!(
                scripts.contains(&format!("{kind} scriptlet (using /bin/sh)")),
                "{scripts}"
            );
        }
        for tag in ["PREIN", "POSTIN", "PREUN", "POSTUN"] {
            let body = run(&mut cmd(
                "rpm",
                &["-qp", "--qf", &format!("%{{{tag}}}"), &rpm],
            ));
            let file = pkgs.dir.join(format!("{tag}.sh"));
            fs::write(&file, body).unwrap();
            run(&mut cmd("sh", &["-n", &file.display().to_string()]));
        }
    }
}

#[test]
fn lintian_and_rpmlint_report_no_errors() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let rc = repo.join("packaging/rpm/rpmlintrc").display().to_string();
    for major in majors() {
        let pkgs = packages(major);
        let (_, out, err) = try_run(&mut cmd(
            "lintian",
            &["--tag-display-limit", "0", &pkgs.deb.display().to_string()],
        ));
        let tags: Vec<&str> = out
            .lines()
            .filter(|l| l.len() > 2 && l.as_bytes()[1] == b':')
            .collect();
        assert!(
            !tags.is_empty() || err.is_empty(),
            "lintian did not run: {err}"
        );
        let errors: Vec<&&str> = tags.iter().filter(|l| l.starts_with("E:")).collect();
        assert!(errors.is_empty(), "lintian errors:\n{out}");
        // The warnings docs/packaging.md accepts, and no others.
        for line in &tags {
            let tag = line.split_whitespace().nth(2).unwrap_or_default();
            assert!(
                [
                    "initial-upload-closes-no-bugs",
                    "maintainer-script-calls-systemctl"
                ]
                .contains(&tag),
                "unexpected lintian tag: {line}"
            );
        }
        let (_, out, err) = try_run(&mut cmd(
            "rpmlint",
            &["-r", &rc, &pkgs.rpm.display().to_string()],
        ));
        let summary = out
            .lines()
            .find(|l| l.contains("packages and") && l.contains("errors"))
            .unwrap_or_else(|| panic!("no rpmlint summary:\n{out}\n{err}"));
        assert!(summary.contains(" 0 errors"), "rpmlint:\n{out}");
    }
}

#[test]
fn checksums_and_sbom_describe_the_build() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let sources = fs::read_to_string(repo.join("sources.toml")).unwrap();
    for major in majors() {
        let pkgs = packages(major);
        let mut check = cmd("sha256sum", &["--check", "--strict", "SHA256SUMS"]);
        check.current_dir(&pkgs.dir);
        let out = run(&mut check);
        assert_eq!(
            out.lines().filter(|l| l.ends_with(": OK")).count(),
            3,
            "{out}"
        );
        let sbom: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&pkgs.sbom).unwrap()).unwrap();
        assert_eq!(sbom["bomFormat"], "CycloneDX");
        assert_eq!(sbom["metadata"]["timestamp"], "2026-01-01T00:00:00Z");
        let serial = sbom["serialNumber"].as_str().unwrap();
        let uuid: Vec<&str> = serial
            .strip_prefix("urn:uuid:")
            .unwrap()
            .split('-')
            .collect();
        assert_eq!(
            uuid.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(
            uuid[2].starts_with('5') && "89ab".contains(&uuid[3][..1]),
            "{serial}"
        );
        let components = sbom["components"].as_array().unwrap();
        let pg = components
            .iter()
            .find(|c| c["name"] == "postgresql")
            .unwrap();
        let version = pg_version(major);
        assert_eq!(pg["version"], version.as_str());
        let sha = pg["hashes"][0]["content"].as_str().unwrap();
        assert!(
            sources.contains(&format!("version = \"{version}\"\nurl")) && sources.contains(sha),
            "{sha} is not the pinned hash of {version}"
        );
        for patch in fs::read_dir(repo.join(format!("patches/{major}"))).unwrap() {
            let patch = patch.unwrap().path();
            let rel = format!(
                "patches/{major}/{}",
                patch.file_name().unwrap().to_string_lossy()
            );
            let c = components
                .iter()
                .find(|c| c["name"] == rel.as_str())
                .unwrap_or_else(|| panic!("no {rel}"));
            let hash = run(&mut cmd("sha256sum", &[&patch.display().to_string()]));
            assert_eq!(
                c["hashes"][0]["content"],
                hash.split_whitespace().next().unwrap()
            );
        }
        for (ext, v) in [("spock", "5.0.5"), ("snowflake", "2.4"), ("lolor", "1.2.2")] {
            assert!(
                components
                    .iter()
                    .any(|c| c["name"] == ext && c["version"] == v),
                "{ext}"
            );
        }
        let pgrx = components
            .iter()
            .find(|c| c["name"] == "pgrx")
            .expect("pgrx crate");
        assert_eq!(pgrx["purl"], "pkg:cargo/pgrx@0.18.1");
    }
}

#[test]
fn packages_are_reproducible() {
    for major in majors() {
        let a = packages(major);
        let b = package_into(major, &test_dir(&format!("pg{major}-again")), EPOCH);
        for (x, y) in [
            (&a.deb, &b.deb),
            (&a.rpm, &b.rpm),
            (&a.sbom, &b.sbom),
            (&a.sums, &b.sums),
        ] {
            assert!(
                fs::read(x).unwrap() == fs::read(y).unwrap(),
                "{} and {} differ",
                x.display(),
                y.display()
            );
        }
        // The date is an input: another one gives other bytes.
        let c = package_into(
            major,
            &test_dir(&format!("pg{major}-later")),
            EPOCH + 86_400,
        );
        assert!(fs::read(&a.deb).unwrap() != fs::read(&c.deb).unwrap());
        assert!(fs::read(&a.rpm).unwrap() != fs::read(&c.rpm).unwrap());
    }
}

/// dpkg into an empty root with the maintainer scripts run on the host under `DPKG_ROOT`:
/// the postgres account is created there, data survives a purge unless asked.
#[test]
fn deb_maintainer_scripts_in_an_empty_root() {
    assert!(is_root(), "the package tests need root");
    for major in majors() {
        let pkgs = packages(major);
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for d in [
            "var/lib/dpkg/info",
            "var/lib/dpkg/updates",
            "var/lib/dpkg/triggers",
            "etc",
        ] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
        fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        fs::write(r.join("etc/group"), "root:x:0:\n").unwrap();
        fs::write(r.join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
        fs::write(r.join("etc/gshadow"), "root:*::\n").unwrap();
        let dpkg = |args: &[&str]| {
            let root_arg = format!("--root={}", r.display());
            let mut all = vec![
                root_arg.as_str(),
                "--force-script-chrootless",
                "--force-not-root",
                "--force-depends",
                "--log=/dev/null",
            ];
            all.extend_from_slice(args);
            cmd("dpkg", &all)
        };
        let deb = pkgs.deb.display().to_string();
        run(&mut dpkg(&["-i", &deb]));
        let passwd = fs::read_to_string(r.join("etc/passwd")).unwrap();
        let user = passwd
            .lines()
            .find(|l| l.starts_with("postgres:"))
            .expect("postgres user created");
        assert!(user.contains(":/var/lib/pgedge:"), "{user}");
        let uid: u32 = user.split(':').nth(2).unwrap().parse().unwrap();
        assert!(
            fs::read_to_string(r.join("etc/group"))
                .unwrap()
                .contains("\npostgres:")
        );
        let main = r.join(format!("var/lib/pgedge/{major}/main"));
        let meta = fs::metadata(&main).unwrap();
        assert_eq!((meta.mode() & 0o777, meta.uid()), (0o700, uid));
        assert!(r.join(format!("usr/pgedge-{major}/bin/postgres")).is_file());
        // A second configure leaves the account alone.
        run(&mut dpkg(&["-i", &deb]));
        assert_eq!(fs::read_to_string(r.join("etc/passwd")).unwrap(), passwd);

        // Purge keeps cluster data...
        fs::write(main.join("PG_VERSION"), format!("{major}\n")).unwrap();
        run(&mut dpkg(&["--purge", &format!("pgedge-{major}")]));
        assert!(!r.join(format!("usr/pgedge-{major}")).exists());
        assert!(main.join("PG_VERSION").is_file(), "purge removed user data");
        // ...unless asked to remove it.
        run(&mut dpkg(&["-i", &deb]));
        let mut purge = dpkg(&["--purge", &format!("pgedge-{major}")]);
        purge.env("PGEDGE_PURGE_DATA", "yes");
        run(&mut purge);
        assert!(!r.join(format!("var/lib/pgedge/{major}")).exists());
    }
}

/// The .deb for real: apt resolves its dependencies on this Debian 12 machine, clusters are
/// initialised by `postgres` with the installed binaries, two nodes replicate with spock, then
/// the package is removed and purged.
#[test]
fn deb_installs_with_apt_and_replicates() {
    assert!(is_root(), "the package tests need root");
    let _host = HOST_PACKAGES.lock().unwrap_or_else(|e| e.into_inner());
    for major in majors() {
        let pkgs = packages(major);
        let name = format!("pgedge-{major}");
        let prefix = format!("/usr/pgedge-{major}");
        let dataroot = format!("/var/lib/pgedge/{major}");
        // Leftovers of an interrupted run.
        let _ = try_run(&mut cmd("apt-get", &["purge", "-y", "-q", &name]));
        let main = Path::new(&dataroot).join("main");
        // Clusters this test made carry a marker and may go; anything else is someone's data.
        let marker = Path::new(&dataroot).join(".pgedge-package-test");
        if marker.exists() {
            fs::remove_dir_all(&dataroot).unwrap();
        }
        assert!(
            !main.join("PG_VERSION").exists(),
            "{} holds a cluster; refusing to touch it",
            main.display()
        );
        let _ = fs::remove_dir_all(&dataroot);
        let account_before = try_run(&mut cmd("getent", &["passwd", "postgres"])).1;

        let mut install = cmd(
            "apt-get",
            &[
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                &pkgs.deb.display().to_string(),
            ],
        );
        install.env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut install);
        let status = run(&mut cmd(
            "dpkg-query",
            &["-W", "-f", "${Status} ${Version}", &name],
        ));
        assert_eq!(
            status,
            format!("install ok installed {}-1", pg_version(major))
        );
        let account = run(&mut cmd("getent", &["passwd", "postgres"]));
        if !account_before.is_empty() {
            assert_eq!(
                account, account_before,
                "an existing postgres account was changed"
            );
        }
        let meta = fs::metadata(&main).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
        assert_eq!(
            meta.uid().to_string(),
            run(&mut cmd("id", &["-u", "postgres"])).trim()
        );
        // No cluster was created and nothing started.
        assert_eq!(fs::read_dir(&main).unwrap().count(), 0);
        fs::write(&marker, "").unwrap();
        // pg_config answers with the installed paths, for building extensions.
        let pg_config = format!("{prefix}/bin/pg_config");
        assert_eq!(
            run(&mut cmd(&pg_config, &["--pkglibdir"])).trim(),
            format!("{prefix}/lib/postgresql")
        );
        assert!(Path::new(&run(&mut cmd(&pg_config, &["--pgxs"])).trim().to_string()).is_file());

        {
            let n2_data = Path::new(&dataroot).join("n2");
            let mut n1 = Server::init(&prefix, &main);
            run(&mut cmd(
                "install",
                &[
                    "-d",
                    "-m",
                    "0700",
                    "-o",
                    "postgres",
                    "-g",
                    "postgres",
                    &n2_data.display().to_string(),
                ],
            ));
            let mut n2 = Server::init(&prefix, &n2_data);
            // ALTER SYSTEM on 15 refuses settings of libraries not loaded yet.
            n1.configure("snowflake.node", "1");
            n2.configure("snowflake.node", "2");
            n1.start();
            n2.start();
            for (i, n) in [&n1, &n2].into_iter().enumerate() {
                assert_eq!(n.sql("SHOW shared_preload_libraries"), "spock");
                assert_eq!(n.sql("SHOW wal_level"), "logical");
                assert_eq!(n.sql("SHOW track_commit_timestamp"), "on");
                assert!(n.sql("SELECT version()").contains("pgEdge"));
                n.sql("CREATE EXTENSION spock");
                n.sql("CREATE EXTENSION snowflake");
                n.sql("CREATE EXTENSION lolor");
                n.sql(&format!(
                    "SELECT spock.node_create('n{}', '{}')",
                    i + 1,
                    n.dsn()
                ));
                n.sql("CREATE TABLE orders(id int8 PRIMARY KEY DEFAULT snowflake.nextval(), item text)");
            }
            // A third-party extension builds against the installed kernel with PGXS and loads.
            let (_module_dir, module) = build_pgxs_module(&prefix);
            assert_eq!(
                n1.sql(&format!(
                    "CREATE FUNCTION answer() RETURNS int AS '{module}', 'answer' LANGUAGE C; \
                     SELECT answer()"
                )),
                "42"
            );
            n1.sql("DROP FUNCTION answer()");
            n1.sql("SELECT spock.repset_add_all_tables('default', ARRAY['public'])");
            n2.sql(&format!(
                "SELECT spock.sub_create('sub_n1_n2', '{}')",
                n1.dsn()
            ));
            n1.wait_for(
                "SELECT count(*) FROM pg_replication_slots WHERE active",
                "1",
            );
            n1.sql("INSERT INTO orders(item) SELECT 'item ' || g FROM generate_series(1, 100) g");
            let want = n1.sql("SELECT count(*) || ':' || sum(id) FROM orders");
            n2.wait_for("SELECT count(*) || ':' || sum(id) FROM orders", &want);
            n1.stop();
            n2.stop();
        }

        // dpkg purges a package without conffiles as part of its removal, so the purge's
        // message may come from either step.
        run(&mut cmd("apt-get", &["remove", "-y", "-q", &name]));
        assert!(!Path::new(&prefix).exists(), "{prefix} left after remove");
        assert!(
            main.join("PG_VERSION").is_file(),
            "remove touched cluster data"
        );
        let (ok, out, err) = try_run(&mut cmd("apt-get", &["purge", "-y", "-q", &name]));
        assert!(ok, "{out}{err}");
        let (_, status, _) = try_run(&mut cmd("dpkg-query", &["-W", "-f", "${Status}", &name]));
        assert!(
            !status.contains("ok installed") && !status.contains("config-files"),
            "{name} still {status}"
        );
        assert!(
            main.join("PG_VERSION").is_file(),
            "purge removed cluster data"
        );
        assert!(!Path::new(&format!("/lib/systemd/system/pgedge-{major}@.service")).exists());
        fs::remove_dir_all(&dataroot).unwrap();
    }
}

/// Builds a one-function C module with the installed `pg_config --pgxs` in a directory the
/// server account can read (removed with the returned guard); returns the guard and the path.
fn build_pgxs_module(prefix: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::Builder::new()
        .prefix("pgedge-pgxs-")
        .tempdir()
        .unwrap();
    let d = dir.path();
    fs::write(
        d.join("answer.c"),
        "#include \"postgres.h\"\n#include \"fmgr.h\"\n\nPG_MODULE_MAGIC;\n\n\
         PG_FUNCTION_INFO_V1(answer);\n\n\
         Datum\nanswer(PG_FUNCTION_ARGS)\n{\n\tPG_RETURN_INT32(42);\n}\n",
    )
    .unwrap();
    fs::write(
        d.join("Makefile"),
        format!(
            "MODULES = answer\nPG_CONFIG = {prefix}/bin/pg_config\n\
             PGXS := $(shell $(PG_CONFIG) --pgxs)\ninclude $(PGXS)\n"
        ),
    )
    .unwrap();
    let mut make = cmd("make", &[]);
    make.current_dir(d)
        .env_remove("MAKEFLAGS")
        .env_remove("MAKELEVEL");
    run(&mut make);
    let so = d.join("answer.so");
    assert!(so.is_file());
    // The server runs as postgres.
    run(&mut cmd("chmod", &["-R", "a+rX", &d.display().to_string()]));
    let path = so.display().to_string();
    (dir, path)
}

/// The .rpm installed into an rpm root (no host rpm database involved), verified, and its
/// server started from there with the extensions loaded.
#[test]
fn rpm_installs_into_a_root_and_serves() {
    for major in majors() {
        let pkgs = packages(major);
        let root = tempfile::tempdir().unwrap();
        let r = root.path().display().to_string();
        run(&mut cmd("rpm", &["--root", &r, "--initdb"]));
        // The root has no shell for the scriptlets, so they are skipped (they are checked with
        // `sh -n` above and have the .deb's logic).
        run(&mut cmd(
            "rpm",
            &[
                "--root",
                &r,
                "-ivh",
                "--nodeps",
                "--noscripts",
                &pkgs.rpm.display().to_string(),
            ],
        ));
        let name = format!("pgedge-{major}");
        let qa = run(&mut cmd("rpm", &["--root", &r, "-qa"]));
        assert!(
            qa.lines()
                .any(|l| l.starts_with(&format!("{name}-{}-1", pg_version(major)))),
            "{qa}"
        );
        let (ok, out, err) = try_run(&mut cmd("rpm", &["--root", &r, "-V", "--nodeps", &name]));
        assert!(ok && out.trim().is_empty(), "rpm -V:\n{out}{err}");

        let pg_config = root
            .path()
            .join(format!("usr/pgedge-{major}/bin/pg_config"));
        let kernel = harness::Kernel::from_pg_config(&pg_config).unwrap();
        assert_eq!(kernel.major, major);
        let cluster =
            harness::Cluster::start(&kernel, &harness::ClusterOptions::default()).unwrap();
        let n = cluster.node(0);
        n.sql("CREATE EXTENSION spock").unwrap();
        n.sql("CREATE EXTENSION snowflake").unwrap();
        n.sql("CREATE EXTENSION lolor").unwrap();
        assert_eq!(
            n.sql("SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension")
                .unwrap(),
            "lolor,plpgsql,snowflake,spock"
        );
        // The kernel's capability marker (its level grows with the patch series).
        let api: u32 = n.sql("SHOW pgedge.kernel_api").unwrap().parse().unwrap();
        assert!(api >= 1);
        cluster.stop().unwrap();
        drop(cluster);

        run(&mut cmd("rpm", &["--root", &r, "-e", "--noscripts", &name]));
        assert!(!root.path().join(format!("usr/pgedge-{major}")).exists());
    }
}
