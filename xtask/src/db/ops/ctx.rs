//! What every verb starts from: the configuration, the worktree it runs in, and the database
//! URL (the environment's, else `.env`'s).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::env_file::EnvFile;
use crate::error::fail;
use crate::git::Worktrees;
use crate::pg::cluster::Cluster;
use crate::pg::{PgUrl, Server};
use crate::proc;

/// What every verb starts from: configuration and where we are.
pub struct Ctx {
    pub config: Config,
    pub worktrees: Worktrees,
    /// The `--set` overrides of this run (passed on to the background refill).
    pub overrides: Vec<String>,
}

/// Where `DATABASE_URL` came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlSource {
    Environment,
    EnvFile,
    /// A linked worktree without `.env` of its own: the main worktree's names the server.
    MainEnvFile,
}

impl std::fmt::Display for UrlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UrlSource::Environment => "the environment",
            UrlSource::EnvFile => ".env",
            UrlSource::MainEnvFile => "the main worktree's .env",
        })
    }
}

impl Ctx {
    pub fn load(overrides: &[String]) -> Result<Ctx> {
        let cwd = std::env::current_dir().context("reading the current directory")?;
        Ctx::load_at(&cwd, overrides)
    }

    /// As if run in `dir` (`db worktree BRANCH` sets up another worktree than the one it runs in).
    pub fn load_at(dir: &std::path::Path, overrides: &[String]) -> Result<Ctx> {
        let config = Config::load(dir, overrides)?;
        let worktrees = Worktrees::discover(dir, &config.root)?;
        Ok(Ctx { config, worktrees, overrides: overrides.to_vec() })
    }

    /// This worktree's `db fresh` database: `<prefix>fresh` in the main worktree,
    /// `<prefix>fresh_<hash of the worktree's path>` in a linked one, so that gates run in two
    /// worktrees never compare against each other's.
    pub fn fresh_db(&self) -> String {
        if self.worktrees.is_main() {
            return self.config.fresh_db();
        }
        format!(
            "{}_{}",
            self.config.fresh_db(),
            crate::naming::short_hash(&self.worktrees.current.display().to_string())
        )
    }

    /// Where this tool keeps what belongs to the repository but is never committed (background
    /// logs, word of a failed refill, locks): `.git/xtask-db/`, else the temp directory under a
    /// name of this repository.
    pub fn state_dir(&self) -> PathBuf {
        match self.worktrees.common_dir() {
            Some(git) => git.join("xtask-db"),
            None => std::env::temp_dir()
                .join(format!("xtask-db-{}", crate::naming::short_hash(&self.worktrees.main.display().to_string()))),
        }
    }

    /// This worktree's `.env`.
    pub fn env_path(&self) -> PathBuf {
        self.config.root.join(".env")
    }

    /// The main worktree's `.env` (the one `db up` writes).
    pub fn main_env_path(&self) -> PathBuf {
        self.worktrees.main.join(".env")
    }

    /// `DATABASE_URL` as configured, if at all: the environment wins over `.env`.
    pub fn configured_url(&self) -> Result<Option<(String, UrlSource)>> {
        if let Ok(v) = std::env::var("DATABASE_URL") {
            if !v.trim().is_empty() {
                return Ok(Some((v, UrlSource::Environment)));
            }
        }
        let from = |path: &std::path::Path, source| -> Result<Option<(String, UrlSource)>> {
            let env = EnvFile::load(path)?;
            Ok(env.get("DATABASE_URL")?.filter(|v| !v.trim().is_empty()).map(|v| (v.to_string(), source)))
        };
        match from(&self.env_path(), UrlSource::EnvFile)? {
            Some(found) => Ok(Some(found)),
            None if !self.worktrees.is_main() => from(&self.main_env_path(), UrlSource::MainEnvFile),
            None => Ok(None),
        }
    }

    /// A warning for when `DATABASE_URL` in the environment names another database than `db`,
    /// the one `.env` now names: the app would use the environment's (dotenvy never overrides
    /// a variable that is set), typically the golden template.
    pub fn shadowed_env_file(&self, db: &str) -> Option<String> {
        let raw = std::env::var("DATABASE_URL").ok().filter(|v| !v.trim().is_empty())?;
        let named = PgUrl::parse(&raw).ok().and_then(|u| u.dbname().map(str::to_string));
        if named.as_deref() == Some(db) {
            return None;
        }
        let named = named.map_or("another database".to_string(), |n| format!("`{n}`"));
        Some(format!(
            "DATABASE_URL is set in this shell's environment, and the app reads it before .env: it will use {named}, not `{db}` — `unset DATABASE_URL` in this shell before starting it"
        ))
    }

    /// `DATABASE_URL`, parsed and complete (it must name a database).
    pub fn database_url(&self) -> Result<(PgUrl, UrlSource)> {
        let Some((raw, source)) = self.configured_url()? else {
            return Err(fail(
                "DATABASE_URL is not set (neither in the environment nor in .env)",
                "run `cargo xtask db up` to start the embedded local server, or set DATABASE_URL in .env",
            ));
        };
        let url = PgUrl::parse(&raw).map_err(|e| {
            fail(
                format!("DATABASE_URL (from {source}) is not a valid PostgreSQL URL: {e:#}"),
                "write it as postgres://user:password@host:5432/database",
            )
        })?;
        if url.dbname().is_none() {
            return Err(fail(
                format!("DATABASE_URL (from {source}) has no database name: {}", url.redacted()),
                format!("end it with the database, e.g. {}", url.with_dbname(&self.config.template).redacted()),
            ));
        }
        Ok((url, source))
    }

    /// The server in `DATABASE_URL`, reached and checked.
    pub fn server(&self) -> Result<Server> {
        let (url, _) = self.database_url()?;
        Server::connect(url, &self.config.maintenance_db)
    }

    pub fn cluster(&self) -> Cluster {
        let dir = if self.config.data_dir.is_absolute() {
            self.config.data_dir.clone()
        } else {
            self.worktrees.main.join(&self.config.data_dir)
        };
        Cluster::new(dir, &self.config.server_user)
    }

    /// Runs the app's migrator against `url` (passed as `DATABASE_URL` in its environment).
    pub fn run_migrator(&self, url: &PgUrl, port: Option<u16>) -> Result<()> {
        self.run_configured(&self.config.migrate_command, url, port)
            .with_context(|| format!("migrating `{}`", url.dbname().unwrap_or_default()))
    }

    /// Runs a configured command (`migrate_command`, `generate_commands`) in the workspace root,
    /// with `DATABASE_URL` (and `PORT`, when given) exported to it; its output goes to stderr, and
    /// its last lines into the error when it fails.
    pub fn run_configured(&self, argv: &[String], url: &PgUrl, port: Option<u16>) -> Result<()> {
        let mut cmd = self.configured(argv, url, port)?;
        let url_text = url.expose_secret();
        proc::show_telling_why(&mut cmd, &[&url_text, url.password().unwrap_or_default()])
    }

    /// A command of the configuration — the app's (`migrate_command`, `generate_commands`,
    /// `rehearse.serve_command`, `rehearse.smoke_command`) — as xshell's `cmd!`: argv as written
    /// (no shell), run in the workspace root, with `DATABASE_URL` (the secrets only there) and
    /// `PORT` when given, and without `APP_DB_NAME_OVERRIDE`. The one place they are built.
    pub fn configured(&self, argv: &[String], url: &PgUrl, port: Option<u16>) -> Result<Command> {
        let (program, args) = argv.split_first().context("an empty command in the configuration")?;
        let sh = xshell::Shell::new().context("reading the current directory")?;
        sh.change_dir(&self.config.root);
        let port = port.map(|p| p.to_string());
        let mut cmd = xshell::cmd!(sh, "{program} {args...}")
            .env("DATABASE_URL", url.expose_secret())
            .env_remove("APP_DB_NAME_OVERRIDE");
        if let Some(port) = port {
            cmd = cmd.env("PORT", port);
        }
        Ok(cmd.into())
    }
}

/// The `DATABASE_URL` that `db worktree` writes into `env` for `url`, and, when it leaves secrets
/// out, a note that says so. Secrets from the environment go into no file that did not already
/// hold them: then the URL is written without them, unless `env` already names the same ones.
pub fn url_for_env_file(url: &PgUrl, env: &EnvFile) -> (String, Option<String>) {
    let from_environment = std::env::var("DATABASE_URL").is_ok_and(|v| !v.trim().is_empty());
    env_file_url(url, env, from_environment)
}

fn env_file_url(url: &PgUrl, env: &EnvFile, from_environment: bool) -> (String, Option<String>) {
    let names = url.secret_names();
    // Conflicting lines (rewritten all the same) are not taken to hold them.
    let held = || {
        env.get("DATABASE_URL")
            .ok()
            .flatten()
            .and_then(|v| PgUrl::parse(v).ok())
            .is_some_and(|old| old.same_secrets(url))
    };
    if !from_environment || names.is_empty() || held() {
        return (url.expose_secret(), None);
    }
    let (they, them) = if names.len() == 1 { ("it", "it") } else { ("they", "them") };
    let note = format!(
        "without its {}: {they} came from the environment, not from a file; supply {them} the way you do now",
        names.join(" and ")
    );
    (url.without_secrets(), Some(note))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_from_the_environment_go_into_no_file_that_lacks_them() {
        let url = PgUrl::parse("postgres://u:pw@h/branch?sslpassword=kp").unwrap();
        let env = |text: &str| EnvFile::parse(std::path::Path::new(".env"), text).unwrap();
        let empty = env("PORT=1\n");
        assert_eq!(env_file_url(&url, &empty, false), (url.expose_secret(), None), "from a file: as it was");
        let (written, note) = env_file_url(&url, &empty, true);
        assert_eq!(written, "postgres://u@h/branch");
        assert_eq!(note.unwrap(), "without its password and sslpassword: they came from the environment, not from a file; supply them the way you do now");
        let holds = env("DATABASE_URL=postgres://u:pw@h/main?sslpassword=kp\n");
        assert_eq!(env_file_url(&url, &holds, true), (url.expose_secret(), None), "the file already held them");
        let other = env("DATABASE_URL=postgres://u:old@h/main?sslpassword=kp\n");
        assert_eq!(env_file_url(&url, &other, true).0, "postgres://u@h/branch");
        let plain = PgUrl::parse("postgres://u@h/branch").unwrap();
        assert_eq!(env_file_url(&plain, &empty, true), (plain.expose_secret(), None));
        let one = PgUrl::parse("postgres://u:pw@h/branch").unwrap();
        assert!(env_file_url(&one, &empty, true).1.unwrap().starts_with("without its password: it came"));
    }
}
