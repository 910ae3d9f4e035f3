//! The repository's migrations and a database's ledger of applied ones (sqlx's
//! `_sqlx_migrations`: version, checksum = SHA-384 of the file's bytes).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha384};

use crate::pg::{literal, Server};

#[derive(Debug, Clone, Serialize)]
pub struct Migration {
    pub version: i64,
    pub description: String,
    pub file: PathBuf,
    /// Lowercase hex SHA-384 of the file.
    pub checksum: String,
}

/// `NNNN_description.sql` files in `dir`, by version.
pub fn in_repo(dir: &Path) -> Result<Vec<Migration>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading migrations from {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(stem) = name.strip_suffix(".sql") else { continue };
        // As sqlx reads them: `.down.sql` is a reverting script, never applied forwards;
        // `.up.sql` is the migration, its description without the suffix.
        if stem.ends_with(".down") {
            continue;
        }
        let stem = stem.strip_suffix(".up").unwrap_or(stem);
        let Some((version, description)) = stem.split_once('_') else { continue };
        let Ok(version) = version.parse::<i64>() else { continue };
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        out.push(Migration {
            version,
            description: description.replace('_', " "),
            file: path,
            checksum: hex(&Sha384::digest(&bytes)),
        });
    }
    out.sort_by_key(|m| m.version);
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Applied {
    pub version: i64,
    pub checksum: String,
    pub success: bool,
}

/// The ledger of `db`; empty when the ledger table does not exist. One connection: the
/// existence check and the read are one psql script.
pub fn ledger(server: &Server, db: &str, table: &str) -> Result<Vec<Applied>> {
    let script = format!("{}SELECT :'ledger_json';\n", ledger_script(table, "ledger_"));
    let out = server.script(db, &script)?;
    serde_json::from_str(out.trim()).with_context(|| format!("reading the migration ledger of `{db}`"))
}

/// The psql lines that read the ledger `table` into the variable `{prefix}json` (a JSON array of
/// [`Applied`]; `[]` when there is no such table), printing nothing.
pub fn ledger_script(table: &str, prefix: &str) -> String {
    // `table` comes from our own configuration; `to_regclass` validates it before it is used.
    format!(
        "SELECT to_regclass({}) IS NOT NULL AS present \\gset {prefix}\n\\if :{prefix}present\n\
         SELECT coalesce(json_agg(q), '[]'::json) AS json FROM (SELECT version, encode(checksum, 'hex') AS checksum, success \
         FROM {table} ORDER BY version) q \\gset {prefix}\n\\else\nSELECT '[]' AS json \\gset {prefix}\n\\endif\n",
        literal(table)
    )
}

/// How a database's ledger compares with the repository.
#[derive(Debug, Default, Serialize)]
pub struct Comparison {
    pub applied: usize,
    pub latest_applied: Option<i64>,
    pub pending: Vec<i64>,
    /// Applied, but the file has changed since: (version, file).
    pub modified: Vec<(i64, PathBuf)>,
    /// Applied versions the repository does not have (another branch's migrations).
    pub unknown: Vec<i64>,
    /// Recorded as failed (`success = false`).
    pub failed: Vec<i64>,
}

pub fn compare(repo: &[Migration], ledger: &[Applied]) -> Comparison {
    let mut c = Comparison::default();
    for m in repo {
        match ledger.iter().find(|a| a.version == m.version) {
            None => c.pending.push(m.version),
            Some(a) if !a.success => c.failed.push(m.version),
            Some(a) if a.checksum != m.checksum => c.modified.push((m.version, m.file.clone())),
            Some(_) => {}
        }
    }
    for a in ledger {
        if a.success {
            c.applied += 1;
            c.latest_applied = c.latest_applied.max(Some(a.version));
        }
        if !repo.iter().any(|m| m.version == a.version) {
            c.unknown.push(a.version);
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(version: i64, checksum: &str) -> Migration {
        Migration {
            version,
            description: String::new(),
            file: format!("{version:04}_x.sql").into(),
            checksum: checksum.into(),
        }
    }
    fn a(version: i64, checksum: &str, success: bool) -> Applied {
        Applied { version, checksum: checksum.into(), success }
    }

    #[test]
    fn comparison() {
        let repo = [m(1, "a"), m(2, "b"), m(3, "c"), m(4, "d")];
        let ledger = [a(1, "a", true), a(2, "B", true), a(3, "c", false), a(9, "z", true)];
        let c = compare(&repo, &ledger);
        assert_eq!(c.pending, vec![4]);
        assert_eq!(c.modified, vec![(2, PathBuf::from("0002_x.sql"))]);
        assert_eq!(c.failed, vec![3]);
        assert_eq!(c.unknown, vec![9]);
        assert_eq!((c.applied, c.latest_applied), (3, Some(9)));
    }

    #[test]
    fn reads_sqlx_style_files() {
        let dir = std::env::temp_dir().join(format!("xtask-mig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("0002_add_things.sql"), "select 1;\n").unwrap();
        std::fs::write(dir.join("0001_init.sql"), "").unwrap();
        std::fs::write(dir.join("README.md"), "").unwrap();
        let ms = in_repo(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(ms.iter().map(|m| m.version).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(ms[1].description, "add things");
        // SHA-384 of the empty string.
        assert!(ms[0].checksum.starts_with("38b060a751ac9638"));
    }
}
