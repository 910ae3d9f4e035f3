//! `cargo xtask db <verb>`: one module per verb, each a leaf (its flags → a plan → operations →
//! what it prints); this file only dispatches. What the verbs share is [`ops`] (the operations,
//! with [`Ctx`]), [`crate::term`] (`step`, `confirm`), [`crate::pg`] (building databases).

mod aws;
pub mod clone_prod;
mod fresh;
mod generate;
mod load_clone;
mod mask;
mod migrate;
mod ops;
mod reach;
pub mod rehearse;
mod schema_diff;
mod status;
mod template;
mod up;
mod worktree;
mod worktrees;

use anyhow::Result;

pub use ops::{url_for_env_file, Ctx, UrlSource};

use crate::flags::{Db, DbVerb, TemplateVerb};

pub fn run(db: Db) -> Result<()> {
    let ctx = Ctx::load(&db.config.overrides())?;
    match db.verb {
        DbVerb::Up(up) => up::up(&ctx, up),
        DbVerb::Down => up::down(&ctx),
        DbVerb::Status(s) => status::run(&ctx, s),
        DbVerb::Url(u) => reach::url(&ctx, u),
        DbVerb::Psql(p) => reach::psql(&ctx, p),
        DbVerb::Migrate => migrate::run(&ctx),
        DbVerb::Template(TemplateVerb::Create(t)) => template::create(&ctx, t),
        DbVerb::Worktree(w) => match w.branch.clone() {
            Some(branch) => worktree::open(&ctx, &branch, w),
            None => worktree::run(&ctx, w),
        },
        DbVerb::Worktrees(w) => worktrees::run(&ctx, w),
        DbVerb::RefillSpare => ops::branch::refill_spare(&ctx),
        DbVerb::SeedBuildCache { from, to, profiles } => crate::build_cache::seed_into(&from, &to, &profiles),
        DbVerb::CloneProd(c) => clone_prod::run(&ctx, &c),
        DbVerb::ListClones(l) => clone_prod::list(&ctx, &l),
        DbVerb::LoadClone(l) => load_clone::load(&ctx, l),
        DbVerb::DropClone(d) => load_clone::drop(&ctx, d),
        DbVerb::Rehearse(r) => rehearse::run(&ctx, r),
        DbVerb::Mask(m) => mask::check(&ctx, m),
        DbVerb::Fresh(f) => fresh::run(&ctx, f),
        DbVerb::SchemaDiff(d) => schema_diff::run(&ctx, d),
        DbVerb::Generate(g) => generate::run(&ctx, g.check),
    }
}
