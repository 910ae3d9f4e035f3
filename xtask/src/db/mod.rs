//! `cargo xtask db <verb>`: one module per verb; this file holds what they share.

mod migrate;
mod status;
mod template;
mod up;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::env_file::EnvFile;
use crate::error::fail;
use crate::flags::{Db, DbVerb, TemplateVerb};
use crate::git::Worktrees;
use crate::pg::cluster::Cluster;
use crate::pg::{PgUrl, Server};
use crate::{proc, time};

pub fn run(db: Db) -> Result<()> {
    let ctx = Ctx::load(&db.config.overrides())?;
    match db.verb {
        DbVerb::Up(up) => up::up(&ctx, up),
        DbVerb::Down => up::down(&ctx),
        DbVerb::Status(s) => status::run(&ctx, s),
        DbVerb::Migrate => migrate::run(&ctx),
        DbVerb::Template(TemplateVerb::Create(t)) => template::create(&ctx, t),
    }
}

/// What every verb starts from: configuration and where we are.
pub struct Ctx {
    pub config: Config,
    pub worktrees: Worktrees,
}

/// Where `DATABASE_URL` came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlSource {
    Environment,
    EnvFile,
}

impl std::fmt::Display for UrlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UrlSource::Environment => "the environment",
            UrlSource::EnvFile => ".env",
        })
    }
}

impl Ctx {
    pub fn load(overrides: &[String]) -> Result<Ctx> {
        let cwd = std::env::current_dir().context("reading the current directory")?;
        let config = Config::load(&cwd, overrides)?;
        let worktrees = Worktrees::discover(&cwd, &config.root)?;
        Ok(Ctx { config, worktrees })
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
        let env = EnvFile::load(&self.env_path())?;
        Ok(env.get("DATABASE_URL").filter(|v| !v.trim().is_empty()).map(|v| (v.to_string(), UrlSource::EnvFile)))
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
    pub fn run_migrator(&self, url: &PgUrl) -> Result<()> {
        let (program, args) = self.config.migrate_command.split_first().expect("validated non-empty");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(&self.config.root)
            .env("DATABASE_URL", url.expose_secret())
            .env_remove("APP_DB_NAME_OVERRIDE");
        proc::show(&mut cmd).with_context(|| format!("migrating `{}`", url.dbname().unwrap_or_default()))
    }
}

/// Prints a step's start, runs it, prints how long it took.
pub fn step<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    proc::check_interrupt()?;
    eprintln!("▸ {what}");
    let start = Instant::now();
    let out = f()?;
    eprintln!("  done in {}", time::elapsed(start.elapsed()));
    Ok(out)
}

/// The marker this tool puts on databases it creates.
pub fn marker(kind: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut m = serde_json::json!({ "kind": kind, "created_at": time::now_rfc3339() });
    if let (Some(m), serde_json::Value::Object(extra)) = (m.as_object_mut(), extra) {
        m.extend(extra);
    }
    m
}

/// The host name, for markers of in-progress work (a pid means nothing on another machine).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}
