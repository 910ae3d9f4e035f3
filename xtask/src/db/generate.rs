//! `db generate [--check]`: the artifacts derived from the migrated schema, regenerated from a
//! database built fresh from every migration — the canonical schema snapshot, the database
//! reference, then the project's own generators.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::{fresh, sweep_abandoned, Ctx};
use crate::error::Verdict;
use crate::migrations::{self, Migration};
use crate::pg::Server;
use crate::schema::{self, Options};
use crate::{dbdoc, proc};

const INPUTS: &str = "-- inputs sha256: ";

pub fn run(ctx: &Ctx, check: bool) -> Result<()> {
    let server = ctx.server()?;
    generate(ctx, &server, check, None)
}

/// For `db worktree`: regenerate only when the migrations changed since the snapshot was made.
/// Returns what was done, for the report.
pub fn if_stale(ctx: &Ctx, server: &Server, port: u16) -> Result<String> {
    let repo = migrations::in_repo(&ctx.config.migrations_path())?;
    let snapshot = std::fs::read_to_string(ctx.config.root.join(&ctx.config.schema_snapshot)).unwrap_or_default();
    let recorded = snapshot.lines().find_map(|l| l.strip_prefix(INPUTS)).unwrap_or_default();
    if recorded == inputs_hash(&repo) && ctx.config.root.join(&ctx.config.database_doc).exists() {
        return Ok(format!("up to date (the migrations match {})", ctx.config.schema_snapshot.display()));
    }
    generate(ctx, server, false, Some(port))?;
    Ok(format!("regenerated {} and {}", ctx.config.schema_snapshot.display(), ctx.config.database_doc.display()))
}

fn generate(ctx: &Ctx, server: &Server, check: bool, port: Option<u16>) -> Result<()> {
    sweep_abandoned(server, &ctx.config.prefix)?;
    let repo = migrations::in_repo(&ctx.config.migrations_path())?;
    let built = fresh::build(ctx, server)?;
    let outputs = render(ctx, server, &built.name, &repo)?;

    if check {
        built.discard()?;
        let mut stale = Vec::new();
        for (path, content) in &outputs {
            let full = ctx.config.root.join(path);
            let current = std::fs::read_to_string(&full).unwrap_or_default();
            if current != *content {
                print!(
                    "{}",
                    schema::unified_diff(
                        &current,
                        content,
                        &format!("{} (committed)", path.display()),
                        &format!("{} (generated)", path.display()),
                        60,
                        false
                    )
                );
                stale.push(path.display().to_string());
            }
        }
        if !ctx.config.generate_commands.is_empty() {
            eprintln!("note: `generate_commands` are not checked by --check (they write their own files)");
        }
        if stale.is_empty() {
            eprintln!(
                "generated files are up to date: {}",
                outputs.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>().join(", ")
            );
            return Ok(());
        }
        return Err(Verdict(format!(
            "generated files are stale: {} — run `cargo xtask db generate` and commit the result",
            stale.join(", ")
        ))
        .into());
    }

    for (path, content) in &outputs {
        let full = ctx.config.root.join(path);
        if std::fs::read_to_string(&full).ok().as_deref() == Some(content.as_str()) {
            continue;
        }
        if let Some(dir) = full.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&full, content).with_context(|| format!("writing {}", full.display()))?;
        eprintln!("wrote {}", path.display());
    }
    for argv in &ctx.config.generate_commands {
        let (program, args) = argv.split_first().context("an empty command in `generate_commands`")?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(&ctx.config.root)
            .env("DATABASE_URL", server.url.with_dbname(&built.name).expose_secret());
        if let Some(port) = port {
            cmd.env("PORT", port.to_string());
        }
        proc::show(&mut cmd).with_context(|| format!("running generator `{}`", argv.join(" ")))?;
    }
    built.discard()
}

/// The generated files' contents (paths relative to the workspace root).
fn render(ctx: &Ctx, server: &Server, db: &str, repo: &[Migration]) -> Result<Vec<(PathBuf, String)>> {
    let mut dump = Command::new(server.pg_dump()?);
    dump.args([
        "--schema-only",
        "--no-owner",
        "--no-privileges",
        "--no-tablespaces",
        "--no-security-labels",
        "--no-publications",
        "--no-subscriptions",
        "-d",
    ])
    .arg(server.arg_url(db));
    server.libpq_env(&mut dump);
    let text = proc::capture(&mut dump, None).context("dumping the fresh schema")?;
    let statements = schema::canonical(&text, Options::default());
    let snapshot = format!(
        "-- The schema after every migration, in canonical form: statements sorted, columns sorted\n\
         -- within tables; owners, privileges and sequence positions left out.\n\
         -- Generated by `cargo xtask db generate` from {} migrations; do not edit by hand.\n\
         {INPUTS}{}\n\n{}",
        repo.len(),
        inputs_hash(repo),
        schema::render(&statements)
    );
    let doc = dbdoc::render(server, db, repo.len())?;
    Ok(vec![(ctx.config.schema_snapshot.clone(), snapshot), (ctx.config.database_doc.clone(), doc)])
}

/// A hash of the migration files, names and contents, in order.
fn inputs_hash(repo: &[Migration]) -> String {
    let mut h = Sha256::new();
    for m in repo {
        h.update(m.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        h.update([0]);
        h.update(&m.checksum);
        h.update([0]);
    }
    h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}
