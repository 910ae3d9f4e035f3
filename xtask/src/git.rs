//! What git knows about where we run: this worktree, and the main worktree whose `.env` and
//! embedded cluster all worktrees share.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::proc;

#[derive(Debug, Clone)]
pub struct Worktrees {
    /// Top of the worktree we run in.
    pub current: PathBuf,
    /// Top of the main worktree (the one holding `.git/`).
    pub main: PathBuf,
}

impl Worktrees {
    /// Asks git; outside a git checkout both are `fallback` (a source tarball still works).
    pub fn discover(cwd: &Path, fallback: &Path) -> Result<Worktrees> {
        let mut cmd = Command::new("git");
        cmd.current_dir(cwd).args(["rev-parse", "--path-format=absolute", "--show-toplevel", "--git-common-dir"]);
        let out = match proc::capture(&mut cmd, None) {
            Ok(out) => out,
            Err(_) => return Ok(Worktrees { current: fallback.to_path_buf(), main: fallback.to_path_buf() }),
        };
        let mut lines = out.lines();
        let current = PathBuf::from(lines.next().context("git rev-parse printed nothing")?);
        let common = PathBuf::from(lines.next().context("git rev-parse printed no common dir")?);
        let main = match common.file_name() {
            Some(n) if n == ".git" => common.parent().map(Path::to_path_buf).unwrap_or(current.clone()),
            // A bare repository's worktrees have no main worktree: use the current one.
            _ => current.clone(),
        };
        Ok(Worktrees { current, main })
    }

    pub fn is_main(&self) -> bool {
        self.current == self.main
    }
}

/// The checked-out branch of the worktree at `dir`; `None` on a detached HEAD.
pub fn branch(dir: &Path) -> Result<Option<String>> {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir).args(["symbolic-ref", "--quiet", "--short", "HEAD"]);
    match proc::capture(&mut cmd, None) {
        Ok(out) => Ok(Some(out.trim_end_matches('\n').to_string())),
        Err(_) => {
            // Distinguish "detached" from "not a repository".
            let mut check = Command::new("git");
            check.current_dir(dir).args(["rev-parse", "--git-dir"]);
            proc::capture(&mut check, None).context("not inside a git repository")?;
            Ok(None)
        }
    }
}

/// The top directories of all worktrees of the repository at `dir` (main first).
pub fn worktree_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir).args(["worktree", "list", "--porcelain"]);
    let out = proc::capture(&mut cmd, None).context("listing git worktrees")?;
    Ok(out.lines().filter_map(|l| l.strip_prefix("worktree ")).map(PathBuf::from).collect())
}
