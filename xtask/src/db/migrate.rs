//! `db migrate`: the app's migrator against `DATABASE_URL`.

use anyhow::Result;

use super::ops::migrations::{check_ledger, verify_applied};
use super::{Ctx, UrlSource};
use crate::error::fail;

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
    crate::term::announce(format_args!("applying {pending} pending migration(s) to `{db}`"));
    ctx.run_migrator(&url, None)?;
    verify_applied(ctx, &server, &db)
}
