//! `db fresh`: the HEAD-schema baseline, `<prefix>fresh` (per worktree: see [`Ctx::fresh_db`]),
//! built from an empty database and every migration.

use anyhow::Result;

use super::ops::fresh::build_into;
use super::Ctx;
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
    let previous = format!("the previous `{name}`");
    let build = staging::Build {
        prefix: &ctx.config.prefix,
        what: Staging::Fresh,
        target: &name,
        marker: Marker::new(Kind::Fresh {}),
        old: Old::Replace { prefix: &ctx.config.prefix, force: false, what: &previous },
        settings: &[],
    };
    let old = build.may_replace(&server, "made by `db fresh`", "drop or rename it, or change `prefix`")?;
    if flags.dry_run {
        let replacing = if old.is_some() { ", replacing the existing one" } else { "" };
        eprintln!("--dry-run: would build `{name}` from every migration{replacing}; nothing is changed");
        return Ok(());
    }
    staging::build(&server, build, |staging, marker| Ok((build_into(ctx, &server, staging, &marker)?, ())))?;
    eprintln!("fresh database ready (every migration on an empty database)");
    println!("{name}");
    Ok(())
}
