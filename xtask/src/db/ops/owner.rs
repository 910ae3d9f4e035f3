//! Which repository and worktree a per-branch database belongs to.
//!
//! A branch database's marker records the repository (its main worktree's path), the worktree's
//! path and its git id (the name of its directory under `.git/worktrees/`, which `git worktree
//! move` keeps). Nothing acts on a database that belongs to another clone of the repository or
//! to another live worktree: `db worktree` gives this worktree another name instead, `--drop`
//! and `--prune` leave it alone. A database whose worktree is gone (neither its path nor its id
//! is a live worktree) is an orphan: `--prune` may drop it, and a new worktree of the same
//! branch adopts it.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::Ctx;
use crate::env_file::EnvFile;
use crate::pg::marker::Branch;
use crate::pg::{DatabaseInfo, PgUrl, Server};

/// How a database relates to this worktree.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// Made for this worktree (perhaps before it was moved).
    Ours,
    /// Made for a worktree of this repository that no longer exists.
    Orphan(String),
    /// Not ours to touch; says whose it is.
    Foreign(String),
}

/// The worktree record of a branch database (empty for any other).
fn record(info: &DatabaseInfo) -> Branch {
    info.branch().cloned().unwrap_or_default()
}

/// The live worktrees of this repository, and the databases their `.env` files name.
pub struct Live {
    paths: Vec<PathBuf>,
    ids: Vec<String>,
    env_dbs: Vec<String>,
}

impl Live {
    pub fn of(ctx: &Ctx) -> Result<Live> {
        let paths: Vec<PathBuf> = ctx.worktrees.paths()?.into_iter().filter(|p| p.is_dir()).collect();
        // Every assignment counts (a .env may, wrongly, have several): a database any of them
        // names is in use.
        let env_dbs = paths
            .iter()
            .filter_map(|p| EnvFile::load(&p.join(".env")).ok())
            .flat_map(|env| {
                env.entries()
                    .filter(|(k, _)| *k == "DATABASE_URL")
                    .filter_map(|(_, v)| PgUrl::parse(v).ok()?.dbname().map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .collect();
        Ok(Live { paths, ids: ctx.worktrees.live_ids(), env_dbs })
    }

    /// The database's worktree still exists: by path, by git id (moved), or a live worktree's
    /// `.env` names it.
    pub fn owns(&self, info: &DatabaseInfo) -> bool {
        let b = record(info);
        self.paths.iter().any(|p| same_path(p, &b.worktree))
            || b.worktree_id.is_some_and(|id| !id.is_empty() && self.ids.contains(&id))
            || self.env_dbs.contains(&info.name)
    }
}

/// Whether `info` belongs to this repository at all (its marker names our main worktree).
pub fn same_repo(ctx: &Ctx, info: &DatabaseInfo) -> bool {
    same_path(&record(info).repo, &ctx.worktrees.main)
}

pub fn claim(ctx: &Ctx, live: &Live, info: &DatabaseInfo) -> Claim {
    let Some(b) = info.branch() else {
        return Claim::Foreign("was not created by `cargo xtask db worktree`".into());
    };
    if !same_repo(ctx, info) {
        return Claim::Foreign(format!("belongs to another clone of the repository ({})", b.repo.display()));
    }
    let same_id = b.worktree_id.as_ref().is_some_and(|id| !id.is_empty() && Some(id) == ctx.worktrees.id().as_ref());
    if same_path(&b.worktree, &ctx.worktrees.current) || same_id {
        return Claim::Ours;
    }
    if live.owns(info) {
        return Claim::Foreign(format!("belongs to the worktree {}", b.worktree.display()));
    }
    Claim::Orphan(format!("its worktree {} is gone", b.worktree.display()))
}

/// The names this worktree's database may have, in order: the plain one derived from the label,
/// then one qualified by this repository and worktree (when the plain one is someone else's).
pub fn candidates(ctx: &Ctx, label: &str) -> Vec<String> {
    let reserved = crate::naming::Reserved {
        prefix: &ctx.config.prefix,
        names: &[&ctx.config.template, &ctx.config.fresh_db(), &ctx.config.prod_clone_db(), &ctx.config.rehearsal_db()],
    };
    let owner = format!(
        "{}\n{}",
        ctx.worktrees.main.display(),
        ctx.worktrees.id().unwrap_or_else(|| ctx.worktrees.current.display().to_string())
    );
    let qualified = format!("{label}@{}", crate::naming::short_hash(&format!("{label}\n{owner}")));
    vec![crate::naming::branch_database(label, &reserved), crate::naming::branch_database(&qualified, &reserved)]
}

/// This worktree's database: which name, whether it exists, and what was skipped on the way.
pub struct Resolved {
    pub db: String,
    pub existing: Option<DatabaseInfo>,
    pub claim: Option<Claim>,
    /// Why an earlier candidate was passed over.
    pub notes: Vec<String>,
}

/// Picks this worktree's database: a candidate that is ours if one exists; else the first that
/// is free or an orphan of this repository. Errs only when every candidate is someone else's.
pub fn resolve(ctx: &Ctx, server: &Server, label: &str) -> Result<Resolved> {
    let live = Live::of(ctx)?;
    let names = candidates(ctx, label);
    let mut found = Vec::new();
    for name in &names {
        let info = server.database(name)?;
        let claim = info.as_ref().map(|i| claim(ctx, &live, i));
        if claim == Some(Claim::Ours) {
            return Ok(Resolved { db: name.clone(), existing: info, claim, notes: Vec::new() });
        }
        found.push((name.clone(), info, claim));
    }
    let mut notes = Vec::new();
    for (name, info, claim) in found {
        match claim {
            None | Some(Claim::Orphan(_)) => return Ok(Resolved { db: name, existing: info, claim, notes }),
            Some(Claim::Foreign(why)) => notes.push(format!("`{name}` {why}")),
            Some(Claim::Ours) => unreachable!("returned above"),
        }
    }
    Err(crate::error::fail(
        format!("no database name is free for this worktree: {}", notes.join("; ")),
        "pass --name NAME to choose another name",
    ))
}

/// Paths compare equal after resolving symlinks where possible.
pub fn same_path(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}
