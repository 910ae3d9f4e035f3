//! What git knows about where we run: this worktree, the main worktree (whose `.env` and embedded
//! cluster all worktrees share), the branch, and the list of worktrees.
//!
//! Read from the files git keeps (`.git`, `HEAD`, `commondir`, `worktrees/*/gitdir`) — each `git`
//! process costs ~10 ms, and `db worktree` is meant to be fast. Anything unusual (`GIT_DIR` and
//! friends set, a format we do not recognise) falls back to asking `git` itself.

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
    /// This worktree's git directory (`.git/` or `.git/worktrees/<name>/`), if known.
    git_dir: Option<PathBuf>,
    /// The repository's common git directory (`.git/`), if known.
    common_dir: Option<PathBuf>,
}

impl Worktrees {
    /// Finds the worktrees; outside a git checkout both are `fallback` (a source tarball works).
    pub fn discover(cwd: &Path, fallback: &Path) -> Result<Worktrees> {
        if let Some(w) = from_files(cwd) {
            return Ok(w);
        }
        let mut cmd = Command::new("git");
        cmd.current_dir(cwd).args(["rev-parse", "--path-format=absolute", "--show-toplevel", "--git-common-dir"]);
        let out = match proc::capture(&mut cmd, None) {
            Ok(out) => out,
            Err(_) => {
                let top = fallback.to_path_buf();
                return Ok(Worktrees { current: top.clone(), main: top, git_dir: None, common_dir: None });
            }
        };
        let mut lines = out.lines();
        let current = PathBuf::from(lines.next().context("git rev-parse printed nothing")?);
        let common = PathBuf::from(lines.next().context("git rev-parse printed no common dir")?);
        let main = main_of(&common).unwrap_or_else(|| current.clone());
        Ok(Worktrees { current, main, git_dir: None, common_dir: None })
    }

    pub fn is_main(&self) -> bool {
        self.current == self.main
    }

    /// The checked-out branch of this worktree; `None` on a detached HEAD.
    pub fn branch(&self) -> Result<Option<String>> {
        if let Some(head) = self.git_dir.as_ref().and_then(|d| std::fs::read_to_string(d.join("HEAD")).ok()) {
            let head = head.trim_end();
            if let Some(r) = head.strip_prefix("ref: ") {
                if let Some(b) = r.strip_prefix("refs/heads/") {
                    return Ok(Some(b.to_string()));
                }
            } else if head.len() >= 40 && head.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(None);
            }
        }
        let mut cmd = Command::new("git");
        cmd.current_dir(&self.current).args(["symbolic-ref", "--quiet", "--short", "HEAD"]);
        match proc::capture(&mut cmd, None) {
            Ok(out) => Ok(Some(out.trim_end_matches('\n').to_string())),
            Err(_) => {
                // Distinguish "detached" from "not a repository".
                let mut check = Command::new("git");
                check.current_dir(&self.current).args(["rev-parse", "--git-dir"]);
                proc::capture(&mut check, None).context("not inside a git repository")?;
                Ok(None)
            }
        }
    }

    /// This worktree's id: the name of its directory under `.git/worktrees/` (kept by
    /// `git worktree move`), `""` for the main worktree, `None` when unknown.
    pub fn id(&self) -> Option<String> {
        if self.is_main() {
            return Some(String::new());
        }
        let git_dir = self.git_dir.as_ref()?;
        Some(git_dir.file_name()?.to_string_lossy().into_owned())
    }

    /// The repository's common git directory (`.git/`), if known.
    pub fn common_dir(&self) -> Option<&Path> {
        self.common_dir.as_deref()
    }

    /// The ids of all linked worktrees whose directory still exists (see [`Worktrees::id`]).
    pub fn live_ids(&self) -> Vec<String> {
        let Some(common) = &self.common_dir else { return Vec::new() };
        let Ok(entries) = std::fs::read_dir(common.join("worktrees")) else { return Vec::new() };
        entries
            .flatten()
            .filter(|e| {
                std::fs::read_to_string(e.path().join("gitdir")).is_ok_and(|g| Path::new(g.trim_end()).exists())
            })
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// The top directories of all worktrees of the repository (main first).
    pub fn paths(&self) -> Result<Vec<PathBuf>> {
        if let Some(common) = &self.common_dir {
            let mut out = vec![self.main.clone()];
            if let Ok(entries) = std::fs::read_dir(common.join("worktrees")) {
                for e in entries.flatten() {
                    let Ok(gitdir) = std::fs::read_to_string(e.path().join("gitdir")) else { continue };
                    if let Some(top) = Path::new(gitdir.trim_end()).parent() {
                        out.push(top.to_path_buf());
                    }
                }
            }
            return Ok(out);
        }
        let mut cmd = Command::new("git");
        cmd.current_dir(&self.current).args(["worktree", "list", "--porcelain"]);
        let out = proc::capture(&mut cmd, None).context("listing git worktrees")?;
        Ok(out.lines().filter_map(|l| l.strip_prefix("worktree ")).map(PathBuf::from).collect())
    }
}

/// `.git` found upwards from `cwd`: a directory (the main worktree) or a `gitdir:` file.
fn from_files(cwd: &Path) -> Option<Worktrees> {
    if ["GIT_DIR", "GIT_WORK_TREE", "GIT_COMMON_DIR"].iter().any(|v| std::env::var_os(v).is_some()) {
        return None;
    }
    let cwd = std::path::absolute(cwd).ok()?;
    let top = cwd.ancestors().find(|d| d.join(".git").exists())?.to_path_buf();
    let dot_git = top.join(".git");
    let (git_dir, common) = if dot_git.is_dir() {
        (dot_git.clone(), dot_git)
    } else {
        let text = std::fs::read_to_string(&dot_git).ok()?;
        let gitdir = Path::new(text.trim_end().strip_prefix("gitdir: ")?);
        let gitdir = if gitdir.is_absolute() { gitdir.to_path_buf() } else { top.join(gitdir) };
        let common = match std::fs::read_to_string(gitdir.join("commondir")) {
            Ok(c) => {
                let c = Path::new(c.trim_end());
                if c.is_absolute() {
                    c.to_path_buf()
                } else {
                    gitdir.join(c)
                }
            }
            // A submodule's gitdir: no commondir, and no linked worktrees of ours.
            Err(_) => return None,
        };
        (gitdir, common)
    };
    let common = common.canonicalize().ok()?;
    let main = main_of(&common)?;
    Some(Worktrees { current: top, main, git_dir: Some(git_dir), common_dir: Some(common) })
}

/// The main worktree of a common git directory `<main>/.git`.
fn main_of(common: &Path) -> Option<PathBuf> {
    (common.file_name()? == ".git").then(|| common.parent().map(Path::to_path_buf)).flatten()
}
