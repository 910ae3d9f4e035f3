//! `db url` and `db psql`: reaching this worktree's database (the one `DATABASE_URL` names: the
//! environment's, else `.env`'s).

use anyhow::{Context, Result};

use super::Ctx;
use crate::flags::{Psql, Url};

pub fn url(ctx: &Ctx, flags: Url) -> Result<()> {
    let (url, _) = ctx.database_url()?;
    println!("{}", if flags.show_password { url.expose_secret() } else { url.redacted() });
    Ok(())
}

/// Runs `psql` on it, the password (and any other secret) in its environment, never in argv;
/// exits with psql's exit code (128 + the signal that ended it).
pub fn psql(ctx: &Ctx, flags: Psql) -> Result<()> {
    let (url, _) = ctx.database_url()?;
    let mut cmd = crate::pg::client::command(&crate::pg::tools::find("psql")?, &flags.args, &url, &[])?;
    // Not registered with the signal thread: psql answers Ctrl-C itself (it cancels the running
    // query and stays), and a second SIGINT from us would be one too many.
    let status = cmd.status().context("starting psql")?;
    use std::os::unix::process::ExitStatusExt;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(crate::error::ChildExit(code).into()),
        None => Err(crate::error::ChildExit(128 + status.signal().unwrap_or(0)).into()),
    }
}
