//! `db migrate`: the app's migrator against `DATABASE_URL`.

use anyhow::Result;

use super::{Ctx, UrlSource};
use crate::error::fail;
use crate::migrations;
use crate::pg::Server;

pub fn run(ctx: &Ctx) -> Result<()> {
    if let (_, UrlSource::MainEnvFile) = ctx.database_url()? {
        return Err(fail(
            "this worktree has no .env of its own, and the main worktree's names the golden template",
            "give this worktree its database first: `cargo xtask db worktree`",
        ));
    }
    let server = ctx.server()?;
    let db = server.url.dbname().expect("database_url checks it").to_string();
    if !server.database_exists(&db)? {
        return Err(fail(
            format!("database `{db}` (DATABASE_URL) does not exist on {}", server.url.server_label()),
            "create the golden template with `cargo xtask db template create`, or fix DATABASE_URL",
        ));
    }
    let url = server.url.clone();
    let pending = check_ledger(ctx, &server, &db)?;
    if pending == 0 {
        eprintln!("`{db}` is up to date: nothing to migrate");
        return Ok(());
    }
    eprintln!("▸ applying {pending} pending migration(s) to `{db}`");
    ctx.run_migrator(&url, None)?;
    verify_applied(ctx, &server, &db)
}

/// After the migrator ran: every migration in the repository is applied, or an error says which
/// are not (a migrator built from another checkout embeds other migrations).
pub fn verify_applied(ctx: &Ctx, server: &Server, db: &str) -> Result<()> {
    let repo = migrations::in_repo(&ctx.config.migrations_path())?;
    let c = migrations::compare(&repo, &migrations::ledger(server, db, &ctx.config.ledger_table)?);
    if c.pending.is_empty() && c.failed.is_empty() {
        return Ok(());
    }
    let versions: Vec<String> = c.pending.iter().chain(&c.failed).map(|v| v.to_string()).collect();
    Err(fail(
        format!(
            "the migrator finished, but migration(s) {} of this checkout are still not applied to `{db}`",
            versions.join(", ")
        ),
        "check that `migrate_command` builds the migrator from this checkout (it embeds the migrations at build time)",
    ))
}

/// Fails, naming the file, when an applied migration was edited since; returns how many are pending.
pub fn check_ledger(ctx: &Ctx, server: &Server, db: &str) -> Result<usize> {
    check_applied(ctx, db, &migrations::ledger(server, db, &ctx.config.ledger_table)?)
}

/// [`check_ledger`] with `db`'s ledger known already.
pub fn check_applied(ctx: &Ctx, db: &str, ledger: &[migrations::Applied]) -> Result<usize> {
    let repo = migrations::in_repo(&ctx.config.migrations_path())?;
    let c = migrations::compare(&repo, ledger);
    if let Some((version, file)) = c.modified.first() {
        let file = file.strip_prefix(&ctx.config.root).unwrap_or(file);
        return Err(fail(
            format!("migration {version} ({}) was edited after `{db}` applied it", file.display()),
            format!(
                "restore the applied version (`git log -p -- {}`) and put the change in a new migration",
                file.display()
            ),
        ));
    }
    Ok(c.pending.len() + c.failed.len())
}
