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
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};

use super::Ctx;
use crate::error::fail;
use crate::flags::Worktree;
use crate::term::Answer;
use crate::{build_cache, proc, time};

pub fn run(ctx: &Ctx, branch: &str, flags: Worktree) -> Result<()> {
    let started = Instant::now();
    check_branch_name(&ctx.worktrees.current, branch)?;
    // Runs of this repository look and add one at a time (released once the worktree is there):
    // a second run for the same branch then finds the first one's worktree, complete.
    let adding = RepoLock::take(ctx)?;
    let listed = list(&ctx.worktrees.current)?;
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

/// What git said last on stderr (its one-line reason).
fn git_says(stderr: &[u8]) -> String {
    crate::error::telling_line(&String::from_utf8_lossy(stderr)).to_string()
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
    let mut cmd = Command::new("git");
    cmd.current_dir(&ctx.worktrees.current).arg("worktree").arg("remove").arg("--end-of-options").arg(dir);
    match proc::output(&mut cmd, None)? {
        (status, _, _) if status.success() => {
            eprintln!("removed the worktree {}", dir.display());
            Ok(())
        }
        (_, _, stderr) => {
            let last = git_says(&stderr);
            Err(fail(
                format!("its database is dropped, but git kept the worktree {}: {last}", dir.display()),
                format!("commit or discard its changes, then `git worktree remove {}`", dir.display()),
            ))
        }
    }
}

/// Whether `git worktree remove` (without `--force`) would remove `dir`: git refuses a worktree
/// with changes to tracked files or untracked (not ignored) files, and a locked one.
fn removable(dir: &Path) -> Result<()> {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir).args(["status", "--porcelain", "--ignore-submodules=none", "--untracked-files=all"]);
    let status = proc::capture(&mut cmd, None).context("asking git whether the worktree has changes")?;
    if let Some(first) = status.lines().next() {
        let more = status.lines().count() - 1;
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
    let mut cmd = Command::new("git");
    cmd.current_dir(dir).args(["worktree", "list", "--porcelain", "-z"]);
    let list = proc::capture(&mut cmd, None).context("listing git worktrees")?;
    let mut this = false;
    for field in list.split('\0') {
        if let Some(p) = field.strip_prefix("worktree ") {
            this = Path::new(p) == dir;
        } else if this && (field == "locked" || field.starts_with("locked ")) {
            return Err(fail(
                format!(
                    "the worktree {} is locked (`git worktree lock`): nothing dropped, nothing removed",
                    dir.display()
                ),
                format!("unlock it with `git worktree unlock {}`, then run again", dir.display()),
            ));
        }
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
    let mut cmd = Command::new("git");
    cmd.current_dir(cwd).args(["check-ref-format", "--branch", branch]);
    match proc::output(&mut cmd, None)? {
        (status, _, _) if status.success() => Ok(()),
        _ => bad("git check-ref-format refuses it"),
    }
}

struct Listed {
    path: PathBuf,
    branch: Option<String>,
}

/// `git worktree list --porcelain`, with a line per worktree's path and branch.
fn list(cwd: &Path) -> Result<Vec<Listed>> {
    let mut cmd = Command::new("git");
    cmd.current_dir(cwd).args(["worktree", "list", "--porcelain", "-z"]);
    let out = proc::capture(&mut cmd, None).context("listing git worktrees")?;
    let mut found = Vec::new();
    for field in out.split('\0') {
        if let Some(p) = field.strip_prefix("worktree ") {
            found.push(Listed { path: PathBuf::from(p), branch: None });
        } else if let (Some(b), Some(last)) = (field.strip_prefix("branch refs/heads/"), found.last_mut()) {
            last.branch = Some(b.to_string());
        }
    }
    Ok(found)
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
        let git = |args: &[&str]| {
            let mut cmd = Command::new("git");
            cmd.current_dir(&self.cwd).args(args);
            proc::output(&mut cmd, None).map(|(s, _, _)| s.success()).unwrap_or(false)
        };
        let dir = self.dir.to_string_lossy();
        let removed = git(&["worktree", "remove", "--force", "--force", &dir]);
        if !removed {
            let _ = std::fs::remove_dir_all(&self.dir);
            git(&["worktree", "prune"]);
        }
        if self.new_branch_from.is_some() || self.tracking.is_some() {
            git(&["branch", "-D", "--", &self.branch]);
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
    let exists = |r: &str| {
        let mut cmd = Command::new("git");
        cmd.current_dir(cwd).args(["rev-parse", "--verify", "--quiet", "--end-of-options", r]);
        proc::output(&mut cmd, None).map(|(s, _, _)| s.success())
    };
    let local = exists(&format!("refs/heads/{branch}^{{commit}}"))?;
    let remotes: Vec<String> = if local {
        Vec::new()
    } else {
        let mut cmd = Command::new("git");
        cmd.current_dir(cwd).args(["for-each-ref", "--format=%(refname:short)", "refs/remotes/*/"]);
        let pattern = format!("/{branch}");
        proc::capture(&mut cmd, None)?
            .lines()
            .filter(|r| r.ends_with(&pattern) && r.len() > pattern.len() && !r[..r.len() - pattern.len()].contains('/'))
            .map(str::to_string)
            .collect()
    };
    let mut made = Made {
        cwd: cwd.to_path_buf(),
        dir: dir.to_path_buf(),
        branch: branch.to_string(),
        new_branch_from: None,
        tracking: None,
        kept: false,
    };
    let mut cmd = Command::new("git");
    cmd.current_dir(cwd).args(["worktree", "add", "--quiet"]);
    let d = dir.as_os_str();
    if local {
        cmd.arg("--end-of-options").arg(d).arg(branch);
    } else if let [remote] = remotes.as_slice() {
        cmd.args(["--track", "-b", branch, "--end-of-options"]).arg(d).arg(remote);
        made.tracking = Some(remote.clone());
    } else {
        if remotes.len() > 1 {
            return Err(fail(
                format!("`{branch}` is a branch of several remotes ({})", remotes.join(", ")),
                format!("make the local branch first: `git branch --track {branch} <remote>/{branch}`"),
            ));
        }
        let mut head = Command::new("git");
        head.current_dir(cwd).args(["rev-parse", "--abbrev-ref", "HEAD"]);
        let from = proc::capture(&mut head, None).map(|h| h.trim().to_string()).unwrap_or_default();
        cmd.args(["-b", branch, "--end-of-options"]).arg(d).arg("HEAD");
        made.new_branch_from =
            Some(if from.is_empty() || from == "HEAD" { "HEAD".into() } else { format!("`{from}`") });
    }
    eprintln!("▸ git worktree add {}", dir.display());
    match proc::output(&mut cmd, None) {
        Ok((status, _, _)) if status.success() => Ok(made),
        Ok((status, _, stderr)) => {
            let last = git_says(&stderr);
            // git cleans up after itself when it fails; what is there now is another's (a run
            // for the same branch at the same moment): never undo it.
            made.kept = true;
            Err(fail(
                format!("git worktree add failed ({}): {last}", proc::describe(status)),
                "fix what git says and run again",
            ))
        }
        Err(e) => {
            proc::check_interrupt()?;
            Err(e)
        }
    }
}
