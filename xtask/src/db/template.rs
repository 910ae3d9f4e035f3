//! `db template create`: the golden template from nothing (migrations + seed).

use std::process::Command;

use anyhow::{Context, Result};

use super::{marker, staging_marker, staging_name, step, sweep_abandoned, Ctx};
use crate::error::fail;
use crate::flags::TemplateCreate;
use crate::pg::{human_size, Server};
use crate::proc;

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
    }

    sweep_abandoned(&server, &ctx.config.prefix)?;
    let pid = std::process::id();
    let staging = staging_name(&ctx.config.prefix, "");
    let building = step(&format!("creating `{staging}` (becomes `{name}` when complete)"), || {
        server.create_database(&staging, "TEMPLATE template0", staging_marker(&name))
    })?;
    let url = server.url.with_dbname(&staging);
    step("applying every migration (the app's migrator)", || ctx.run_migrator(&url, None))?;
    for seed in &ctx.config.seed_files {
        step(&format!("loading seed data from {}", seed.display()), || load_sql(ctx, &server, &staging, seed))?;
    }
    proc::check_interrupt()?;

    if existing.is_some() {
        let old = format!("{}old_{pid}", ctx.config.prefix);
        server.rename_database(&name, &old).context("moving the old template aside")?;
        if let Err(e) = server.rename_database(&staging, &name) {
            let _ = server.rename_database(&old, &name);
            return Err(e);
        }
        building.keep();
        server.drop_database(&old, false).context("dropping the old template")?;
    } else {
        server.rename_database(&staging, &name)?;
        building.keep();
    }
    server.set_marker(&name, &marker("template", serde_json::json!({})))?;
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
    let mut cmd: Command = server.psql(db);
    cmd.arg("--single-transaction").arg("-f").arg(&path);
    proc::capture(&mut cmd, None).with_context(|| format!("loading {}", file.display()))?;
    Ok(())
}
