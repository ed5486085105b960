//! The text files the packaging adds, filled from the templates in `packaging/`: maintainer
//! scripts and RPM scriptlets, the `pgedge.conf.sample` fragment, the systemd unit template,
//! copyright, Debian changelog and lintian overrides. Templates use `@NAME@` placeholders; one
//! left unfilled is an error.

use super::Meta;
use anyhow::{Context, Result, bail};
use std::{fs, path::Path};

/// Placeholder values.
pub struct Vars(Vec<(&'static str, String)>);

impl Vars {
    pub fn for_package(meta: &Meta, output_plugin_libraries: bool) -> Vars {
        let plugins = if output_plugin_libraries {
            "output_plugin_libraries = 'pgoutput, test_decoding, spock_output'".to_string()
        } else {
            format!(
                "# (PostgreSQL {} has no output_plugin_libraries setting; every library may serve.)",
                meta.pg_version
            )
        };
        Vars(vec![
            ("MAJOR", meta.major.to_string()),
            ("PACKAGE", meta.name.clone()),
            ("PREFIX", meta.prefix.clone()),
            ("SHAREDIR", meta.sharedir.clone()),
            ("DATAROOT", meta.dataroot.clone()),
            ("OUTPUT_PLUGIN_LIBRARIES", plugins),
        ])
    }
}

/// Replaces every `@NAME@` of `vars` in `text`.
pub fn fill(text: &str, vars: &Vars) -> Result<String> {
    let mut out = text.to_string();
    for (name, value) in &vars.0 {
        out = out.replace(&format!("@{name}@"), value);
    }
    if let Some(left) = leftover_placeholder(&out) {
        bail!("unknown placeholder @{left}@");
    }
    Ok(out)
}

fn leftover_placeholder(text: &str) -> Option<&str> {
    let mut rest = text;
    while let Some(start) = rest.find('@') {
        let after = &rest[start + 1..];
        let len = after
            .bytes()
            .take_while(|b| b.is_ascii_uppercase() || *b == b'_')
            .count();
        if len > 0 && after[len..].starts_with('@') {
            return Some(&after[..len]);
        }
        rest = after;
    }
    None
}

/// A template from `packaging/`, filled.
pub fn template(repo: &Path, rel: &str, vars: &Vars) -> Result<String> {
    let path = repo.join("packaging").join(rel);
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    fill(&text, vars).with_context(|| format!("in {}", path.display()))
}

/// The Debian changelog of this build (one entry), before compression.
pub fn debian_changelog(meta: &Meta, epoch: u64) -> String {
    let mut body = String::new();
    let mut line = String::from("  *");
    for word in meta.changelog.split_whitespace() {
        if line.len() + word.len() + 1 > 76 {
            body.push_str(&line);
            body.push('\n');
            line = String::from("   ");
        }
        line.push(' ');
        line.push_str(word);
    }
    body.push_str(&line);
    format!(
        "{} ({}) unstable; urgency=medium\n\n{body}\n\n -- {}  {}\n",
        meta.name,
        meta.deb_version,
        meta.maintainer,
        super::manifest::rfc2822(epoch)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_unknown_ones_refused() {
        let vars = Vars(vec![
            ("MAJOR", "17".into()),
            ("PACKAGE", "pgedge-17".into()),
        ]);
        assert_eq!(
            fill("@PACKAGE@@.service for @MAJOR@", &vars).unwrap(),
            "pgedge-17@.service for 17"
        );
        let e = fill("x @MAJR@ y", &vars).unwrap_err().to_string();
        assert!(e.contains("@MAJR@"), "{e}");
        // An e-mail address is not a placeholder.
        assert!(fill("a <p@pgedge.com>", &vars).is_ok());
    }

    #[test]
    fn every_template_fills() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let meta = Meta::load(repo, 17, "17.11").unwrap();
        let vars = Vars::for_package(&meta, true);
        for rel in super::super::TEMPLATES {
            let raw = fs::read_to_string(repo.join("packaging").join(rel)).unwrap();
            let text = template(repo, rel, &vars).unwrap();
            // Only the copyright file is the same for every major.
            let same = *rel == "common/copyright";
            assert_eq!(text == raw, same, "{rel}");
        }
        let conf = template(repo, "common/pgedge.conf.sample", &vars).unwrap();
        for want in [
            "shared_preload_libraries = 'spock'",
            "wal_level = logical",
            "track_commit_timestamp = on",
            "output_plugin_libraries = 'pgoutput, test_decoding, spock_output'",
        ] {
            assert!(conf.lines().any(|l| l == want), "missing {want}");
        }
    }
}
