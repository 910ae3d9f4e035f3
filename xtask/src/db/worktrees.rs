//! `db worktrees`: the per-branch databases, and `--prune` for those whose worktree is gone.

use anyhow::Result;
use serde::Serialize;

use super::ops::owner::same_path;
use super::Ctx;
use crate::flags::Worktrees;
use crate::pg::human_size;
use crate::pg::staging::sweep_abandoned;
use crate::term::{confirm, Answer};

#[derive(Debug, Serialize)]
struct Row {
    name: String,
    branch: String,
    size_bytes: i64,
    created_at: String,
    worktree: String,
    /// The worktree is still registered with git and its directory exists.
    worktree_exists: bool,
    /// Made from another clone of the repository: listed, never pruned from here.
    other_repo: bool,
    connections: i64,
}

pub fn run(ctx: &Ctx, flags: Worktrees) -> Result<()> {
    let server = ctx.server()?;
    // A dry run changes nothing: not even what killed runs left is swept.
    if !flags.dry_run {
        sweep_abandoned(&server, &ctx.config.prefix)?;
    }
    let live = super::ops::owner::Live::of(ctx)?;
    let mut rows = Vec::new();
    for db in server.databases(&ctx.config.prefix, &[])? {
        let Some(b) = db.branch().filter(|_| db.name != ctx.config.template && db.name != ctx.config.frozen_db())
        else {
            continue;
        };
        let other_repo = !same_path(&b.repo, &ctx.worktrees.main);
        // By path, by git id (a moved worktree keeps it), or named by a live worktree's .env.
        let worktree_exists = live.owns(&db);
        rows.push(Row {
            branch: b.branch.clone(),
            created_at: db.marker.as_ref().map(|m| m.created_at.clone()).unwrap_or_default(),
            worktree: b.worktree.display().to_string(),
            name: db.name,
            size_bytes: db.size_bytes,
            worktree_exists,
            other_repo,
            connections: db.connections,
        });
    }

    if flags.format.json(flags.json) && !flags.prune {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if !flags.prune {
        print_table(&rows);
        return Ok(());
    }

    let orphans: Vec<&Row> = rows.iter().filter(|r| !r.worktree_exists && !r.other_repo).collect();
    if orphans.is_empty() {
        eprintln!("no database lost its worktree: nothing to prune");
        return Ok(());
    }
    eprintln!("databases whose worktree is gone:");
    for r in &orphans {
        eprintln!("  {}  (branch {}, {}, worktree {})", r.name, r.branch, human_size(r.size_bytes), r.worktree);
    }
    if !confirm(&format!("Drop these {} database(s)?", orphans.len()), Answer::new(flags.yes, flags.dry_run))? {
        eprintln!("nothing dropped");
        return Ok(());
    }
    let mut failed = 0;
    for r in orphans {
        match server.drop_database(&r.name, false) {
            Ok(()) => eprintln!("dropped `{}`", r.name),
            Err(e) => {
                failed += 1;
                eprintln!("could not drop `{}`: {e:#}", r.name);
            }
        }
    }
    if failed > 0 {
        return Err(crate::error::fail(
            format!("{failed} database(s) could not be dropped"),
            "stop what is connected to them and run `cargo xtask db worktrees --prune` again",
        ));
    }
    Ok(())
}

fn print_table(rows: &[Row]) {
    if rows.is_empty() {
        println!("no per-branch databases (create one with `cargo xtask db worktree` in a worktree)");
        return;
    }
    println!("{:<40} {:<28} {:>9}  {:<20}  WORKTREE", "DATABASE", "BRANCH", "SIZE", "CREATED");
    for r in rows {
        let state = if r.other_repo {
            " (another clone of the repo)"
        } else if r.worktree_exists {
            ""
        } else {
            " (gone: `--prune` drops it)"
        };
        println!(
            "{:<40} {:<28} {:>9}  {:<20}  {}{state}",
            r.name,
            r.branch,
            human_size(r.size_bytes),
            r.created_at,
            r.worktree
        );
    }
}
