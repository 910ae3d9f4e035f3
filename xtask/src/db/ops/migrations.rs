//! The repository's migrations against a database's ledger: what is pending, an applied migration
//! edited since (refused, naming the file), and, after the migrator ran, that everything is
//! applied.

use anyhow::Result;

use super::Ctx;
use crate::error::fail;
use crate::migrations;
use crate::pg::Server;

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
