//! `db fresh`: the HEAD-schema baseline, `<prefix>fresh` (per worktree: see [`Ctx::fresh_db`]),
//! built from an empty database and every migration.

use anyhow::Result;

use super::ops::fresh::build_into;
use super::Ctx;
use crate::error::fail;
use crate::naming::Staging;
use crate::pg::staging::{self, sweep_abandoned, Old};
use crate::pg::{Kind, Marker};

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
