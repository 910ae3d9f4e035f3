//! Finding PostgreSQL's programs and their versions.
//!
//! Search order: `$XTASK_PG_BINDIR` (exclusively, when set), then `PATH`, then the newest
//! `/usr/lib/postgresql/<major>/bin` (Debian and Ubuntu keep server programs only there).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::error::fail;
use crate::proc;

pub const BINDIR_ENV: &str = "XTASK_PG_BINDIR";

/// Where a PostgreSQL program lives; `Err` names the program and how to get it.
pub fn find(program: &str) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BINDIR_ENV).filter(|d| !d.is_empty()) {
        let p = Path::new(&dir).join(program);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(fail(
                format!("`{program}` not found in {BINDIR_ENV}={}", Path::new(&dir).display()),
                format!("point {BINDIR_ENV} at a PostgreSQL bin directory, or unset it to search PATH"),
            ))
        };
    }
    let on_path = on_path(program);
    let debian = || debian_dirs().into_iter().map(|d| d.join(program)).find(|p| is_executable(p));
    match on_path {
        // Debian's PATH entries are `pg_wrapper`, a Perl script that picks a version on every
        // call (~25 ms each); for client programs it picks the newest, so go there directly.
        Some(p) if is_pg_wrapper(&p) => return Ok(debian().unwrap_or(p)),
        Some(p) => return Ok(p),
        None => {}
    }
    if let Some(p) = debian() {
        return Ok(p);
    }
    Err(fail(
        format!("`{program}` not found on PATH or under /usr/lib/postgresql/*/bin"),
        "install the PostgreSQL client and server programs (Debian/Ubuntu: `apt-get install postgresql`; macOS: `brew install postgresql@17`), or set XTASK_PG_BINDIR",
    ))
}

/// Server programs (`initdb`, `pg_ctl`, `postgres`) all from one directory: the newest
/// Debian-style install first (PATH rarely has them there), else where `initdb` is found.
pub fn server_bindir() -> Result<PathBuf> {
    if std::env::var_os(BINDIR_ENV).is_none() {
        if let Some(d) = debian_dirs().into_iter().find(|d| is_executable(&d.join("initdb"))) {
            return Ok(d);
        }
    }
    let initdb = find("initdb")?;
    Ok(initdb.parent().context("initdb has no directory")?.to_path_buf())
}

/// `/usr/lib/postgresql/<major>/bin`, newest major first.
fn debian_dirs() -> Vec<PathBuf> {
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, e.path().join("bin")))
        })
        .collect();
    majors.sort_by_key(|m| std::cmp::Reverse(m.0));
    majors.into_iter().map(|(_, p)| p).collect()
}

fn is_pg_wrapper(p: &Path) -> bool {
    p.canonicalize().is_ok_and(|c| c.file_name().is_some_and(|n| n == "pg_wrapper"))
}

/// The first executable `program` in the directories of PATH.
pub fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// The major version a program reports (`pg_dump (PostgreSQL) 15.18 (Debian …)` → 15).
pub fn major_version(program: &Path) -> Result<u32> {
    let sh = xshell::Shell::new().context("reading the current directory")?;
    let out = proc::capture(&mut xshell::cmd!(sh, "{program} --version").into(), None)?;
    parse_major(&out).with_context(|| format!("cannot read a version from `{} --version`: {out:?}", program.display()))
}

fn parse_major(version_output: &str) -> Option<u32> {
    let after = version_output.split(')').nth(1).unwrap_or(version_output);
    let token = after.split_whitespace().next()?;
    token.split(['.', 'b', 'r', 'd']).next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parse_major() {
        assert_eq!(super::parse_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"), Some(15));
        assert_eq!(super::parse_major("psql (PostgreSQL) 18beta1"), Some(18));
        assert_eq!(super::parse_major("postgres (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(super::parse_major("garbage"), None);
    }
}
