//! Every invocation of a PostgreSQL client program — `psql`, `pg_dump`, `pg_restore` — is built
//! here: `program [args…] -d <URL without secrets> [after…]`, assembled by xshell's `cmd!` (argv
//! as written, no shell, no word splitting), with the secrets in the child's environment
//! ([`super::libpq_env`]), never in argv. [`crate::proc`] then runs it (the child registry,
//! streaming, Ctrl-C).

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::{libpq_env, PgUrl, Server};

/// What a schema-only dump leaves out so that two databases compare by their definitions:
/// owners, tablespaces, security labels and subscriptions (the comparison names what it does
/// not compare). Privileges are left out by the caller unless it asks for them.
pub const SCHEMA_ONLY: &[&str] =
    &["--schema-only", "--no-owner", "--no-tablespaces", "--no-security-labels", "--no-subscriptions"];

/// `program args… -d url after…`, without the environment.
fn invocation<A: AsRef<OsStr>>(program: &Path, args: &[A], url: &str, after: &[&Path]) -> Result<Command> {
    let sh = xshell::Shell::new().context("reading the current directory")?;
    Ok(xshell::cmd!(sh, "{program} {args...} -d {url} {after...}").into())
}

/// `program args… -d <url> after…` for a URL of any server, its secrets in the environment.
pub fn command<A: AsRef<OsStr>>(program: &Path, args: &[A], url: &PgUrl, after: &[&Path]) -> Result<Command> {
    let mut cmd = invocation(program, args, &url.without_secrets(), after)?;
    libpq_env(&mut cmd, url)?;
    Ok(cmd)
}

impl Server {
    /// `program args… -d <this server's db> after…`, its secrets in the environment.
    pub fn command<A: AsRef<OsStr>>(&self, program: &Path, args: &[A], db: &str, after: &[&Path]) -> Result<Command> {
        let mut cmd = invocation(program, args, &self.arg_url(db), after)?;
        self.libpq_env(&mut cmd);
        Ok(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_as_the_command_line_it_runs() {
        let url = PgUrl::parse("postgres://u:s3cret@h:5/my%20db?sslmode=require").unwrap();
        let cmd = command(Path::new("/bin/pg_dump"), SCHEMA_ONLY, &url, &[Path::new("out file")]).unwrap();
        let argv: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(cmd.get_program(), "/bin/pg_dump");
        assert_eq!(
            argv,
            [
                "--schema-only",
                "--no-owner",
                "--no-tablespaces",
                "--no-security-labels",
                "--no-subscriptions",
                "-d",
                "postgres://u@h:5/my%20db?sslmode=require",
                "out file"
            ]
        );
        let env: Vec<_> = cmd.get_envs().filter_map(|(k, v)| Some((k.to_str()?, v?.to_str()?))).collect();
        assert!(env.contains(&("PGPASSWORD", "s3cret")), "{env:?}");
    }
}
