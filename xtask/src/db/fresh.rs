//! `db fresh`: the HEAD-schema baseline, `<prefix>fresh` (per worktree: see [`Ctx::fresh_db`]),
//! built from an empty database and every migration.

use anyhow::Result;

use super::Ctx;
use crate::error::fail;
use crate::naming::Staging;
use crate::pg::staging::{self, sweep_abandoned, Old};
use crate::pg::{Creating, Kind, Marker, Server};
use crate::term::step;

pub fn run(ctx: &Ctx, flags: crate::flags::Fresh) -> Result<()> {
    let server = ctx.server()?;
    // A dry run changes nothing: not even what killed runs left is swept.
    if !flags.dry_run {
        sweep_abandoned(&server, &ctx.config.prefix)?;
    }
    let name = ctx.fresh_db();
    if let Some(old) = server.database(&name)? {
        if !matches!(old.kind(), Some(Kind::Fresh {})) {
            return Err(fail(
                format!("`{name}` exists and was not made by `db fresh`; it is left alone"),
                "drop or rename it, or change `prefix`",
            ));
        }
        if old.connections > 0 {
            return Err(fail(
                format!("`{name}` has {} open connection(s)", old.connections),
                "close them and run again",
            ));
        }
    }
    if flags.dry_run {
        let replacing = if server.database_exists(&name)? { ", replacing the existing one" } else { "" };
        eprintln!("--dry-run: would build `{name}` from every migration{replacing}; nothing is changed");
        return Ok(());
    }
    let previous = format!("the previous `{name}`");
    let build = staging::Build {
        prefix: &ctx.config.prefix,
        what: Staging::Fresh,
        target: &name,
        marker: Marker::new(Kind::Fresh {}),
        old: Old::Replace { prefix: &ctx.config.prefix, force: false, what: &previous },
        settings: &[],
    };
    staging::build(&server, build, |staging, marker| Ok((build_into(ctx, &server, staging, &marker)?, ())))?;
    eprintln!("fresh database ready (every migration on an empty database)");
    println!("{name}");
    Ok(())
}

/// A database built from nothing by every migration, under a temporary name (dropped again unless
/// the caller keeps the guard).
pub fn build<'s>(ctx: &Ctx, server: &'s Server) -> Result<Creating<'s>> {
    let staging = staging::name(&ctx.config.prefix, Staging::Fresh);
    build_into(ctx, server, &staging, &staging::staging_marker(&ctx.fresh_db()))
}

/// Creates `staging` (marked `marker`) and applies every migration to it.
fn build_into<'s>(ctx: &Ctx, server: &'s Server, staging: &str, marker: &Marker) -> Result<Creating<'s>> {
    let db = step("creating an empty database and applying every migration", || {
        let db = server.create_database(staging, "TEMPLATE template0", marker)?;
        ctx.run_migrator(&server.url.with_dbname(staging), None)?;
        Ok(db)
    })?;
    super::migrate::verify_applied(ctx, server, staging)?;
    Ok(db)
}
