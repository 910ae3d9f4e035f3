//! A branch's git worktree, for `db worktree BRANCH`: the branch name checked, the repository's
//! turn taken (`RepoLock`), the worktree added — on the local branch, tracking the one remote
//! branch of that name, or on a new branch — and removed again with a branch made for it unless
//! kept (`Made`); `--drop`'s removal after its database, refused first where git would refuse.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Ctx;
use crate::error::fail;
use crate::flock::{self, Mode};
use crate::term::Answer;
use crate::{build_cache, git, proc};

/// An exclusive `flock` on `worktree-add.lock` in [`Ctx::state_dir`], held while a run looks at
/// the worktrees and adds one (gone with the process, whatever ends it).
pub struct RepoLock(#[allow(dead_code)] std::fs::File);

impl RepoLock {
    pub fn take(ctx: &Ctx) -> Result<RepoLock> {
        let dir = ctx.state_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("worktree-add.lock"))
            .context("opening the worktree lock")?;
        if !flock::try_lock(&file, Mode::Exclusive) {
            crate::term::announce(format_args!("waiting for another run of this tool to finish adding a worktree"));
            flock::lock(&file, Mode::Exclusive)?;
        }
        Ok(RepoLock(file))
    }
}

/// `--drop BRANCH`: its worktree's database, then the worktree (`git worktree remove`). What git
/// would refuse — changes, untracked files, a lock — is refused before the database is dropped,
/// and the question names both.
pub fn drop_and_remove(ctx: &Ctx, dir: &Path, answer: Answer) -> Result<()> {
    removable(dir)?;
    let sub = Ctx::load_at(dir, &ctx.overrides)?;
    let and_then = format!(", and remove the worktree {}", dir.display());
    if !super::branch::drop_own(&sub, answer, &and_then)? {
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
pub fn default_dir(main: &Path, branch: &str) -> Result<PathBuf> {
    let parent = main.parent().context("the main worktree has no parent directory")?;
    let name = main.file_name().context("the main worktree has no directory name")?.to_string_lossy();
    Ok(parent.join(format!("{name}-{}", branch.replace('/', "-"))))
}

/// Refuses what git would refuse as a branch name, before anything is made.
pub fn check_branch_name(cwd: &Path, branch: &str) -> Result<()> {
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
pub struct Made {
    cwd: PathBuf,
    dir: PathBuf,
    branch: String,
    /// `None`: the branch existed; else what it was made from.
    new_branch_from: Option<String>,
    tracking: Option<String>,
    kept: bool,
}

impl Made {
    pub fn keep(mut self) {
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

pub fn made_line(branch: &str, dir: &Path, made: &Made) -> String {
    match (&made.new_branch_from, &made.tracking) {
        (_, Some(remote)) => format!("{} on `{branch}`, tracking `{remote}`", dir.display()),
        (Some(from), None) => format!("{} on the new branch `{branch}` (from {from})", dir.display()),
        (None, None) => format!("{} on the existing branch `{branch}`", dir.display()),
    }
}

/// `git worktree add`: on the local branch if it exists, else tracking the one remote branch of
/// that name, else on a new branch from HEAD.
pub fn add(cwd: &Path, branch: &str, dir: &Path) -> Result<Made> {
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
    crate::term::announce(format_args!("git worktree add {}", dir.display()));
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
