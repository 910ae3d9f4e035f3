//! `db worktree`: this git worktree gets its own database, cloned from the golden template
//! ([`branch`]); `db worktree BRANCH`: the branch's git worktree *and* its database, from one
//! command run in a worktree where the xtask is already built (usually the main one).
//!
//! Why a form of `db worktree` rather than a recipe that `cd`s into the new worktree and runs
//! `cargo xtask` there: a new worktree's `target/` is empty, and `cargo xtask` there compiles the
//! xtask and its dependencies (13 s) before the 0.1 s of database work. Here the running xtask
//! makes the worktree, starts seeding its build cache (in the background) so that its first build
//! is incremental, then sets it up exactly as `db worktree` run inside it would (same code, with
//! the new worktree as its context). The flow: check the name and the place → `git worktree add`
//! → seed the build cache → the database → print the directory. Until its database exists, a
//! failure (or Ctrl-C) removes the new worktree and a branch made for it: no worktree without a
//! database.

use std::time::Instant;

use anyhow::{Context, Result};

use super::ops::branch::{self, Setup};
use super::ops::{worktree, Ctx};
use crate::error::fail;
use crate::flags::Worktree;
use crate::term::Answer;
use crate::{build_cache, git, time};

/// `db worktree` in this worktree.
pub fn run(ctx: &Ctx, flags: Worktree) -> Result<()> {
    branch::set_up(ctx, &setup(&flags), None)
}

fn setup(flags: &Worktree) -> Setup {
    Setup {
        name: flags.name.clone(),
        reset: flags.reset,
        strategy: flags.strategy,
        skip_migrate: flags.skip_migrate,
        skip_generate: flags.skip_generate,
        drop: flags.drop,
        yes: flags.yes,
        dry_run: flags.dry_run,
    }
}

/// `db worktree BRANCH`: the branch's git worktree, then its database from the new worktree's
/// context; the directory printed last.
pub fn open(ctx: &Ctx, branch: &str, flags: Worktree) -> Result<()> {
    let started = Instant::now();
    worktree::check_branch_name(&ctx.worktrees.current, branch)?;
    // Runs of this repository look and add one at a time (released once the worktree is there):
    // a second run for the same branch then finds the first one's worktree, complete.
    let adding = worktree::RepoLock::take(ctx)?;
    let listed = git::list(&ctx.worktrees.current)?;
    let mut early = None;
    let (dir, made) = match listed.iter().find(|w| w.branch.as_deref() == Some(branch)) {
        None if flags.drop => {
            return Err(fail(
                format!("no worktree has `{branch}` checked out: there is no database of it to drop"),
                "list the branch databases with `cargo xtask db worktrees`",
            ))
        }
        Some(w) => {
            if w.path == ctx.worktrees.main {
                return Err(fail(
                    format!("`{branch}` is checked out in the main worktree, whose database is the golden template"),
                    "check out another branch there first, or open a worktree for another branch",
                ));
            }
            if let Some(p) = &flags.path {
                if std::path::absolute(p).ok().as_deref() != Some(w.path.as_path()) {
                    return Err(fail(
                        format!("`{branch}` is already checked out in {}", w.path.display()),
                        "leave out --path to set that worktree up, or remove it first with `git worktree remove`",
                    ));
                }
            }
            if flags.drop {
                return worktree::drop_and_remove(ctx, &w.path, Answer::new(flags.yes, flags.dry_run));
            }
            crate::term::announce(format_args!("`{branch}` already has a worktree: {}", w.path.display()));
            (w.path.clone(), None)
        }
        None => {
            let dir = match &flags.path {
                Some(p) => std::path::absolute(p).context("resolving --path")?,
                None => worktree::default_dir(&ctx.worktrees.main, branch)?,
            };
            if dir.exists() || dir.symlink_metadata().is_ok() {
                return Err(fail(
                    format!("{} already exists", dir.display()),
                    "remove it, or put the worktree elsewhere with --path DIR",
                ));
            }
            // The look at the template that decides how to clone it starts now, and runs while
            // the worktree is checked out.
            if !flags.drop && flags.strategy == crate::pg::clone::Strategy::Auto {
                if let Ok((url, _)) = ctx.database_url() {
                    let spare = ctx.config.spare_clone.then(|| ctx.config.spare_db());
                    early = Some(crate::pg::clone::look_ahead_from(
                        url,
                        &ctx.config.maintenance_db,
                        &ctx.config.template,
                        spare,
                        &ctx.config.ledger_table,
                    ));
                }
            }
            let made = worktree::add(&ctx.worktrees.current, branch, &dir)?;
            eprintln!("  {} ({})", worktree::made_line(branch, &dir, &made), time::elapsed(started.elapsed()));
            (dir, Some(made))
        }
    };
    drop(adding);
    let env_before = std::fs::read(dir.join(".env")).ok();

    let sub = Ctx::load_at(&dir, &ctx.overrides);
    // The build cache first, in the background: the setup's own cargo runs there (a branch's
    // pending migrations run `cargo run -p app -- migrate`) wait for it and reuse this build,
    // and it overlaps the database work. A failure below waits for it before removing the
    // worktree (`Made::drop`).
    let seeded = match &sub {
        Ok(sub) if !flags.drop && sub.config.seed_build_cache => {
            Some(build_cache::seed(&ctx.config.root, &sub.config.root, &sub.state_dir().join("seed-build-cache.log")))
        }
        _ => None,
    };
    let result = sub.and_then(|sub| branch::set_up(&sub, &setup(&flags), early).map(|()| sub));
    match result {
        Ok(_) => {}
        Err(e) => {
            if let Some(made) = made {
                // Its database exists once `.env` names it (written right after the clone).
                if std::fs::read(dir.join(".env")).ok() != env_before {
                    eprintln!(
                        "note: the new worktree {} and its database are kept; fix the cause and run `cargo xtask db worktree` there",
                        dir.display()
                    );
                } else {
                    drop(made);
                }
            }
            return Err(e);
        }
    };
    if let Some(made) = made {
        made.keep();
    }
    match seeded {
        Some(Ok(Some(line))) => eprintln!("{:>9}  {line}", "target"),
        Some(Ok(None)) | None => {}
        Some(Err(e)) => {
            eprintln!("warning: the build cache was not seeded ({e:#}); the first build there is a full one")
        }
    }
    eprintln!("ready: cd {}", dir.display());
    println!("{}", dir.display());
    Ok(())
}
