//! What git knows about where we run: this worktree, the main worktree (whose `.env` and embedded
//! cluster all worktrees share), the branch, and the list of worktrees; and every git command
//! the tool runs (adding, listing and removing worktrees, checking branches), each built here
//! with xshell's `cmd!` and run through [`proc`].
//!
//! Read from the files git keeps (`.git`, `HEAD`, `commondir`, `worktrees/*/gitdir`) — each `git`
//! process costs ~10 ms, and `db worktree` is meant to be fast. Anything unusual (`GIT_DIR` and
//! friends set, a format we do not recognise) falls back to asking `git` itself.

use std::ffi::OsStr;
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
        let args = ["rev-parse", "--path-format=absolute", "--show-toplevel", "--git-common-dir"];
        let out = match git(cwd, &args).and_then(|mut cmd| proc::capture(&mut cmd, None)) {
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
        match proc::capture(&mut git(&self.current, &["symbolic-ref", "--quiet", "--short", "HEAD"])?, None) {
            Ok(out) => Ok(Some(out.trim_end_matches('\n').to_string())),
            Err(_) => {
                // Distinguish "detached" from "not a repository".
                proc::capture(&mut git(&self.current, &["rev-parse", "--git-dir"])?, None)
                    .context("not inside a git repository")?;
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
        Ok(list(&self.current)?.into_iter().map(|w| w.path).collect())
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

/// `git ARGS…` in `cwd`, written as xshell's `cmd!` (argv as written: no shell, no splitting),
/// run by the caller through [`proc`]. Every git this tool runs is built here.
fn git<S: AsRef<OsStr>>(cwd: &Path, args: &[S]) -> Result<Command> {
    let sh = xshell::Shell::new().context("reading the current directory")?;
    sh.change_dir(cwd);
    Ok(xshell::cmd!(sh, "git {args...}").into())
}

/// Whether git accepts `branch` as a branch name (`git check-ref-format --branch`).
pub fn is_branch_name(cwd: &Path, branch: &str) -> Result<bool> {
    Ok(proc::output(&mut git(cwd, &["check-ref-format", "--branch", branch])?, None)?.0.success())
}

/// One worktree, as `git worktree list --porcelain` shows it.
pub struct Listed {
    pub path: PathBuf,
    /// The branch checked out there (`None`: detached, or bare).
    pub branch: Option<String>,
    /// Locked by `git worktree lock`.
    pub locked: bool,
}

/// Every worktree of the repository at `cwd` (main first).
pub fn list(cwd: &Path) -> Result<Vec<Listed>> {
    let out = proc::capture(&mut git(cwd, &["worktree", "list", "--porcelain", "-z"])?, None)
        .context("listing git worktrees")?;
    let mut found: Vec<Listed> = Vec::new();
    for field in out.split('\0') {
        if let Some(p) = field.strip_prefix("worktree ") {
            found.push(Listed { path: PathBuf::from(p), branch: None, locked: false });
        } else if let Some(last) = found.last_mut() {
            if let Some(b) = field.strip_prefix("branch refs/heads/") {
                last.branch = Some(b.to_string());
            } else if field == "locked" || field.starts_with("locked ") {
                last.locked = true;
            }
        }
    }
    Ok(found)
}

/// What `git status` lists as changed or untracked in the worktree `dir` (what
/// `git worktree remove` without `--force` refuses), one line each.
pub fn changes(dir: &Path) -> Result<Vec<String>> {
    let args = ["status", "--porcelain", "--ignore-submodules=none", "--untracked-files=all"];
    let out = proc::capture(&mut git(dir, &args)?, None).context("asking git whether the worktree has changes")?;
    Ok(out.lines().map(|l| l.trim().to_string()).collect())
}

/// `git worktree remove [--force --force] DIR`; `Ok(Err(why))` with git's own reason when git
/// keeps it.
pub fn remove_worktree(cwd: &Path, dir: &Path, force: bool) -> Result<std::result::Result<(), String>> {
    let mut args: Vec<&OsStr> = vec![OsStr::new("worktree"), OsStr::new("remove")];
    if force {
        args.extend([OsStr::new("--force"), OsStr::new("--force")]);
    }
    args.extend([OsStr::new("--end-of-options"), dir.as_os_str()]);
    match proc::output(&mut git(cwd, &args)?, None)? {
        (status, _, _) if status.success() => Ok(Ok(())),
        (_, _, stderr) => Ok(Err(says(&stderr))),
    }
}

/// `git worktree prune`, best effort.
pub fn prune(cwd: &Path) {
    if let Ok(mut cmd) = git(cwd, &["worktree", "prune"]) {
        let _ = proc::output(&mut cmd, None);
    }
}

/// `git branch -D -- BRANCH`, best effort; whether it went.
pub fn delete_branch(cwd: &Path, branch: &str) -> bool {
    git(cwd, &["branch", "-D", "--", branch])
        .and_then(|mut cmd| proc::output(&mut cmd, None))
        .is_ok_and(|(status, _, _)| status.success())
}

/// Whether the local branch `branch` exists (and names a commit).
pub fn has_branch(cwd: &Path, branch: &str) -> Result<bool> {
    let r = format!("refs/heads/{branch}^{{commit}}");
    Ok(proc::output(&mut git(cwd, &["rev-parse", "--verify", "--quiet", "--end-of-options", &r])?, None)?.0.success())
}

/// The remote branches named `branch` (`origin/feature`, …): one per remote that has it.
pub fn remote_branches(cwd: &Path, branch: &str) -> Result<Vec<String>> {
    let out = proc::capture(&mut git(cwd, &["for-each-ref", "--format=%(refname:short)", "refs/remotes/*/"])?, None)?;
    let pattern = format!("/{branch}");
    Ok(out
        .lines()
        .filter(|r| r.ends_with(&pattern) && r.len() > pattern.len() && !r[..r.len() - pattern.len()].contains('/'))
        .map(str::to_string)
        .collect())
}

/// The branch checked out at `cwd` as `git rev-parse --abbrev-ref HEAD` says it (`HEAD` when
/// detached), or empty when git cannot say.
pub fn head_name(cwd: &Path) -> String {
    git(cwd, &["rev-parse", "--abbrev-ref", "HEAD"])
        .and_then(|mut cmd| proc::capture(&mut cmd, None))
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Which branch a new worktree checks out.
pub enum Checkout<'a> {
    /// The existing local branch.
    Local,
    /// A new local branch tracking this remote branch.
    Track(&'a str),
    /// A new branch at HEAD.
    NewFromHead,
    /// No branch: HEAD's commit, detached.
    DetachedHead,
}

/// `git worktree add --quiet` of `branch` at `dir`; `Ok(Err((status, why)))` with git's exit
/// status and reason when it refuses.
pub fn add_worktree(
    cwd: &Path,
    dir: &Path,
    branch: &str,
    how: Checkout,
) -> Result<std::result::Result<(), (String, String)>> {
    let d = dir.as_os_str();
    let mut args: Vec<&OsStr> = vec![OsStr::new("worktree"), OsStr::new("add"), OsStr::new("--quiet")];
    match how {
        Checkout::Local => args.extend([OsStr::new("--end-of-options"), d, OsStr::new(branch)]),
        Checkout::Track(remote) => args.extend([
            OsStr::new("--track"),
            OsStr::new("-b"),
            OsStr::new(branch),
            OsStr::new("--end-of-options"),
            d,
            OsStr::new(remote),
        ]),
        Checkout::NewFromHead => {
            args.extend([OsStr::new("-b"), OsStr::new(branch), OsStr::new("--end-of-options"), d, OsStr::new("HEAD")])
        }
        Checkout::DetachedHead => {
            args.extend([OsStr::new("--detach"), OsStr::new("--end-of-options"), d, OsStr::new("HEAD")])
        }
    }
    match proc::output(&mut git(cwd, &args)?, None)? {
        (status, _, _) if status.success() => Ok(Ok(())),
        (status, _, stderr) => Ok(Err((proc::describe(status), says(&stderr)))),
    }
}

/// `git check-ignore -q --no-index -- PATH` in `cwd`: `Ok(Ok(ignored))`, or `Ok(Err(stderr))`
/// with what git said when it cannot tell (not a repository…).
pub fn is_ignored(cwd: &Path, path: &Path) -> Result<std::result::Result<bool, String>> {
    let args =
        [OsStr::new("check-ignore"), OsStr::new("-q"), OsStr::new("--no-index"), OsStr::new("--"), path.as_os_str()];
    let (status, _, stderr) = proc::output(&mut git(cwd, &args)?, None)?;
    Ok(match status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(String::from_utf8_lossy(&stderr).trim().to_string()),
    })
}

/// What git said last on stderr (its one-line reason).
fn says(stderr: &[u8]) -> String {
    crate::error::telling_line(&String::from_utf8_lossy(stderr)).to_string()
}
