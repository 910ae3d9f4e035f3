//! The operations the verbs are made of: plain-argument functions over [`Ctx`] (what every verb
//! starts from: configuration, worktrees, `DATABASE_URL`). Nothing here reads the command line
//! (`crate::flags`) or calls a verb: each verb in `db/` parses its flags into a plan, calls these,
//! and prints.

pub mod branch;
pub mod compare;
pub mod ctx;
pub mod fresh;
pub mod generate;
pub mod load;
pub mod mask;
pub mod migrations;
pub mod owner;
pub mod worktree;

pub use ctx::{url_for_env_file, Ctx, UrlSource};
