//! The Debian packages a build or a test run needs beyond the Rust toolchain: checked before
//! anything starts, so a fresh machine gets one message naming what to install (`.ci/run`
//! installs the same list; a test keeps the two in step).

use anyhow::{Result, bail};
use std::path::Path;

/// What a step needs, and the Debian package that provides it.
struct Need {
    /// A program on `PATH`, or an absolute path.
    what: &'static str,
    package: &'static str,
}

/// Building PostgreSQL and the extensions (pgrx's bindings need libclang).
const BUILD: &[Need] = &[
    Need {
        what: "bison",
        package: "bison",
    },
    Need {
        what: "flex",
        package: "flex",
    },
    Need {
        what: "patch",
        package: "patch",
    },
    Need {
        what: "make",
        package: "make",
    },
    Need {
        what: "gcc",
        package: "gcc",
    },
    Need {
        what: "perl",
        package: "perl",
    },
    Need {
        what: "pkg-config",
        package: "pkg-config",
    },
    Need {
        what: "/usr/include/openssl/ssl.h",
        package: "libssl-dev",
    },
    Need {
        what: "/usr/include/unicode/ucol.h",
        package: "libicu-dev",
    },
    Need {
        what: "/usr/include/lz4.h",
        package: "liblz4-dev",
    },
    Need {
        what: "/usr/include/zstd.h",
        package: "libzstd-dev",
    },
    Need {
        what: "/usr/include/libxml2/libxml/parser.h",
        package: "libxml2-dev",
    },
    Need {
        what: "/usr/include/libxslt/xslt.h",
        package: "libxslt1-dev",
    },
    Need {
        what: "/usr/include/uuid/uuid.h",
        package: "uuid-dev",
    },
    Need {
        what: "/usr/include/readline/readline.h",
        package: "libreadline-dev",
    },
    Need {
        what: "/usr/include/zlib.h",
        package: "zlib1g-dev",
    },
    Need {
        what: "/usr/lib/llvm-14/lib/libclang.so",
        package: "libclang-dev",
    },
];

/// The test suite on top: package checks (rpm, rpmlint, lintian), Debian's stock server for
/// the refusal test, and `ip` for the partition scenario.
const TEST: &[Need] = &[
    Need {
        what: "rpm",
        package: "rpm",
    },
    Need {
        what: "rpmlint",
        package: "rpmlint",
    },
    Need {
        what: "lintian",
        package: "lintian",
    },
    Need {
        what: "/usr/lib/postgresql/15/bin/postgres",
        package: "postgresql-15",
    },
    Need {
        what: "ip",
        package: "iproute2",
    },
];

#[derive(Clone, Copy)]
pub enum Step {
    Build,
    Test,
}

/// Fails with the list of missing packages and the command that installs them.
pub fn check(step: Step) -> Result<()> {
    let needs: Vec<&Need> = match step {
        Step::Build => BUILD.iter().collect(),
        Step::Test => BUILD.iter().chain(TEST).collect(),
    };
    let missing: Vec<&str> = needs
        .iter()
        .filter(|n| !present(n.what))
        .map(|n| n.package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let stock = missing.contains(&"postgresql-15");
    bail!(
        "missing system packages: {list}\ninstall them with:\n{prefix}  apt-get install -y --no-install-recommends {list}",
        list = missing.join(" "),
        prefix = if stock {
            // The stock server is a test fixture: its package must not create a cluster.
            "  mkdir -p /etc/postgresql-common && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf\n"
        } else {
            ""
        }
    )
}

fn present(what: &str) -> bool {
    if what.starts_with('/') {
        return Path::new(what).exists() || libclang_elsewhere(what);
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(what).is_file()))
}

/// libclang's path names its LLVM version; any version serves.
fn libclang_elsewhere(what: &str) -> bool {
    what.ends_with("libclang.so")
        && std::fs::read_dir("/usr/lib").is_ok_and(|dirs| {
            dirs.flatten().any(|d| {
                d.file_name().to_string_lossy().starts_with("llvm-")
                    && d.path().join("lib/libclang.so").exists()
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `.ci/run` installs every package named here, so CI never fails this check.
    #[test]
    fn ci_installs_every_package_named_here() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let ci = std::fs::read_to_string(repo.join(".ci/run")).unwrap();
        for need in BUILD.iter().chain(TEST) {
            assert!(
                ci.split_whitespace().any(|w| w == need.package),
                ".ci/run does not install {}",
                need.package
            );
        }
    }
}
