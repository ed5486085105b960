//! Generates an extension's SQL script from its built library, without cargo-pgrx: pgrx 0.18
//! serialises the SQL entity graph into the `.pgrxsc` ELF section, which we decode and render.

use anyhow::{Context, Result, anyhow};
use object::{Object, ObjectSection};
use pgrx_sql_entity_graph::{ControlFile, PgrxSql, SqlGraphEntity, section};
use std::path::Path;

/// Renders the install script for the extension `name` built into `library`.
pub fn generate(library: &Path, control: &Path, name: &str, crate_version: &str) -> Result<String> {
    let bytes =
        std::fs::read(library).with_context(|| format!("cannot read {}", library.display()))?;
    let elf = object::File::parse(&*bytes)
        .with_context(|| format!("{} is not an object file", library.display()))?;
    let data = elf
        .sections()
        .find(|s| s.name().is_ok_and(section::is_schema_section_name))
        .with_context(|| {
            format!(
                "{} has no pgrx schema section (was it stripped?)",
                library.display()
            )
        })?
        .data()?;
    let mut entities = section::decode_entities(data).map_err(|e| {
        anyhow!(
            "cannot decode the schema section of {}: {e}",
            library.display()
        )
    })?;
    let control = ControlFile::from_path_with_cargo_version(control, crate_version)
        .map_err(|e| anyhow!("{}: {e}", control.display()))?;
    entities.insert(0, SqlGraphEntity::ExtensionRoot(control));
    let sql = PgrxSql::build(entities.into_iter(), name.to_string(), false)
        .map_err(|e| anyhow!("cannot build the SQL graph of {name}: {e:#}"))?;
    let mut out = Vec::new();
    sql.write(&mut out)
        .map_err(|e| anyhow!("cannot render SQL of {name}: {e:#}"))?;
    Ok(String::from_utf8(out)?)
}
