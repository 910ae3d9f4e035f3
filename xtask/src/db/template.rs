//! `db template create`: the golden template from nothing (migrations + seed).

use std::process::Command;

use anyhow::{Context, Result};

use super::Ctx;
use crate::error::fail;
use crate::flags::TemplateCreate;
use crate::naming::Staging;
use crate::pg::staging::{self, sweep_abandoned, Old};
use crate::pg::{human_size, Kind, Marker, Server};
use crate::proc;
use crate::term::{confirm, step, Answer};

pub fn create(ctx: &Ctx, flags: TemplateCreate) -> Result<()> {
    let server = ctx.server()?;
    let name = ctx.config.template.clone();
    let existing = server.database(&name)?;
    if let Some(t) = &existing {
        if !flags.force {
            return Err(fail(
                format!("the golden template `{name}` already exists ({})", human_size(t.size_bytes)),
                "keep it, or rebuild it from the migrations and seed with `cargo xtask db template create --force`",
            ));
        }
        if t.connections > 0 {
            return Err(fail(
                format!(
                    "the golden template `{name}` has {} open connection(s); it cannot be replaced while in use",
                    t.connections
                ),
                "stop what is connected to it (the app in the main worktree?) and run again",
            ));
        }
        // Replacing it is destructive; a database this tool did not build says so.
        let question = if matches!(t.kind(), Some(Kind::Template {})) {
            format!(
                "Replace the golden template `{name}` ({}) with a new build? Its data will be gone",
                human_size(t.size_bytes)
            )
        } else {
            format!(
                "`{name}` ({}) was not built by `db template create` (no marker): replace it with a new build? Its data will be gone",
                human_size(t.size_bytes)
            )
        };
        if !confirm(&question, Answer::new(flags.yes, flags.dry_run))? {
            eprintln!("nothing replaced");
            return Ok(());
        }
    } else if flags.dry_run {
        eprintln!(
            "--dry-run: would build the golden template `{name}` from every migration and the seed; nothing is changed"
        );
        return Ok(());
    }

    sweep_abandoned(&server, &ctx.config.prefix)?;
    // An existing template is renamed aside in the publishing transaction as the new one takes
    // its name, then dropped. A psql left behind by a killed run can only roll it back.
    let build = staging::Build {
        prefix: &ctx.config.prefix,
        what: Staging::Build,
        target: &name,
        marker: Marker::new(Kind::Template {}),
        old: Old::Replace { prefix: &ctx.config.prefix, force: false, what: "the old template" },
        settings: &[],
    };
    staging::build(&server, build, |staging, marker| {
        let building = step(&format!("creating `{staging}` (becomes `{name}` when complete)"), || {
            server.create_database(staging, "TEMPLATE template0", &marker)
        })?;
        let url = server.url.with_dbname(staging);
        step("applying every migration (the app's migrator)", || ctx.run_migrator(&url, None))?;
        for seed in &ctx.config.seed_files {
            step(&format!("loading seed data from {}", seed.display()), || load_sql(ctx, &server, staging, seed))?;
        }
        // Statistics and visibility now: left to autovacuum, its worker would connect to the
        // new template a minute later, and a session that came and went makes every copy made
        // before it stale (the spare made right after this was wasted).
        step("VACUUM (FREEZE, ANALYZE): statistics now, nothing left for autovacuum", || {
            server.exec(staging, "VACUUM (FREEZE, ANALYZE)")
        })?;
        Ok((building, ()))
    })?;
    let size = server.database(&name)?.map(|d| human_size(d.size_bytes)).unwrap_or_default();
    eprintln!("golden template `{name}` is ready ({size})");
    Ok(())
}

/// Runs a SQL file in `db` in one transaction, stopping at the first error.
fn load_sql(ctx: &Ctx, server: &Server, db: &str, file: &std::path::Path) -> Result<()> {
    let path = ctx.config.root.join(file);
    if !path.is_file() {
        return Err(fail(
            format!("seed file {} does not exist", path.display()),
            "fix `seed_files` in [workspace.metadata.db]",
        ));
    }
    let mut cmd: Command = server.psql(db)?;
    cmd.arg("--single-transaction").arg("-f").arg(&path);
    proc::capture(&mut cmd, None).with_context(|| format!("loading {}", file.display()))?;
    Ok(())
}
