//! `db worktree BRANCH`: the git worktree of a branch *and* its database, from one command run in
//! a worktree where the xtask is already built (usually the main one).
//!
//! Why a form of `db worktree` rather than a recipe that `cd`s into the new worktree and runs
//! `cargo xtask` there: a new worktree's `target/` is empty, and `cargo xtask` there compiles the
//! xtask and its dependencies (13 s) before the 0.1 s of database work. Here the running xtask
//! makes the worktree, starts seeding its build cache (in the background) so that its first build
//! is incremental, then sets it up exactly as `db worktree` run inside it would (same code, with
//! the new worktree as its context). The flow: check the name and the place → `git worktree add`
//! → seed the build cache → `db worktree` for it → print the directory. Until its database exists, a failure (or Ctrl-C)
//! removes the new worktree and a branch made for it: no worktree without a database.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use super::Ctx;
use crate::error::fail;
use crate::flags::Worktree;
use crate::term::Answer;
use crate::{build_cache, git, proc, time};

pub fn run(ctx: &Ctx, branch: &str, flags: Worktree) -> Result<()> {
    let started = Instant::now();
    check_branch_name(&ctx.worktrees.current, branch)?;
    // Runs of this repository look and add one at a time (released once the worktree is there):
    // a second run for the same branch then finds the first one's worktree, complete.
    let adding = RepoLock::take(ctx)?;
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
                return drop_and_remove(ctx, &w.path, Answer::new(flags.yes, flags.dry_run));
            }
            eprintln!("▸ `{branch}` already has a worktree: {}", w.path.display());
            (w.path.clone(), None)
        }
        None => {
            let dir = match &flags.path {
                Some(p) => std::path::absolute(p).context("resolving --path")?,
                None => default_dir(&ctx.worktrees.main, branch)?,
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
            let made = add(&ctx.worktrees.current, branch, &dir)?;
            eprintln!("  {} ({})", made_line(branch, &dir, &made), time::elapsed(started.elapsed()));
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
        Ok(sub) if !flags.drop => Some(build_cache::seed(ctx, sub)),
        _ => None,
    };
    let result = sub.and_then(|sub| {
        super::worktree::run_looking(&sub, Worktree { branch: None, path: None, ..flags.clone() }, early).map(|()| sub)
    });
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

/// An exclusive `flock` on `worktree-add.lock` in [`Ctx::state_dir`], held while a run looks at
/// the worktrees and adds one (gone with the process, whatever ends it).
struct RepoLock(#[allow(dead_code)] std::fs::File);

impl RepoLock {
    fn take(ctx: &Ctx) -> Result<RepoLock> {
        use std::os::fd::AsRawFd;
        let dir = ctx.state_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("worktree-add.lock"))
            .context("opening the worktree lock")?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            eprintln!("▸ waiting for another run of this tool to finish adding a worktree");
            // SAFETY: as above; blocking.
            while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
                proc::check_interrupt()?;
            }
        }
        Ok(RepoLock(file))
    }
}

/// `--drop BRANCH`: its worktree's database, then the worktree (`git worktree remove`). What git
/// would refuse — changes, untracked files, a lock — is refused before the database is dropped,
/// and the question names both.
fn drop_and_remove(ctx: &Ctx, dir: &Path, answer: Answer) -> Result<()> {
    removable(dir)?;
    let sub = Ctx::load_at(dir, &ctx.overrides)?;
    let and_then = format!(", and remove the worktree {}", dir.display());
    if !super::worktree::drop_own(&sub, answer, &and_then)? {
        return Ok(());
    }
    match git::remove_worktree(&ctx.worktrees.current, dir, false)? {
        Ok(()) => {
            eprintln!("removed the worktree {}", dir.display());
            Ok(())
        }
        Err(last) => Err(fail(
            format!("its database is dropped, but git kept the worktree {}: {last}", dir.display()),
            format!("commit or discard its changes, then `git worktree remove {}`", dir.display()),
        )),
    }
}

/// Whether `git worktree remove` (without `--force`) would remove `dir`: git refuses a worktree
/// with changes to tracked files or untracked (not ignored) files, and a locked one.
fn removable(dir: &Path) -> Result<()> {
    let changes = git::changes(dir)?;
    if let Some(first) = changes.first() {
        let more = changes.len() - 1;
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        return Err(fail(
            format!(
                "the worktree {} has changes or untracked files git would not remove (`{}`{more}): nothing dropped, nothing removed",
                dir.display(),
                first.trim()
            ),
            format!("commit, stash or delete them (see `git -C {} status`), then run again", dir.display()),
        ));
    }
    if git::list(dir)?.iter().any(|w| w.path == dir && w.locked) {
        return Err(fail(
            format!("the worktree {} is locked (`git worktree lock`): nothing dropped, nothing removed", dir.display()),
            format!("unlock it with `git worktree unlock {}`, then run again", dir.display()),
        ));
    }
    Ok(())
}

/// `../<main worktree's directory name>-<branch, '/' as '-'>`.
fn default_dir(main: &Path, branch: &str) -> Result<PathBuf> {
    let parent = main.parent().context("the main worktree has no parent directory")?;
    let name = main.file_name().context("the main worktree has no directory name")?.to_string_lossy();
    Ok(parent.join(format!("{name}-{}", branch.replace('/', "-"))))
}

/// Refuses what git would refuse as a branch name, before anything is made.
fn check_branch_name(cwd: &Path, branch: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(fail(
            format!("`{}` is not a valid branch name ({why})", branch.escape_debug()),
            "pick a name git accepts, e.g. `feature/login` (see `git check-ref-format --help`)",
        ))
    };
    if branch.is_empty() {
        return bad("it is empty");
    }
    if branch.starts_with('-') {
        return bad("it starts with `-`");
    }
    if branch.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    match git::is_branch_name(cwd, branch)? {
        true => Ok(()),
        false => bad("git check-ref-format refuses it"),
    }
}

/// A worktree this run made: removed again (with a branch made for it) unless kept.
struct Made {
    cwd: PathBuf,
    dir: PathBuf,
    branch: String,
    /// `None`: the branch existed; else what it was made from.
    new_branch_from: Option<String>,
    tracking: Option<String>,
    kept: bool,
}

impl Made {
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        // A seed of its target/ still running would write into the removed directory.
        build_cache::wait(&self.dir);
        let removed = git::remove_worktree(&self.cwd, &self.dir, true).is_ok_and(|r| r.is_ok());
        if !removed {
            let _ = std::fs::remove_dir_all(&self.dir);
            git::prune(&self.cwd);
        }
        if self.new_branch_from.is_some() || self.tracking.is_some() {
            git::delete_branch(&self.cwd, &self.branch);
        }
        eprintln!("removed the new worktree {} again", self.dir.display());
    }
}

fn made_line(branch: &str, dir: &Path, made: &Made) -> String {
    match (&made.new_branch_from, &made.tracking) {
        (_, Some(remote)) => format!("{} on `{branch}`, tracking `{remote}`", dir.display()),
        (Some(from), None) => format!("{} on the new branch `{branch}` (from {from})", dir.display()),
        (None, None) => format!("{} on the existing branch `{branch}`", dir.display()),
    }
}

/// `git worktree add`: on the local branch if it exists, else tracking the one remote branch of
/// that name, else on a new branch from HEAD.
fn add(cwd: &Path, branch: &str, dir: &Path) -> Result<Made> {
    let local = git::has_branch(cwd, branch)?;
    let remotes = if local { Vec::new() } else { git::remote_branches(cwd, branch)? };
    let mut made = Made {
        cwd: cwd.to_path_buf(),
        dir: dir.to_path_buf(),
        branch: branch.to_string(),
        new_branch_from: None,
        tracking: None,
        kept: false,
    };
    let how = if local {
        git::Checkout::Local
    } else if let [remote] = remotes.as_slice() {
        made.tracking = Some(remote.clone());
        git::Checkout::Track(remote)
    } else {
        if remotes.len() > 1 {
            return Err(fail(
                format!("`{branch}` is a branch of several remotes ({})", remotes.join(", ")),
                format!("make the local branch first: `git branch --track {branch} <remote>/{branch}`"),
            ));
        }
        let from = git::head_name(cwd);
        made.new_branch_from =
            Some(if from.is_empty() || from == "HEAD" { "HEAD".into() } else { format!("`{from}`") });
        git::Checkout::NewFromHead
    };
    eprintln!("▸ git worktree add {}", dir.display());
    match git::add_worktree(cwd, dir, branch, how) {
        Ok(Ok(())) => Ok(made),
        Ok(Err((status, last))) => {
            // git cleans up after itself when it fails; what is there now is another's (a run
            // for the same branch at the same moment): never undo it.
            made.kept = true;
            Err(fail(format!("git worktree add failed ({status}): {last}"), "fix what git says and run again"))
        }
        Err(e) => {
            proc::check_interrupt()?;
            Err(e)
        }
    }
}
