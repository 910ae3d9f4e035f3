//! `db up` and `db down`: the embedded local server.

use anyhow::Result;

use super::{Ctx, UrlSource};
use crate::env_file::EnvFile;
use crate::error::fail;
use crate::flags::Up;
use crate::pg::cluster::{InitOptions, State};
use crate::pg::PgUrl;

pub fn up(ctx: &Ctx, flags: Up) -> Result<()> {
    let cluster = ctx.cluster();
    let state = cluster.state()?;

    // Refuse to shadow a server the user configured themselves.
    let main_env = EnvFile::load(&ctx.main_env_path())?;
    let configured = match std::env::var("DATABASE_URL").ok().filter(|v| !v.trim().is_empty()) {
        Some(v) => Some((v, UrlSource::Environment)),
        None => {
            main_env.get("DATABASE_URL")?.filter(|v| !v.trim().is_empty()).map(|v| (v.to_string(), UrlSource::EnvFile))
        }
    };
    let mut keep_db = None;
    if let Some((raw, source)) = &configured {
        let ours = state != State::Absent
            && PgUrl::parse(raw).ok().is_some_and(|u| {
                let (host, port) = u.host_port();
                let local = matches!(host.as_deref(), Some("127.0.0.1" | "localhost"));
                keep_db = u.dbname().map(str::to_string);
                local && cluster.info().is_ok_and(|i| i.port == port)
            });
        if !ours {
            let shown = PgUrl::parse(raw).map(|u| u.redacted()).unwrap_or_else(|_| "(unparsable)".into());
            return Err(fail(
                format!("DATABASE_URL (from {source}) already points at a server that is not the embedded one: {shown}"),
                "use that server as it is, or remove DATABASE_URL (from the environment and the main worktree's .env) to use `db up`",
            ));
        }
    }

    match state {
        State::Absent => {
            crate::term::announce(format_args!(
                "creating a PostgreSQL cluster in {} (first run)",
                cluster.root.display()
            ));
            let info = cluster.init(&InitOptions { port: flags.port, extra_conf: &[] })?;
            eprintln!("  PostgreSQL {} cluster created; port {}", info.major, info.port);
            cluster.start()?;
        }
        State::Stopped => {
            if let Some(port) = flags.port {
                cluster.set_port(port)?;
            }
            crate::term::announce(format_args!("starting PostgreSQL ({})", cluster.root.display()));
            cluster.start()?;
        }
        State::Running { pid } => {
            let info = cluster.info()?;
            if flags.port.is_some_and(|p| p != info.port) {
                return Err(fail(
                    format!("the embedded server is running on port {}", info.port),
                    "stop it first (`cargo xtask db down`), then `cargo xtask db up --port N`",
                ));
            }
            eprintln!("PostgreSQL is already running (pid {pid})");
        }
    }

    let info = cluster.info()?;
    let db = keep_db.unwrap_or_else(|| ctx.config.template.clone());
    let url = cluster.url(&db)?;
    let mut env = main_env;
    if env.get("DATABASE_URL")? != Some(url.expose_secret().as_str()) {
        env.set("DATABASE_URL", &url.expose_secret());
        env.save()?;
        eprintln!("DATABASE_URL written to {}", ctx.main_env_path().display());
    }
    let socket = info.socket_dir.as_ref().map(|d| format!(" and socket {}", d.display())).unwrap_or_default();
    eprintln!("PostgreSQL {} is up on 127.0.0.1:{}{socket}; DATABASE_URL={}", info.major, info.port, url.redacted());
    Ok(())
}

pub fn down(ctx: &Ctx) -> Result<()> {
    let cluster = ctx.cluster();
    match cluster.state()? {
        State::Absent => eprintln!("no embedded cluster in {}: nothing to stop", cluster.root.display()),
        State::Stopped => eprintln!("PostgreSQL ({}) is not running", cluster.root.display()),
        State::Running { .. } => {
            cluster.stop()?;
            eprintln!("PostgreSQL stopped; its data stays in {}", cluster.data_dir().display());
        }
    }
    Ok(())
}
